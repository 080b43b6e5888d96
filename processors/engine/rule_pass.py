"""The plain pass's rule state compiled over a whole batch: every station's windows, gaps and rate bins in one call.

`processors.plain_pass` lays the batch's stations out in flat arrays (see `run`) and writes back what
this gives for the stations it finds plain. Each function here is its scalar counterpart, operation
for operation (numba compiles without fast-math, so sums add in the same order and give the same
bits): `_in_order` is `processors.detection._in_order`'s order and gap test, `_count` is
`processors.windows.add` over a parameter's run of readings with `windows.complete` judged at each
one, `_rate_quiet` is `processors.detection._rate` (`processors.rate_span`), `_close` is
`processors.windows.due` at the batch's watermark. A station is plain when none of them could build a
condition; `tests/test_plain_pass.py` checks the whole against the scalar pass.

Windows come in as a flat list of buckets, those of series `s` and basis `b` at `woff[3 s + b]` to
`woff[3 s + b + 1]`, each an integer row `[start, valid, total, dirty, expected]` and a float row
`[sum, end]`; rate bins likewise at `roff[s]` to `roff[s + 1]`, `[index, count]` and `[sum_t, sum_value]`.
Out, each series and basis has room for its buckets in plus one per reading of the series.
"""

from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np

from processors import rate_span
from processors.windows import FIXED_WIDTH_S, JUDGE, LAST_SLOT

BASIS_COUNT = 3
"""5 min, 1 h, the local day (`processors.windows.BASES`, in that order)."""
_WIDTH_5M = float(FIXED_WIDTH_S["5m"])
_WIDTH_1H = float(FIXED_WIDTH_S["1h"])
_KEEP = rate_span.KEEP_BINS
_HEAD = rate_span.HEAD_MIN_AGE_BINS
_TAIL = rate_span.TAIL_MAX_AGE_BINS
_BINS = float(rate_span.BINS_PER_SPAN)
RATE_BOUND_SHARE = 0.9
"""A rate bound under this share of the clear threshold proves every rate of the batch quiet without computing the
levels (see `_rate_quiet`). The bound is strict in exact arithmetic; the margin is for the rounding of bin times and
means, which is below a microsecond on a 5-bin gap of seconds to minutes."""
START, VALID, TOTAL, DIRTY, EXPECTED = range(5)
SUM, END = range(2)


def run_batch(*arguments: Any) -> None:
    """`run` with its arguments in the one form it is compiled for before the worker's first batch
    (`processors.engine.warm`): arrays C-ordered, the two settings floats. Given another layout or type (a
    column-stacked array is Fortran-ordered; settings give whole seconds as int), numba compiles a new version inside
    the batch, holding the worker's event loop 10-30 s. The warm-up and the plain pass both call `run` through here."""
    canonical: list[Any] = [np.ascontiguousarray(a) if isinstance(a, np.ndarray) else float(a) for a in arguments]
    run(*canonical)


