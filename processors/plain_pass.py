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

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from alerts.rules import OpenKeys
from processors import rate_span, windows
from processors.detection_state import StationState
from processors.rule_columns import InstantColumns
from quantrac.domain import ParameterSpec, Reading, Status

RATE_BOUND_SHARE = 0.5
"""A rate bound under this share of the clear threshold proves every rate of the batch quiet without computing the
levels (see `_rate_quiet`); the margin covers the rounding of bin times."""


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
    events: list[tuple[str, float, float, Reading]]
    """(parameter, epoch time, value, reading) of each reading, in arrival order."""
    by_ts: dict[float, dict[str, float]]
    """The readings' values by event time, for the multivariate groups."""


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


class _Series:
    """A parameter's rule state being worked on: the original's buckets are copied before they change."""

    __slots__ = ("spec", "last_t", "windows", "copied", "rate_bins", "saved_bins", "quiet", "span_s", "clear_below",
                 "values", "times")

    def __init__(self, spec: ParameterSpec, last_t: float | None, saved: dict[str, Any], rate_bins: list[list[Any]],
                 quiet: tuple[float, float], span_s: float | None, clear_below: float) -> None:
        self.spec, self.last_t, self.rate_bins, self.saved_bins, self.quiet = spec, last_t, rate_bins, rate_bins, quiet
        self.windows = {basis: dict(buckets) for basis, buckets in saved.items()}
        self.copied: set[int] = set()
        self.span_s, self.clear_below = span_s, clear_below
        self.values: list[float] = []
        self.times: list[float] = []


def plain_pass(state: StationState, readings: Sequence[Reading], specs: Sequence[ParameterSpec | None],
               columns: InstantColumns, rules: PlainRules) -> PlainBatch | None:
    """The station's rule state after `readings` when the batch is plain for it (see the module), else None."""
    walk = _Walk(state, rules)
    hot, learn = columns.hot, columns.learn
    for i, r in enumerate(readings):
        spec = specs[i]
        if spec is None:
            continue
        value = learn[i]
        if hot[i] or value is None or r.status is not Status.MEASURING or not walk.take(r, spec, value):
            return None
    for s in walk.series.values():
        if s.span_s is not None and s.values and not _rate_quiet(s):
            return None
    parameters = _close(state, walk.series, walk.newest, rules)
    if parameters is None:
        return None
    return PlainBatch(walk.newest, parameters, walk.events, walk.by_ts)


class _Walk:
    """The pass through a station's readings in arrival order: its newest time, parameters, events and vectors."""

    def __init__(self, state: StationState, rules: PlainRules) -> None:
        self.state, self.rules = state, rules
        self.newest = state.newest_t
        self.series: dict[str, _Series] = {}
        self.events: list[tuple[str, float, float, Reading]] = []
        self.by_ts: dict[float, dict[str, float]] = {}

    def take(self, r: Reading, spec: ParameterSpec, value: float) -> bool:
        """Count a valid, measuring, cold reading; False if it is late, out of order or after a gap, or its parameter
        or a bucket it completes is not plain."""
        rules, t = self.rules, r.ts.timestamp()
        newest = self.newest
        if newest is not None and t < newest - rules.lateness_s:
            return False
        self.newest = t if newest is None else max(newest, t)
        s = self.series.get(r.parameter)
        if s is None:
            s = _start(self.state, r.parameter, spec, rules)
            if s is None:
                return False
            self.series[r.parameter] = s
        last = s.last_t
        if last is not None and (t <= last or t - last > rules.gap_s):
            return False
        s.last_t = t
        if not _count(s, r, t, value, rules.interval_s, rules.min_coverage):
            return False
        if s.span_s is not None:
            s.rate_bins = rate_span.add(s.rate_bins, t, value, s.span_s)
            s.values.append(value)
            s.times.append(t)
        self.events.append((r.parameter, t, value, r))
        at = self.by_ts.get(t)
        if at is None:
            self.by_ts[t] = {r.parameter: value}
        else:
            at[r.parameter] = value
        return True


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


def _count(s: _Series, r: Reading, t: float, value: float, interval: int, cov: float) -> bool:
    """Count a valid reading in its bucket of every basis (`processors.windows.add`); a bucket it completes is judged
    at once (`windows.complete`): False if its mean could build a condition."""
    for basis, bucket in windows.BASES.items():
        start, end = windows._bounds(r.ts, t, bucket)
        buckets = s.windows.get(basis)
        if buckets is None:
            buckets = s.windows[basis] = {}
        key = str(int(start))
        entry = buckets.get(key)
        if entry is None:
            entry = buckets[key] = [0.0, 0, 0, 0, float(end), windows.readings_in(end - start, interval)]
            s.copied.add(id(entry))
        elif id(entry) not in s.copied:
            entry = buckets[key] = list(entry)
            s.copied.add(id(entry))
        entry[windows.SUM] += value
        entry[windows.VALID] += 1
        entry[windows.TOTAL] += 1
        if entry[windows.TOTAL] >= entry[windows.EXPECTED]:
            entry[windows.DIRTY] = 0
            if _gives_mean(entry, cov, s.quiet):
                return False
        else:
            entry[windows.DIRTY] = 1
    return True


def _gives_mean(entry: list[Any], cov: float, quiet: tuple[float, float]) -> bool:
    """Whether judging the bucket now gives a mean outside `quiet` (`processors.windows._judge`)."""
    expected, valid = entry[windows.EXPECTED], entry[windows.VALID]
    return expected > 1 and valid > 0 and valid >= math.ceil(cov * expected) and \
        not quiet[0] <= entry[windows.SUM] / valid <= quiet[1]


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
                if entry[windows.DIRTY] and (passed or entry[windows.TOTAL] >= entry[windows.EXPECTED]):
                    spec = rules.parameters.get(parameter)
                    quiet = None if spec is None else rules.quiet(parameter, spec)
                    if not passed or quiet is None or _gives_mean(entry, rules.min_coverage, quiet):
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
    """Whether no reading of the batch gives a rate of change that `judge_rate` must see (`processors.detection._rate`).

    The levels are medians of bin means, and every bin mean (its readings' mean) lies between the least and the
    greatest of the kept bins' means and the batch's values; the levels are more than 5 bins apart in time
    (`rate_span`: the level *then* is of bins at least 9 bins old, *now* at most 3). Under that bound's share,
    every rate is quiet; otherwise the levels are computed reading by reading, as the scalar pass does.
    """
    assert s.span_s is not None
    width = s.span_s / rate_span.BINS_PER_SPAN
    means = [b[3] / b[1] for b in s.saved_bins]
    spread = max(*means, *s.values) - min(*means, *s.values) if len(means) + len(s.values) > 1 else 0.0
    if spread * 60.0 / (5 * width) < RATE_BOUND_SHARE * s.clear_below:
        return True
    bins = s.saved_bins
    for t, value in zip(s.times, s.values, strict=True):
        bins = rate_span.add(bins, t, value, s.span_s)
        found = rate_span.levels(bins)
        if found is not None and not found.rate_per_min < s.clear_below:
            return False
    return True
