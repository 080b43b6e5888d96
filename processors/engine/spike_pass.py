"""`RobustSpike.update` compiled over a batch: each value in arrival order on its row's arrays (`SpikeBank.run_batch`).

Each row's window is kept twice: as the scalar class's ring (its state, in arrival order) and sorted
(`SpikeBank.ordered`, not saved: rebuilt from the ring when a row is loaded), so a median is read off the
middle and a MAD found by walking out from it, instead of sorting the window at every value. The
known levels (`KnownLevels`), the tail histogram (`TailQuantile`) and the step (`StepEstimate`) are
the scalar classes' arithmetic, operation for operation.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from processors.detectors.levels import MAD_TO_SIGMA
from processors.detectors.tail import BINS, BINS_PER_OCTAVE, FEWEST, LN2_PER_BIN, LOWEST, TRIMMED
from processors.engine.kernels import step_floor, step_update

NONE = -1
"""An integer hyperparameter that is None (`relearn_after`, `center_window`, `reseed_after`)."""
NOT_FINITE, WARMING, FIRST, JUDGED = -2, -1, 0, 1
"""How `RobustSpike.update` took a value (`SpikeRun.kind`)."""


@numba.njit(cache=True, inline="always")
def _middle(ordered: np.ndarray, size: int) -> float:
    """The median of the first `size` values of `ordered` (sorted), as `processors.detectors.base.median` gives it."""
    half = size // 2
    if size % 2:
        return ordered[half]
    return (ordered[half - 1] + ordered[half]) / 2.0


@numba.njit(cache=True, inline="always")
def _mad_sorted(ordered: np.ndarray, r: int, size: int, center: float) -> float:
    """The median of the distances of a sorted window from `center`: the two sides merged outward from it."""
    hi = np.searchsorted(ordered[r, :size], center)
    lo = hi - 1
    want = size // 2
    last = prev = 0.0
    for _ in range(want + 1):
        below = abs(ordered[r, lo] - center) if lo >= 0 else np.inf
        above = abs(ordered[r, hi] - center) if hi < size else np.inf
        prev = last
        if below <= above:
            last = below
            lo -= 1
        else:
            last = above
            hi += 1
    return last if size % 2 else (prev + last) / 2.0


@numba.njit(cache=True, inline="always")
def _insert(ordered: np.ndarray, r: int, size: int, x: float) -> None:
    """Put `x` into row `r`'s sorted window of `size` values (room for one more)."""
    j = size
    while j > 0 and ordered[r, j - 1] > x:
        ordered[r, j] = ordered[r, j - 1]
        j -= 1
    ordered[r, j] = x


@numba.njit(cache=True, inline="always")
def _replace(ordered: np.ndarray, r: int, size: int, old: float, x: float) -> None:
    """Row `r`'s sorted window of `size` values with one value equal to `old` replaced by `x`: only the values between
    the two places move."""
    j = np.searchsorted(ordered[r, :size], old)
    if x >= old:
        while j + 1 < size and ordered[r, j + 1] < x:
            ordered[r, j] = ordered[r, j + 1]
            j += 1
    else:
        while j > 0 and ordered[r, j - 1] > x:
            ordered[r, j] = ordered[r, j - 1]
            j -= 1
    ordered[r, j] = x


@numba.njit(cache=True, inline="always")
def append(data: np.ndarray, start: np.ndarray, size: np.ndarray, capacity: np.ndarray, ordered: np.ndarray,
           r: int, x: float) -> None:
    """`RingBuffer.append` on row `r`, its sorted window kept in step."""
    cap = capacity[r]
    if size[r] < cap:
        data[r, (start[r] + size[r]) % cap] = x
        _insert(ordered, r, size[r], x)
        size[r] += 1
    else:
        _replace(ordered, r, size[r], data[r, start[r]], x)
        data[r, start[r]] = x
        start[r] = (start[r] + 1) % cap


