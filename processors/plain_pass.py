"""A station's batch when nothing in it can raise or clear a rule: its state's windows and rate bins in one tight pass.

`processors.detection._station_pass` takes a station's readings one at a time through a dozen
functions: windows, gap, status runs, rate of change, window means. About 99.9 % of readings give
no condition, and those calls were most of the worker's time. A batch is *plain* for a station when
every reading of it is in order for its parameter, on time (not late), measuring (status 00), valid
and within its instrument's range, not judged by the instantaneous rules (`processors.rule_columns`:
not hot), without a gap since its parameter's last reading, on a parameter with no open fault or
calibration run and no key that may be open for its window means or rate; and when no window mean
it closes and no rate of change it finds can build a condition. Then the station's rule state after
the batch (newest time, per parameter its last time, windows and rate bins) is computed here in one
pass, and `processors.detection` hands the readings to the detectors as before.

`plain_pass` decides and computes without touching the state: on the first reading that is not
plain it gives None, and the station goes through `_station_pass`. The scalar path stays the oracle:
`tests/test_plain_pass.py` checks that both give the same states and conditions.
"""

from __future__ import annotations

import sys
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import reduce
from operator import add
from typing import Any

from alerts.rules import OpenKeys
from processors import rate_span, windows
from processors.detection_state import StationState
from processors.station_rows import StationRows
from quantrac.domain import ParameterSpec

RATE_BOUND_SHARE = 0.9
"""A rate bound under this share of the clear threshold proves every rate of the batch quiet without computing the
levels (see `_rate_quiet`). The bound is strict in exact arithmetic; the margin is for the rounding of bin times and
means, which is below a microsecond on a 5-bin gap of seconds to minutes."""


@dataclass
class PlainParameter:
    """A parameter's rule state after a plain batch."""

    last_t: float | None
    windows: dict[str, Any]
    rate_bins: list[list[Any]]


@dataclass
class PlainBatch:
    """What a plain batch gives a station: its new rule state, and its readings for the detectors."""

    newest_t: float | None
    parameters: dict[str, PlainParameter]
    """Every parameter whose rule state changed (read or closed), in the order the scalar pass first touched it."""
    event_parameters: list[str]
    """Each reading's parameter, in arrival order; then its epoch time, value and time as sent."""
    event_t: list[float]
    event_values: list[float]
    event_ts: list[datetime]
    by_ts: dict[float, dict[str, float]]
    """The values of the multivariate groups' parameters by event time."""


Quiet = Callable[[str, ParameterSpec], "tuple[float, float] | None"]
"""A parameter's interval of window means that need no judging (`processors.rule_columns.MeanGate.quiet`)."""


@dataclass(frozen=True)
class PlainRules:
    """The station's settings the pass needs."""

    station_id: str
    parameters: dict[str, ParameterSpec]
    interval_s: int
    lateness_s: float
    gap_s: float
    min_coverage: float
    rate_span_s: Callable[[ParameterSpec], float]
    rate_clear_below: Callable[[ParameterSpec], float]
    """A rate (per minute) under this is clear with no open key (`processors.detection.RATE_MARGIN`)."""
    quiet: Quiet
    open_keys: OpenKeys
    grouped: frozenset[str] = frozenset()
    """The parameters of the station's multivariate groups (`processors.detection.Plan.grouped`)."""


def _sum_in_order(values: list[float], start: float) -> float:
    """`start` plus each value in turn, as `windows.add` sums a bucket: `sum` does that up to Python 3.11, while 3.12's
    compensates the rounding, which would make the plain pass's sums differ from the scalar pass's in the last bit."""
    return sum(values, start) if _SUM_IN_ORDER else reduce(add, values, start)


_SUM_IN_ORDER = sys.version_info < (3, 12)


class _Series:
    """A parameter's readings of the batch (in order) and its rule state being worked on: the original's buckets are
    copied before they change."""

    __slots__ = ("spec", "last_t", "windows", "rate_bins", "quiet", "span_s", "clear_below", "ts", "times", "values")

    def __init__(self, spec: ParameterSpec, last_t: float | None, saved: dict[str, Any], rate_bins: list[list[Any]],
                 quiet: tuple[float, float], span_s: float | None, clear_below: float) -> None:
        self.spec, self.last_t, self.rate_bins, self.quiet = spec, last_t, rate_bins, quiet
        self.windows = {basis: dict(buckets) for basis, buckets in saved.items()}
        self.span_s, self.clear_below = span_s, clear_below
        self.ts: list[datetime] = []
        self.times: list[float] = []
        self.values: list[float] = []