@numba.njit(cache=True)
def run(stations: np.ndarray, station_f: np.ndarray, lateness: float, coverage: float,
        sr: np.ndarray, t: np.ndarray, value: np.ndarray, good: np.ndarray, day: np.ndarray,
        perm: np.ndarray, poff: np.ndarray, series_f: np.ndarray, series_i: np.ndarray,
        woff: np.ndarray, wi: np.ndarray, wf: np.ndarray, roff: np.ndarray, ri: np.ndarray, rf: np.ndarray,
        wooff: np.ndarray, wocount: np.ndarray, woi: np.ndarray, wof: np.ndarray,
        rooff: np.ndarray, rocount: np.ndarray, roi: np.ndarray, rof: np.ndarray,
        plain: np.ndarray, newest_out: np.ndarray, last_out: np.ndarray) -> None:
    """Each station's plain verdict (`plain`), and where plain its newest time, its series' last times, buckets and
    rate bins after the batch.

    Per station (`stations`, int rows): its readings `[0]` to `[1]` and series rows `[2]` to `[3]`;
    `station_f`: newest time before the batch (NaN: none), gap and reporting interval in seconds.
    Per reading in the station's arrival order: series row `sr` (-1: a parameter the station does not
    have), epoch `t`, value to learn from `value`, `good` (measuring, valid, within range, not hot) and
    its local day `day` ([start, end)). Per series, its readings `perm[poff[s]:poff[s + 1]]` in arrival
    order, `series_f` (last time, quiet low and high, rate span, clear bound) and `series_i` (blocked:
    an open run or key or no quiet interval; has a quiet interval; judges a rate)."""
    for k in range(stations.shape[0]):
        ok, newest = _readings_ok(stations[k, 0], stations[k, 1], station_f[k, 0], lateness, sr, t, good, series_i)
        newest_out[k] = newest
        if not ok:
            plain[k] = False
            continue
        read = False
        for s in range(stations[k, 2], stations[k, 3]):
            _copy_windows(s, woff, wi, wf, wooff, wocount, woi, wof)
            _copy_bins(s, roff, ri, rf, rooff, rocount, roi, rof)
            last_out[s] = series_f[s, 0]
            if poff[s + 1] == poff[s]:
                continue
            read = True
            rows = perm[poff[s]:poff[s + 1]]
            if not _in_order(rows, t, series_f[s, 0], station_f[k, 1], last_out, s):
                ok = False
                break
            if not _count(s, rows, t, value, day, station_f[k, 2], coverage, series_f, wooff, wocount, woi, wof):
                ok = False
                break
            if series_i[s, 2] and not _rate_quiet(s, rows, t, value, series_f, rooff, rocount, roi, rof):
                ok = False
                break
        if ok and read and not math.isnan(newest):
            ok = _close(stations[k, 2], stations[k, 3], newest - lateness, coverage, series_f,
                        series_i, wooff, wocount, woi, wof)
        plain[k] = ok


@numba.njit(cache=True, inline="always")
def _readings_ok(a: int, b: int, newest: float, lateness: float, sr: np.ndarray, t: np.ndarray, good: np.ndarray,
                 series_i: np.ndarray) -> tuple[bool, float]:
    """Whether every reading of the station is good, on time and of a series that is not blocked; its newest time."""
    for r in range(a, b):
        s = sr[r]
        if s < 0:
            continue
        if not good[r] or series_i[s, 0]:
            return False, newest
        if not math.isnan(newest) and t[r] < newest - lateness:
            return False, newest
        if math.isnan(newest) or t[r] > newest:
            newest = t[r]
    return True, newest


@numba.njit(cache=True, inline="always")
def _copy_windows(s: int, woff: np.ndarray, wi: np.ndarray, wf: np.ndarray, wooff: np.ndarray, wocount: np.ndarray,
                  woi: np.ndarray, wof: np.ndarray) -> None:
    for b in range(BASIS_COUNT):
        c = BASIS_COUNT * s + b
        n = woff[c + 1] - woff[c]
        woi[wooff[c]:wooff[c] + n] = wi[woff[c]:woff[c + 1]]
        wof[wooff[c]:wooff[c] + n] = wf[woff[c]:woff[c + 1]]
        wocount[c] = n


@numba.njit(cache=True, inline="always")
def _copy_bins(s: int, roff: np.ndarray, ri: np.ndarray, rf: np.ndarray, rooff: np.ndarray, rocount: np.ndarray,
               roi: np.ndarray, rof: np.ndarray) -> None:
    n = roff[s + 1] - roff[s]
    roi[rooff[s]:rooff[s] + n] = ri[roff[s]:roff[s + 1]]
    rof[rooff[s]:rooff[s] + n] = rf[roff[s]:roff[s + 1]]
    rocount[s] = n


@numba.njit(cache=True, inline="always")
def _in_order(rows: np.ndarray, t: np.ndarray, last: float, gap: float, last_out: np.ndarray, s: int) -> bool:
    """Each reading newer than the one before and no gap between them; the series' last time moves to its newest."""
    for r in rows:
        if not math.isnan(last) and (t[r] <= last or t[r] - last > gap):
            return False
        last = t[r]
    last_out[s] = last
    return True