@numba.njit(cache=True)
def sort_rows(data: np.ndarray, start: np.ndarray, size: np.ndarray, capacity: np.ndarray, ordered: np.ndarray,
              rows: np.ndarray) -> None:
    """Rebuild the sorted windows of `rows` from their rings (after they were loaded)."""
    for r in rows:
        for j in range(size[r]):
            ordered[r, j] = data[r, (start[r] + j) % capacity[r]]
        ordered[r, : size[r]] = np.sort(ordered[r, : size[r]])


@numba.njit(cache=True, inline="always")
def _recent_median(data: np.ndarray, start: np.ndarray, size: np.ndarray, capacity: np.ndarray, r: int, count: int,
                   work: np.ndarray) -> float:
    """The median of row `r`'s newest `count` values, sorted by insertion into `work` (a few values: no allocation)."""
    for j in range(count):
        x = data[r, (start[r] + size[r] - count + j) % capacity[r]]
        k = j
        while k > 0 and work[k - 1] > x:
            work[k] = work[k - 1]
            k -= 1
        work[k] = x
    return _middle(work, count)


@numba.njit(cache=True, inline="always")
def _compared(data: np.ndarray, start: np.ndarray, size: np.ndarray, capacity: np.ndarray, center_window: np.ndarray,
              r: int, whole: float, work: np.ndarray) -> float:
    """The median a value is compared with: of row `r`'s last `center_window` values when it holds more, else the whole
    window's (`whole`; a `center_window` of 0 is the whole window too)."""
    count = center_window[r]
    if count != NONE and 0 < count < size[r]:
        return _recent_median(data, start, size, capacity, r, count, work)
    return whole


@numba.njit(cache=True, inline="always")
def _tail_bin(score: float) -> int:
    if score < LOWEST:
        return 0
    return min(BINS - 1, 1 + int(math.floor(math.log2(score / LOWEST) * BINS_PER_OCTAVE)))


@numba.njit(cache=True, inline="always")
def _tail_update(counts: np.ndarray, total: np.ndarray, memory: float, r: int, score: float) -> None:
    """`TailQuantile.update` of row `r`."""
    counts[r, _tail_bin(score)] += 1.0
    total[r] += 1.0
    if total[r] >= memory:
        for k in range(BINS):
            counts[r, k] /= 2.0
        total[r] /= 2.0


@numba.njit(cache=True, inline="always")
def _tail_locate(counts: np.ndarray, total: np.ndarray, r: int, p: float) -> tuple[int, float]:
    """`TailQuantile._locate` of row `r`."""
    if total[r] <= 0.0:
        return -1, 0.0
    need = max(p * total[r], FEWEST)
    above = 0.0
    for k in range(BINS - 1, -1, -1):
        below = above
        above += counts[r, k]
        if above >= need - 1e-9:
            return k, min(1.0, (need - below) / counts[r, k])
    return -1, 0.0


@numba.njit(cache=True, inline="always")
def _tail_quantile(counts: np.ndarray, total: np.ndarray, r: int, p: float) -> float:
    k, _ = _tail_locate(counts, total, r, p)
    return 0.0 if k <= 0 else LOWEST * 2.0 ** ((k - 0.5) / BINS_PER_OCTAVE)


@numba.njit(cache=True, inline="always")
def _tail_interpolated(counts: np.ndarray, total: np.ndarray, r: int, p: float) -> float:
    k, share = _tail_locate(counts, total, r, p)
    return 0.0 if k <= 0 else LOWEST * 2.0 ** ((k - share) / BINS_PER_OCTAVE)


@numba.njit(cache=True, inline="always")
def _tail_extrapolated(counts: np.ndarray, total: np.ndarray, r: int, p: float, fit: float) -> float:
    """`TailQuantile.extrapolated` of row `r`."""
    need = max(fit * total[r], 3.0 * FEWEST)
    seen = kept = weighted = dropped = 0.0
    for k in range(BINS - 1, 0, -1):
        seen += counts[r, k]
        trimmed = min(seen, TRIMMED)
        keep = counts[r, k] - (trimmed - dropped)
        dropped = trimmed
        kept += keep
        weighted += keep * (k + 0.5)
        if seen >= need - 1e-9:
            share = seen / total[r]
            if p >= share or kept <= 0.0:
                break
            gamma = (weighted / kept - k) * LN2_PER_BIN
            return LOWEST * 2.0 ** ((k - 1) / BINS_PER_OCTAVE) * (share / p) ** gamma
    return _tail_quantile(counts, total, r, p)