def plain_pass(state: StationState, rows: StationRows, rules: PlainRules) -> PlainBatch | None:
    """The station's rule state after its `rows` when the batch is plain for it (see the module), else None.

    The readings are taken in arrival order for what needs it (lateness, the detectors' events), then each
    parameter's as a whole: order and gaps, windows run by run of one bucket, rate bins."""
    if rows.columns is None:
        return None
    newest = state.newest_t
    lateness = rules.lateness_s
    series: dict[str, _Series] = {}
    event_parameters: list[str] = []
    event_t: list[float] = []
    event_values: list[float] = []
    event_ts: list[datetime] = []
    by_ts: dict[float, dict[str, float]] = {}
    hot, learn, grouped = rows.columns.hot, rows.columns.learn, rules.grouped
    for i, spec in enumerate(rows.specs):
        if spec is None:
            continue
        value = learn[i]
        if hot[i] or value is None or not rows.measuring[i]:
            return None
        t, parameter = rows.t[i], rows.parameters[i]
        if newest is not None and t < newest - lateness:
            return None
        newest = t if newest is None or t > newest else newest
        s = series.get(parameter)
        if s is None:
            s = series[parameter] = _start(state, parameter, spec, rules)  # type: ignore[assignment]
            if s is None:
                return None
        s.ts.append(rows.ts[i])
        s.times.append(t)
        s.values.append(value)
        event_parameters.append(parameter)
        event_t.append(t)
        event_values.append(value)
        event_ts.append(rows.ts[i])
        if parameter in grouped:
            by_ts.setdefault(t, {})[parameter] = value
    for s in series.values():
        if not (_in_order(s, rules.gap_s) and _count(s, rules.interval_s, rules.min_coverage)
                and (s.span_s is None or _rate_quiet(s))):
            return None
    parameters = _close(state, series, newest, rules)
    if parameters is None:
        return None
    return PlainBatch(newest, parameters, event_parameters, event_t, event_values, event_ts, by_ts)


def _start(state: StationState, parameter: str, spec: ParameterSpec, rules: PlainRules) -> _Series | None:
    """The parameter's state to work on, or None if its batch cannot be plain (an open run or key)."""
    quiet = rules.quiet(parameter, spec)
    if quiet is None:
        return None
    span_s = None
    if spec.max_rate_per_min is not None:
        if (rules.station_id, parameter, "rate_of_change") in rules.open_keys:
            return None
        span_s = rules.rate_span_s(spec)
    ps = state.parameters.get(parameter)
    if ps is None:
        return _Series(spec, None, {}, [], quiet, span_s, rules.rate_clear_below(spec))
    if ps.fault is not None or (ps.calibration is not None and ps.calibration.run_start_t is not None):
        return None
    return _Series(spec, ps.last_t, ps.windows, ps.rate_bins, quiet, span_s, rules.rate_clear_below(spec))


def _in_order(s: _Series, gap_s: float) -> bool:
    """Whether each reading is newer than the one before, and no gap is between them (`processors.detection._in_order`);
    the parameter's last time moves to its newest."""
    last = s.last_t
    for t in s.times:
        if last is not None and (t <= last or t - last > gap_s):
            return False
        last = t
    s.last_t = last
    return True


def _count(s: _Series, interval: int, cov: float) -> bool:
    """Count the valid readings in their buckets of every basis (`processors.windows.add`), a run of readings of one
    bucket at a time; a bucket they complete is judged at each reading from then on (`windows.complete`): False if a
    mean could build a condition."""
    times, values, n = s.times, s.values, len(s.times)
    for basis, bucket in windows.BASES.items():
        buckets = s.windows.get(basis)
        if buckets is None:
            buckets = s.windows[basis] = {}
        i = 0
        while i < n:
            start, end = windows.bucket_bounds(s.ts[i], times[i], bucket)
            j = bisect_left(times, end, i + 1)
            key = str(int(start))
            saved = buckets.get(key)
            entry = windows.new_bucket(start, end, interval) if saved is None else list(saved)
            buckets[key] = entry
            total, sum_, valid, expected = entry[windows.TOTAL], entry[windows.SUM], entry[windows.VALID], entry[windows.EXPECTED]
            reached = bool(entry[windows.DIRTY] & windows.LAST_SLOT)
            last_slot = windows.last_slot_start(end, interval)
            judged = _first_judged(times, i, j, total, expected, reached, last_slot)
            sum_ = _sum_in_order(values[i:judged], sum_)
            valid, total = valid + judged - i, total + judged - i
            for k in range(judged, j):
                sum_ += values[k]
                valid += 1
                total += 1
                if _gives_mean(expected, valid, sum_, cov, s.quiet):
                    return False
            reached = reached or times[j - 1] >= last_slot
            entry[windows.SUM], entry[windows.VALID], entry[windows.TOTAL] = sum_, valid, total
            entry[windows.DIRTY] = windows.LAST_SLOT if reached else 0
            if not windows.is_complete(entry):  # a complete bucket was judged at its readings above
                entry[windows.DIRTY] |= windows.JUDGE
            i = j
    return True