@numba.njit(cache=True, inline="always")
def _bounds(b: int, t: float, day: np.ndarray, r: int) -> tuple[float, float]:
    """`processors.windows.bucket_bounds` of basis `b`."""
    if b == 0:
        start = t // _WIDTH_5M * _WIDTH_5M
        return start, start + _WIDTH_5M
    if b == 1:
        start = t // _WIDTH_1H * _WIDTH_1H
        return start, start + _WIDTH_1H
    return day[r, 0], day[r, 1]


@numba.njit(cache=True, inline="always")
def _slot(c: int, key: int, start: float, end: float, interval: float, wooff: np.ndarray, wocount: np.ndarray,
          woi: np.ndarray, wof: np.ndarray) -> int:
    """The bucket `key` of series-basis `c`, made empty (`processors.windows.new_bucket`) if it is not there."""
    first = wooff[c]
    for q in range(first, first + wocount[c]):
        if woi[q, START] == key:
            return q
    q = first + wocount[c]
    wocount[c] += 1
    woi[q, START], woi[q, VALID], woi[q, TOTAL], woi[q, DIRTY] = key, 0, 0, 0
    woi[q, EXPECTED] = max(1, int((end - start) // interval))
    wof[q, SUM], wof[q, END] = 0.0, end
    return q


@numba.njit(cache=True, inline="always")
def gives_mean(expected: int, valid: int, sum_: float, coverage: float, low: float, high: float) -> bool:
    """Whether judging a bucket gives a mean outside [low, high] (`processors.windows.counted_mean`)."""
    if expected > 1 and valid > 0 and valid >= math.ceil(coverage * expected):
        mean = sum_ / valid
        return not low <= mean <= high
    return False


@numba.njit(cache=True, inline="always")
def _first_judged(rows: np.ndarray, t: np.ndarray, i: int, j: int, total: int, expected: int, reached: bool,
                  last_slot: float) -> int:
    """The first of the run's readings `i` to `j - 1` at which the bucket is complete with a mean to judge, else `j`."""
    if expected <= 1 or (t[rows[j - 1]] < last_slot and not reached):
        return j
    k = i + max(expected - total - 1, 0)
    if k >= j:
        return j
    if not reached:
        while t[rows[k]] < last_slot:
            k += 1
    return k


@numba.njit(cache=True, inline="always")
def _count(s: int, rows: np.ndarray, t: np.ndarray, value: np.ndarray, day: np.ndarray, interval: float,
           coverage: float, series_f: np.ndarray, wooff: np.ndarray, wocount: np.ndarray, woi: np.ndarray,
           wof: np.ndarray) -> bool:
    """Count the series' readings in their buckets of every basis, a run of one bucket at a time; False if a mean a
    reading completes could build a condition."""
    n = rows.shape[0]
    for b in range(BASIS_COUNT):
        c = BASIS_COUNT * s + b
        i = 0
        while i < n:
            start, end = _bounds(b, t[rows[i]], day, rows[i])
            j = i + 1
            while j < n and t[rows[j]] < end:
                j += 1
            q = _slot(c, int(start), start, end, interval, wooff, wocount, woi, wof)
            if not _count_run(q, rows, t, value, i, j, end, interval, coverage, series_f[s, 1], series_f[s, 2],
                              woi, wof):
                return False
            i = j
    return True


@numba.njit(cache=True, inline="always")
def _count_run(q: int, rows: np.ndarray, t: np.ndarray, value: np.ndarray, i: int, j: int, end: float,
               interval: float, coverage: float, low: float, high: float, woi: np.ndarray, wof: np.ndarray) -> bool:
    """Readings `i` to `j - 1` into bucket `q`: summed in order up to the first at which the bucket is complete, then
    each judged as it comes (`processors.windows.complete`)."""
    total, valid, expected = woi[q, TOTAL], woi[q, VALID], woi[q, EXPECTED]
    sum_ = wof[q, SUM]
    reached = bool(woi[q, DIRTY] & LAST_SLOT)
    last_slot = end - 1.5 * interval
    judged = _first_judged(rows, t, i, j, total, expected, reached, last_slot)
    for k in range(i, judged):
        sum_ += value[rows[k]]
    valid, total = valid + judged - i, total + judged - i
    for k in range(judged, j):
        sum_ += value[rows[k]]
        valid += 1
        total += 1
        if gives_mean(expected, valid, sum_, coverage, low, high):
            return False
    reached = reached or t[rows[j - 1]] >= last_slot
    dirty = LAST_SLOT if reached else 0
    if not (total >= expected and dirty & LAST_SLOT):
        dirty |= JUDGE
    wof[q, SUM], woi[q, VALID], woi[q, TOTAL], woi[q, DIRTY] = sum_, valid, total, dirty
    return True


@numba.njit(cache=True, inline="always")
def _rate_quiet(s: int, rows: np.ndarray, t: np.ndarray, value: np.ndarray, series_f: np.ndarray,
                rooff: np.ndarray, rocount: np.ndarray, roi: np.ndarray, rof: np.ndarray) -> bool:
    """Whether no reading gives a rate of change `judge_rate` must see; the bins take the readings either way.

    The levels are medians of bin means, and every bin mean (its readings' mean) lies between the least and the
    greatest of the kept bins' means and the batch's values; the levels are more than 5 bins apart in time
    (`rate_span`: the level *then* is of bins at least 9 bins old, *now* at most 3). Under that bound's share,
    every rate is quiet; otherwise the levels are computed reading by reading, as the scalar pass does."""
    width = series_f[s, 3] / _BINS
    first, n0 = rooff[s], rocount[s]
    low, high = math.inf, -math.inf
    for q in range(first, first + n0):
        mean = rof[q, 1] / roi[q, 1]
        low, high = min(low, mean), max(high, mean)
    for r in rows:
        low, high = min(low, value[r]), max(high, value[r])
    spread = high - low if n0 + rows.shape[0] > 1 else 0.0
    if spread * 60.0 / (5 * width) < RATE_BOUND_SHARE * series_f[s, 4]:
        _binned(s, rows, t, value, width, rooff, rocount, roi, rof)
        return True
    for r in rows:
        _add_bin(s, t[r], value[r], width, rooff, rocount, roi, rof)
        if not _level_rate_quiet(first, rocount[s], roi, rof, series_f[s, 4]):
            return False
    return True


@numba.njit(cache=True, inline="always")
def _drop_before(s: int, oldest: int, rooff: np.ndarray, rocount: np.ndarray, roi: np.ndarray, rof: np.ndarray) -> None:
    """Keep only the bins from index `oldest` on."""
    first, n = rooff[s], rocount[s]
    kept = 0
    for q in range(first, first + n):
        if roi[q, 0] >= oldest:
            roi[first + kept] = roi[q]
            rof[first + kept] = rof[q]
            kept += 1
    rocount[s] = kept


@numba.njit(cache=True, inline="always")
def _binned(s: int, rows: np.ndarray, t: np.ndarray, value: np.ndarray, width: float, rooff: np.ndarray,
            rocount: np.ndarray, roi: np.ndarray, rof: np.ndarray) -> None:
    """`processors.rate_span.add` of each reading in turn: only the bins the last reading keeps, each run of readings
    of one bin summed in order."""
    n = rows.shape[0]
    oldest = int(t[rows[n - 1]] // width) - _KEEP
    i = n
    while i > 0 and int(t[rows[i - 1]] // width) >= oldest:
        i -= 1
    _drop_before(s, oldest, rooff, rocount, roi, rof)
    first = rooff[s]
    while i < n:
        index = int(t[rows[i]] // width)
        last = first + rocount[s] - 1
        if rocount[s] > 0 and roi[last, 0] == index:
            count, sum_t, sum_v = roi[last, 1], rof[last, 0], rof[last, 1]
            rocount[s] -= 1
        else:
            count, sum_t, sum_v = 1, t[rows[i]], value[rows[i]]
            i += 1
        while i < n and int(t[rows[i]] // width) == index:
            count, sum_t, sum_v = count + 1, sum_t + t[rows[i]], sum_v + value[rows[i]]
            i += 1
        q = first + rocount[s]
        roi[q, 0], roi[q, 1], rof[q, 0], rof[q, 1] = index, count, sum_t, sum_v
        rocount[s] += 1


@numba.njit(cache=True, inline="always")
def _add_bin(s: int, t: float, value: float, width: float, rooff: np.ndarray, rocount: np.ndarray, roi: np.ndarray,
             rof: np.ndarray) -> None:
    """`processors.rate_span.add`."""
    index = int(t // width)
    first = rooff[s]
    if rocount[s] > 0 and roi[first, 0] < index - _KEEP:
        _drop_before(s, index - _KEEP, rooff, rocount, roi, rof)
    last = first + rocount[s] - 1
    if rocount[s] > 0 and roi[last, 0] == index:
        roi[last, 1] += 1
        rof[last, 0] += t
        rof[last, 1] += value
    else:
        q = first + rocount[s]
        roi[q, 0], roi[q, 1], rof[q, 0], rof[q, 1] = index, 1, t, value
        rocount[s] += 1


@numba.njit(cache=True, inline="always")
def _level_rate_quiet(first: int, n: int, roi: np.ndarray, rof: np.ndarray, clear_below: float) -> bool:
    """Whether the rate between the levels (`processors.rate_span.levels`) is under `clear_below`, or there are none."""
    if n == 0:
        return True
    newest = roi[first + n - 1, 0]
    if roi[first, 0] > newest - _HEAD:
        return True
    from_t, from_level = _level(first, n, roi, rof, -1, newest - _HEAD)
    to_t, to_level = _level(first, n, roi, rof, newest - _TAIL, newest)
    rate = abs(to_level - from_level) / ((to_t - from_t) / 60.0)
    return rate < clear_below


@numba.njit(cache=True, inline="always")
def _level(first: int, n: int, roi: np.ndarray, rof: np.ndarray, low: int, high: int) -> tuple[float, float]:
    """Mean time and median value of the bin means with an index in [low, high] (low -1: from the first)."""
    means = np.empty(n)
    m = 0
    sum_t = 0.0
    for q in range(first, first + n):
        if (low < 0 or roi[q, 0] >= low) and roi[q, 0] <= high:
            sum_t += rof[q, 0] / roi[q, 1]
            means[m] = rof[q, 1] / roi[q, 1]
            m += 1
    ordered = np.sort(means[:m])
    half = m // 2
    level = ordered[half] if m % 2 else (ordered[half - 1] + ordered[half]) / 2
    return sum_t / m, level


@numba.njit(cache=True, inline="always")
def _close(sa: int, sb: int, watermark: float, coverage: float, series_f: np.ndarray, series_i: np.ndarray,
           wooff: np.ndarray, wocount: np.ndarray, woi: np.ndarray, wof: np.ndarray) -> bool:
    """The buckets the watermark passed dropped (`processors.windows.due`); False if one of them, or a complete one,
    still had a mean to judge that could build a condition."""
    for s in range(sa, sb):
        for b in range(BASIS_COUNT):
            c = BASIS_COUNT * s + b
            first, kept = wooff[c], 0
            for q in range(first, first + wocount[c]):
                passed = wof[q, END] <= watermark
                complete = woi[q, TOTAL] >= woi[q, EXPECTED] and woi[q, DIRTY] & LAST_SLOT
                if woi[q, DIRTY] & JUDGE and (passed or complete):
                    if not passed or not series_i[s, 1] or gives_mean(woi[q, EXPECTED], woi[q, VALID], wof[q, SUM],
                                                                      coverage, series_f[s, 1], series_f[s, 2]):
                        return False
                if not passed:
                    woi[first + kept] = woi[q]
                    wof[first + kept] = wof[q]
                    kept += 1
            wocount[c] = kept
    return True