@numba.njit(cache=True, inline="always")
def _distance(x: float, center: float, mad: float, floor: float) -> float:
    """`KnownLevels._distance`."""
    scale = max(MAD_TO_SIGMA * mad, floor)
    if scale > 0.0:
        return abs(x - center) / scale
    return 0.0 if x == center else np.inf


@numba.njit(cache=True, inline="always")
def _level_match(centers: np.ndarray, mads: np.ndarray, count: np.ndarray, r: int, x: float, threshold: float,
                 floor: float) -> int:
    """`KnownLevels.match` of row `r` (-1: None)."""
    best, nearest = -1, np.inf
    for j in range(count[r]):
        d = _distance(x, centers[r, j], mads[r, j], floor)
        if best < 0 or d < nearest:
            best, nearest = j, d
    return best if best >= 0 and nearest <= threshold else -1


@numba.njit(cache=True, inline="always")
def _level_pop(centers: np.ndarray, mads: np.ndarray, count: np.ndarray, r: int, i: int) -> tuple[float, float]:
    center, mad = centers[r, i], mads[r, i]
    for j in range(i, count[r] - 1):
        centers[r, j], mads[r, j] = centers[r, j + 1], mads[r, j + 1]
    count[r] -= 1
    return center, mad


@numba.njit(cache=True, inline="always")
def _level_remember(centers: np.ndarray, mads: np.ndarray, count: np.ndarray, capacity: np.ndarray, r: int,
                    center: float, mad: float, threshold: float, floor: float) -> None:
    """`KnownLevels.remember` of row `r`."""
    if capacity[r] < 1:
        return
    kept = 0
    for j in range(count[r]):
        if not _distance(center, centers[r, j], mads[r, j], floor) <= threshold:
            centers[r, kept], mads[r, kept] = centers[r, j], mads[r, j]
            kept += 1
    for j in range(min(kept, capacity[r] - 1), 0, -1):
        centers[r, j], mads[r, j] = centers[r, j - 1], mads[r, j - 1]
    centers[r, 0], mads[r, 0] = center, mad
    count[r] = min(kept + 1, capacity[r])


@numba.njit(cache=True, inline="always")
def _median_mad(ordered: np.ndarray, size: np.ndarray, r: int) -> tuple[float, float]:
    """`RobustSpike.median_mad` of row `r` (not empty)."""
    center = _middle(ordered[r], size[r])
    return center, _mad_sorted(ordered, r, size[r], center)


@numba.njit(cache=True, inline="always")
def _reset(size: np.ndarray, start: np.ndarray, n: np.ndarray, run: np.ndarray, over: np.ndarray, seeded: np.ndarray,
           r: int) -> None:
    size[r] = start[r] = n[r] = run[r] = 0
    over[r] = seeded[r] = False