def _first_judged(times: list[float], i: int, j: int, total: int, expected: int, reached: bool, last_slot: float) -> int:
    """The first of the readings `i` to `j - 1` (times increasing, one bucket) at which the bucket is complete and has a
    mean to judge (`windows.is_complete`, `windows.counted_mean`), `j` if none is: a bucket of one reading never is, a
    bucket is complete once it holds `expected` readings and one in its last interval."""
    if expected <= 1 or times[j - 1] < last_slot and not reached:
        return j
    k = i + max(expected - total - 1, 0)
    if k >= j:
        return j
    if not reached:
        while times[k] < last_slot:
            k += 1
    return k


def _gives_mean(expected: int, valid: int, sum_: float, cov: float, quiet: tuple[float, float]) -> bool:
    """Whether judging a bucket now gives a mean outside `quiet` (`processors.windows._judge`)."""
    mean = windows.counted_mean(expected, valid, sum_, cov)
    return mean is not None and not quiet[0] <= mean <= quiet[1]


def _close(state: StationState, series: dict[str, _Series], newest: float | None,
           rules: PlainRules) -> dict[str, PlainParameter] | None:
    """Every parameter's buckets after the watermark's closing (`processors.windows.due`: the passed ones dropped);
    None if one of them still had a mean to judge that could build a condition, or a bucket is complete and was not
    judged. A batch with no reading of a known parameter closes nothing, as in the scalar pass."""
    out = {p: PlainParameter(s.last_t, s.windows, s.rate_bins) for p, s in series.items()}
    if not series or newest is None:
        return out
    watermark = newest - rules.lateness_s
    for parameter in [*state.parameters, *(p for p in series if p not in state.parameters)]:
        s = series.get(parameter)
        ps = state.parameters.get(parameter)
        kept = s.windows if s is not None else ps.windows if ps is not None else {}
        closed: list[tuple[str, str]] = []
        for basis, buckets in kept.items():
            for key, entry in buckets.items():
                passed = entry[windows.END] <= watermark
                if entry[windows.DIRTY] & windows.JUDGE and (passed or windows.is_complete(entry)):
                    spec = rules.parameters.get(parameter)
                    quiet = None if spec is None else rules.quiet(parameter, spec)
                    if not passed or quiet is None or _gives_mean(entry[windows.EXPECTED], entry[windows.VALID],
                                                                  entry[windows.SUM], rules.min_coverage, quiet):
                        return None
                if passed:
                    closed.append((basis, key))
        if closed:
            left = {basis: dict(buckets) for basis, buckets in kept.items()} if s is None else kept
            for basis, key in closed:
                del left[basis][key]
            if s is None and ps is not None:
                out[parameter] = PlainParameter(ps.last_t, left, ps.rate_bins)
    return out


def _rate_quiet(s: _Series) -> bool:
    """Whether no reading of the batch gives a rate of change that `judge_rate` must see (`processors.detection._rate`);
    the parameter's rate bins take the batch's readings.

    The levels are medians of bin means, and every bin mean (its readings' mean) lies between the least and the
    greatest of the kept bins' means and the batch's values; the levels are more than 5 bins apart in time
    (`rate_span`: the level *then* is of bins at least 9 bins old, *now* at most 3). Under that bound's share,
    every rate is quiet; otherwise the levels are computed reading by reading, as the scalar pass does.
    """
    assert s.span_s is not None
    width = s.span_s / rate_span.BINS_PER_SPAN
    saved = s.rate_bins
    means = [b[3] / b[1] for b in saved]
    spread = max(*means, *s.values) - min(*means, *s.values) if len(means) + len(s.values) > 1 else 0.0
    if spread * 60.0 / (5 * width) < RATE_BOUND_SHARE * s.clear_below:
        s.rate_bins = _binned(saved, s.times, s.values, width)
        return True
    bins = saved
    for t, value in zip(s.times, s.values, strict=True):
        bins = rate_span.add(bins, t, value, s.span_s)
        found = rate_span.levels(bins)
        if found is not None and not found.rate_per_min < s.clear_below:
            return False
    s.rate_bins = bins
    return True


def _binned(bins: list[list[Any]], times: list[float], values: list[float], width: float) -> list[list[Any]]:
    """`rate_span.add` of each reading in turn (at least one, times increasing): only the bins the last reading keeps, each run of
    readings of one bin summed in order (a reading of a bin it drops changes nothing that is kept)."""
    oldest = int(times[-1] // width) - rate_span.KEEP_BINS
    i = len(times)
    while i > 0 and int(times[i - 1] // width) >= oldest:
        i -= 1
    out = [b for b in bins if b[0] >= oldest]
    n = len(times)
    while i < n:
        index = int(times[i] // width)
        if out and out[-1][0] == index:
            _, count, sum_t, sum_v = out.pop()
        else:
            count, sum_t, sum_v = 1, times[i], values[i]
            i += 1
        while i < n and int(times[i] // width) == index:
            count, sum_t, sum_v = count + 1, sum_t + times[i], sum_v + values[i]
            i += 1
        out.append([index, count, sum_t, sum_v])
    return out