@numba.njit(cache=True, inline="always")
def _fill(data: np.ndarray, start: np.ndarray, size: np.ndarray, window: np.ndarray, ordered: np.ndarray,
          grace: np.ndarray, n: np.ndarray, seeded: np.ndarray, r: int, center: float, mad: float) -> None:
    """`RobustSpike._fill` of row `r` (emptied): values whose median and MAD are the level's, counted as warmed up."""
    count = min(window[r], 3 * max(1, -(-grace[r] // 3)))
    for k in range(count):
        append(data, start, size, window, ordered, r, center + (k % 3 - 1) * mad)
    n[r] = count
    seeded[r] = True


@numba.njit(cache=True, inline="always")
def _learn(data: np.ndarray, start: np.ndarray, size: np.ndarray, window: np.ndarray, ordered: np.ndarray,
           step: np.ndarray, step_prev: np.ndarray, n: np.ndarray, r: int, value: float) -> None:
    """`RobustSpike._learn` of row `r`."""
    append(data, start, size, window, ordered, r, value)
    step_update(step, step_prev, r, value)
    n[r] += 1


@numba.njit(cache=True, inline="always")
def _reseed(data: np.ndarray, start: np.ndarray, size: np.ndarray, window: np.ndarray, ordered: np.ndarray,
            grace: np.ndarray, n: np.ndarray, run_: np.ndarray, over: np.ndarray, seeded: np.ndarray, scale: np.ndarray,
            r: int) -> None:
    """`RobustSpike._reseed` of row `r`: the window seeded around the values learned since the gap, with at least the
    scale kept from before it."""
    center, mad = _median_mad(ordered, size, r)
    _reset(size, start, n, run_, over, seeded, r)
    _fill(data, start, size, window, ordered, grace, n, seeded, r, center, max(mad, scale[r]))
    scale[r] = np.nan


@numba.njit(cache=True, inline="always")
def _leave(centers: np.ndarray, mads: np.ndarray, level_count: np.ndarray, levels: np.ndarray, size: np.ndarray,
           window: np.ndarray, r: int, center: float, mad: float, threshold: float, floor: float) -> None:
    """`RobustSpike._leave` of row `r`: the level it leaves remembered, if held for a whole window (`center`, `mad`)."""
    if size[r] == window[r]:
        _level_remember(centers, mads, level_count, levels, r, center, mad, threshold, floor)


@numba.njit(cache=True, inline="always")
def relearn_row(r: int, window: np.ndarray, reseed_after: np.ndarray, size: np.ndarray, start: np.ndarray,
                ordered: np.ndarray, n: np.ndarray, run: np.ndarray, over: np.ndarray, seeded: np.ndarray,
                scale: np.ndarray) -> None:
    """`RobustSpike.relearn` of row `r`: warm up again, keeping a full or seeded window's MAD for a reseed."""
    if reseed_after[r] != NONE and (size[r] == window[r] or seeded[r]):
        scale[r] = _median_mad(ordered, size, r)[1]
    _reset(size, start, n, run, over, seeded, r)


@numba.njit(cache=True, inline="always")
def _bar(score: float, r: int, threshold: np.ndarray, threshold_off: np.ndarray, tail_ref: np.ndarray,
         tail_fit: np.ndarray, tail_p: np.ndarray, tail_power: np.ndarray, tail_blend: np.ndarray, run: np.ndarray,
         counts: np.ndarray, total: np.ndarray) -> float:
    """`RobustSpike._bar` of row `r` where `score` may pass it, else NaN: the bar is `threshold_off` during a run, else
    `threshold` or above it, so a score at or under that passes no bar and the tail (most values) is not read."""
    if run[r] and not math.isnan(threshold_off[r]):
        return threshold_off[r] if score > threshold_off[r] else np.nan
    if math.isnan(tail_ref[r]) or score <= threshold[r]:
        return threshold[r] if score > threshold[r] else np.nan
    if math.isnan(tail_fit[r]):
        q = _tail_quantile(counts, total, r, tail_p[r])
    elif tail_blend[r]:
        q = math.sqrt(_tail_interpolated(counts, total, r, tail_p[r])
                      * _tail_extrapolated(counts, total, r, tail_p[r], tail_fit[r]))
    else:
        q = _tail_extrapolated(counts, total, r, tail_p[r], tail_fit[r])
    return threshold[r] * max(1.0, q / tail_ref[r]) ** tail_power[r]


@numba.njit(cache=True)
def run(rows: np.ndarray, x: np.ndarray, gaps: np.ndarray, p_int: np.ndarray, p_float: np.ndarray,
        tail_blend: np.ndarray, data: np.ndarray, start: np.ndarray, size: np.ndarray, ordered: np.ndarray,
        step: np.ndarray, step_prev: np.ndarray, centers: np.ndarray, mads: np.ndarray, level_count: np.ndarray,
        counts: np.ndarray, total: np.ndarray, memory: float, n: np.ndarray, run_: np.ndarray, over: np.ndarray,
        scale: np.ndarray, seeded: np.ndarray, flag: np.ndarray, score: np.ndarray, kind: np.ndarray,
        count_out: np.ndarray, center_out: np.ndarray, scale_out: np.ndarray, level_out: np.ndarray,
        bar_out: np.ndarray, rebuilt: np.ndarray, run_out: np.ndarray) -> None:
    """`RobustSpike.update` of each value in turn on its row's arrays, after `relearn` where `gaps` is not NaN.

    `p_int` holds the integer hyperparameters by row (window, grace, relearn_after, center_window, reseed_after,
    levels), `p_float` the others (threshold, eps, resolution, threshold_off, tail_p, tail_ref, tail_fit,
    tail_power). Per value: its flag, score, how it was taken (`kind`) and what its detail says."""
    window, grace, relearn_after = p_int[:, 0], p_int[:, 1], p_int[:, 2]
    center_window, reseed_after, levels = p_int[:, 3], p_int[:, 4], p_int[:, 5]
    threshold, eps, resolution, threshold_off = p_float[:, 0], p_float[:, 1], p_float[:, 2], p_float[:, 3]
    tail_p, tail_ref, tail_fit, tail_power = p_float[:, 4], p_float[:, 5], p_float[:, 6], p_float[:, 7]
    work = np.empty(data.shape[1])
    for i in range(rows.size):
        r = rows[i]
        if not math.isnan(gaps[i]):
            relearn_row(r, window, reseed_after, size, start, ordered, n, run_, over, seeded, scale)
        value = x[i]
        if not math.isfinite(value):
            kind[i] = NOT_FINITE
            continue
        if n[r] < grace[r] or size[r] == 0:
            _learn(data, start, size, window, ordered, step, step_prev, n, r, value)
            if not math.isnan(scale[r]) and reseed_after[r] != NONE and n[r] == reseed_after[r]:
                _reseed(data, start, size, window, ordered, grace, n, run_, over, seeded, scale, r)
            kind[i], count_out[i] = WARMING, n[r]
            continue
        whole, mad = _median_mad(ordered, size, r)
        center = _compared(data, start, size, window, center_window, r, whole, work)
        floor = step_floor(step, r, resolution[r])
        center_out[i] = center
        if mad == 0.0 and floor == 0.0 and value != center:
            run_[r] = 0
            over[r] = False
            _learn(data, start, size, window, ordered, step, step_prev, n, r, value)
            kind[i] = FIRST
            continue
        kind[i] = JUDGED
        sigma = max(MAD_TO_SIGMA * mad, floor) + eps[r]
        s = abs(value - center) / sigma
        score[i], scale_out[i] = s, sigma
        beyond = s > threshold[r]
        counted = not tail_blend[r] or (MAD_TO_SIGMA * mad >= floor and not (beyond and over[r]))
        over[r] = beyond
        known = _level_match(centers, mads, level_count, r, value, threshold[r], floor) if beyond else -1
        if known >= 0:
            level, level_mad = _level_pop(centers, mads, level_count, r, known)
            _leave(centers, mads, level_count, levels, size, window, r, whole, mad, threshold[r], floor)
            _reset(size, start, n, run_, over, seeded, r)
            _fill(data, start, size, window, ordered, grace, n, seeded, r, level, level_mad)
            level_out[i] = level
            _learn(data, start, size, window, ordered, step, step_prev, n, r, value)
            continue
        bar_out[i] = _bar(s, r, threshold, threshold_off, tail_ref, tail_fit, tail_p, tail_power, tail_blend, run_,
                          counts, total)
        if s > bar_out[i]:
            flag[i] = True
            run_[r] += 1
            run_out[i] = run_[r]
            if run_[r] == 1 and counted:
                _tail_update(counts, total, memory, r, s)
            if relearn_after[r] != NONE and run_[r] >= relearn_after[r]:
                _leave(centers, mads, level_count, levels, size, window, r, whole, mad, threshold[r], floor)
                _reset(size, start, n, run_, over, seeded, r)
                _learn(data, start, size, window, ordered, step, step_prev, n, r, value)
                rebuilt[i] = True
            continue
        run_[r] = 0
        _learn(data, start, size, window, ordered, step, step_prev, n, r, value)
        if counted:
            _tail_update(counts, total, memory, r, s)
