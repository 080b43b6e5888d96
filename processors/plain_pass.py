"""Stations whose batch nothing can raise or clear a rule in: their windows and rate bins in one compiled pass.

`processors.detection._station_pass` takes a station's readings one at a time through a dozen
functions: windows, gap, status runs, rate of change, window means. About 99.9 % of readings give
no condition, and those calls were most of the worker's time. A batch is *plain* for a station when
every reading of it is in order for its parameter, on time (not late), measuring (status 00), valid
and within its instrument's range, not judged by the instantaneous rules (`processors.rule_columns`:
not hot), without a gap since its parameter's last reading, on a parameter with no open fault or
calibration run and no key that may be open for its window means or rate; and when no window mean
it closes and no rate of change it finds can build a condition. Then the station's rule state after
the batch (newest time, per parameter its last time, windows and rate bins) is computed here, and
`processors.detection` hands the readings to the detectors as before.

`plain_batches` lays every station's windows and rate bins out in flat arrays (`StationRules`), runs
`processors.engine.rule_pass` once over the batch and gives the stations it found plain their rows
after it, without touching the states: a station it did not goes through `_station_pass`. The worker
keeps a plain station's rows between batches (`RuleRows`), so its windows and bins are turned into
the state's JSON layout only when the state is written out or the scalar pass takes it. The scalar
path stays the oracle: `tests/test_plain_pass.py` checks that both give the same states and conditions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from alerts.rules import OpenKeys
from processors import windows
from processors.detection_state import ParameterState, StationState
from processors.engine import rule_pass
from processors.engine.common import unopt
from processors.station_rows import OrderedColumns, StationRows
from quantrac.domain import ParameterSpec

_BASES = list(windows.BASES)


@dataclass
class StationRules:
    """A station's windows and rate bins as `processors.engine.rule_pass` takes them.

    Per parameter (in `parameters`' order) and basis (`processors.windows.BASES`' order) its buckets, each
    an integer row `[start, valid, total, dirty, expected]` and a float row `[sum, end]`; per parameter its
    rate bins, `[index, count]` and `[sum_t, sum_value]`. `present` says which bases its state's windows
    hold (a parameter's windows may lack one, or hold it empty), so writing them back gives the same
    JSON."""

    parameters: list[str]
    bucket_counts: np.ndarray
    present: np.ndarray
    wi: np.ndarray
    wf: np.ndarray
    bin_counts: np.ndarray
    ri: np.ndarray
    rf: np.ndarray

    @classmethod
    def of(cls, state: StationState, parameters: list[str]) -> StationRules | None:
        """These parameters' rows from the state's JSON layout (one not in the state: empty); None if a bucket or bin
        is not in the layout the pass expects (the scalar pass then takes the station, and says what is wrong)."""
        counts: list[int] = []
        present: list[bool] = []
        keys: list[int] = []
        buckets: list[list[Any]] = []
        bin_counts: list[int] = []
        bins: list[list[Any]] = []
        for parameter in parameters:
            ps = state.parameters.get(parameter)
            saved = {} if ps is None else ps.windows
            for basis in _BASES:
                found = saved.get(basis)
                present.append(found is not None)
                found = found or {}
                counts.append(len(found))
                keys.extend(map(int, found))
                buckets.extend(found.values())
            kept = [] if ps is None else ps.rate_bins
            bin_counts.append(len(kept))
            bins.extend(kept)
        try:
            entries = np.array(buckets, dtype=np.float64).reshape(len(buckets), 6)
            binned = np.array(bins, dtype=np.float64).reshape(len(bins), 4)
        except (ValueError, TypeError):
            return None
        wi = np.column_stack((np.array(keys, dtype=np.int64),
                              entries[:, [windows.VALID, windows.TOTAL, windows.DIRTY, windows.EXPECTED]].astype(np.int64)))
        return cls(list(parameters), np.array(counts, dtype=np.int64), np.array(present, dtype=np.bool_), wi,
                   np.ascontiguousarray(entries[:, [windows.SUM, windows.END]]), np.array(bin_counts, dtype=np.int64),
                   binned[:, :2].astype(np.int64), np.ascontiguousarray(binned[:, 2:]))

    def extended(self, parameters: list[str]) -> StationRules:
        """These rows with new, empty parameters after them."""
        if not parameters:
            return self
        n = len(parameters)
        return StationRules(self.parameters + parameters,
                            np.concatenate((self.bucket_counts, np.zeros(n * rule_pass.BASIS_COUNT, np.int64))),
                            np.concatenate((self.present, np.zeros(n * rule_pass.BASIS_COUNT, np.bool_))), self.wi,
                            self.wf, np.concatenate((self.bin_counts, np.zeros(n, np.int64))), self.ri, self.rf)

    def write(self, state: StationState) -> None:
        """The windows and rate bins into the state's parameters, in its JSON layout."""
        keys = list(map(str, self.wi[:, rule_pass.START].tolist()))
        ints, floats = self.wi.tolist(), self.wf.tolist()
        entries = [[f[0], i[1], i[2], i[3], f[1], i[4]] for i, f in zip(ints, floats, strict=True)]
        bins = [[*i, *f] for i, f in zip(self.ri.tolist(), self.rf.tolist(), strict=True)]
        counts, present, bin_counts = self.bucket_counts.tolist(), self.present.tolist(), self.bin_counts.tolist()
        at = bin_at = 0
        for k, parameter in enumerate(self.parameters):
            found: dict[str, Any] = {}
            for b, basis in enumerate(_BASES):
                c = rule_pass.BASIS_COUNT * k + b
                if present[c]:
                    found[basis] = dict(zip(keys[at:at + counts[c]], entries[at:at + counts[c]], strict=True))
                at += counts[c]
            ps = state.parameter(parameter)
            ps.windows, ps.rate_bins = found, bins[bin_at:bin_at + bin_counts[k]]
            bin_at += bin_counts[k]


class RuleRows(dict[str, StationRules]):
    """The worker's plain stations' windows and rate bins, kept as `StationRules` between batches instead of being
    written into their states each time (which cost about as much as the compiled pass itself).

    A station's rows here are current while its state carries the token of the worker's live detectors
    (`processors.detection_banks.LiveBanks`, which holds this); its state's windows and bins are then
    stale, and `write` puts the rows in before the state is written out or judged by the scalar pass."""

    def current(self, station_id: str, valid: bool) -> StationRules | None:
        """The station's rows when `valid` (its state carries the live token), else None (and stale rows dropped)."""
        if not valid:
            self.pop(station_id, None)
            return None
        return self.get(station_id)


@dataclass
class PlainBatch:
    """What a plain batch gives a station: its new rule state, and its readings for the detectors."""

    newest_t: float | None
    last_t: dict[str, float | None]
    """The new last time of each parameter read, in the order of their first reading."""
    rules: StationRules
    """Every parameter's windows and rate bins after the batch (`StationRules.write` puts them in the state)."""
    event_parameters: list[str]
    """Each reading's parameter, in arrival order; then its epoch time, value and time as sent."""
    event_t: list[float]
    event_values: list[float]
    event_ts: list[datetime]
    columns: OrderedColumns
    span: tuple[int, int]
    series_of: dict[str, int]
    """The batch's columns, the station's span of them and the series of each parameter it read (`vectors`)."""

    def vectors(self, group: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """The times (increasing) at which every parameter of `group` has a reading, and its values there (a row each,
        in the group's order). A plain batch has at most one reading of a parameter at a time."""
        a, b = self.span
        series, t, value = self.columns.series[a:b], self.columns.t[a:b], self.columns.learn[a:b]
        found = []
        for parameter in group:
            s = self.series_of.get(parameter)
            if s is None:
                return np.zeros(0), np.zeros((0, len(group)))
            mask = series == s
            found.append((t[mask], value[mask]))
        times = found[0][0]
        for times_of, _ in found[1:]:  # each increasing: a time is in both where it is found at its sorted place
            at = np.minimum(np.searchsorted(times_of, times), len(times_of) - 1)
            times = times[times_of[at] == times] if len(times_of) else times[:0]
        return times, np.column_stack([v[np.searchsorted(times_of, times)] for times_of, v in found])


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


Job = tuple[StationState, StationRows, PlainRules, "StationRules | None"]
"""A station's state (not changed here), its rows of the batch, its settings, and its kept rule rows (None: from its
state)."""


class _Layout:
    """The stations' series and their rule state as `rule_pass.run` takes them."""

    def __init__(self, ordered: OrderedColumns) -> None:
        self.row_of = np.full(int(ordered.series.max(initial=-1)) + 1, -1, dtype=np.int64)
        """Per series of the batch (station, parameter): its row here, -1 if the pass does not take it."""
        self.parameters: list[str] = []
        self.series_f: list[tuple[float, float, float, float, float]] = []
        self.series_i: list[tuple[bool, bool, bool]] = []
        self.rules: list[StationRules] = []
        self.read: list[dict[str, int]] = []
        """Per station: the batch's series of each parameter it reads, in the order of their first reading."""

    def station(self, job: Job, read: list[tuple[int, str]]) -> tuple[int, int] | None:
        """Lay out the station's parameters: those of its rows (kept, else its state's), then those it reads for the
        first time (`read`: the batch's series of the station and their parameters, in the order of their first
        reading); its rows, or None if its state is not in the pass's layout."""
        state, _, rules, kept = job
        found = kept if kept is not None else StationRules.of(state, list(state.parameters))
        if found is None:
            return None
        known = set(found.parameters)
        new = list(dict.fromkeys(p for _, p in read if p in rules.parameters and p not in known))
        found = found.extended(new)
        first = len(self.parameters)
        rows = {parameter: first + k for k, parameter in enumerate(found.parameters)}
        for parameter in found.parameters:
            self._series(parameter, state.parameters.get(parameter), rules)
        for series, parameter in read:
            if parameter in rules.parameters:
                self.row_of[series] = rows[parameter]
        self.read.append({parameter: series for series, parameter in read})
        self.rules.append(found)
        return first, len(self.parameters)

    def _series(self, parameter: str, ps: ParameterState | None, rules: PlainRules) -> None:
        spec = rules.parameters.get(parameter)
        quiet = None if spec is None else rules.quiet(parameter, spec)
        rate = spec is not None and spec.max_rate_per_min is not None
        blocked = quiet is None or (rate and (rules.station_id, parameter, "rate_of_change") in rules.open_keys) or (
            ps is not None and (ps.fault is not None or (ps.calibration is not None
                                                         and ps.calibration.run_start_t is not None)))
        low, high = quiet if quiet is not None else (np.nan, np.nan)
        self.series_f.append((np.nan if ps is None or ps.last_t is None else ps.last_t, low, high,
                              rules.rate_span_s(spec) if rate else np.nan,  # type: ignore[arg-type]
                              rules.rate_clear_below(spec) if rate else np.nan))  # type: ignore[arg-type]
        self.series_i.append((blocked, quiet is not None, rate))
        self.parameters.append(parameter)


def plain_batches(jobs: Sequence[Job | None]) -> list[PlainBatch | None]:
    """Each station's `PlainBatch` when its batch is plain (see the module), else None (also for a job of None, or of
    rows without the batch's judged columns)."""
    out: list[PlainBatch | None] = [None] * len(jobs)
    candidates = [(k, job) for k, job in enumerate(jobs) if job is not None and job[1].ordered is not None]
    if not candidates:
        return out
    ordered = candidates[0][1][1].ordered
    assert ordered is not None
    layout = _Layout(ordered)
    first_read = _series_in_first_order(ordered.series)
    taken, bounds = [], []
    for k, job in candidates:
        found = layout.station(job, first_read(job[1].span, job[1]))
        if found is not None:
            taken.append((k, job))
            bounds.append((*job[1].span, *found))
    if not taken:
        return out
    stations = np.array(bounds, dtype=np.int64).reshape(len(taken), 4)
    for (k, _), batch in zip(taken, _run(layout, ordered, stations, [job for _, job in taken]), strict=True):
        out[k] = batch
    return out


def _series_in_first_order(series: np.ndarray) -> Callable[[tuple[int, int], StationRows], list[tuple[int, str]]]:
    """For a station's span of the batch, its series and their parameters in the order of their first reading."""
    unique, first = np.unique(series, return_index=True)
    by_first = np.argsort(first, kind="stable")
    firsts, uniques = first[by_first], unique[by_first]

    def of(span: tuple[int, int], rows: StationRows) -> list[tuple[int, str]]:
        a, b = np.searchsorted(firsts, span).tolist()
        keys = rows.batch.series_keys
        return [(s, keys[s][1]) for s in uniques[a:b].tolist()]

    return of


def _run(layout: _Layout, ordered: OrderedColumns, stations: np.ndarray, jobs: list[Job]) -> list[PlainBatch | None]:
    """`rule_pass.run` over the layout: each station's `PlainBatch`, or None where it is not plain."""
    n_series = len(layout.parameters)
    sr = layout.row_of[ordered.series]
    taken = np.zeros(len(sr), dtype=bool)
    for a, b in stations[:, :2].tolist():
        taken[a:b] = True
    sr[~taken] = -1
    read = np.flatnonzero(sr >= 0)
    per_series = np.bincount(sr[read], minlength=n_series)
    perm = read[np.argsort(sr[read], kind="stable")]
    bucket_counts = np.concatenate([r.bucket_counts for r in layout.rules])
    bin_counts = np.concatenate([r.bin_counts for r in layout.rules])
    woff, roff = _offsets(bucket_counts), _offsets(bin_counts)
    wooff = _offsets(bucket_counts + np.repeat(per_series, rule_pass.BASIS_COUNT))
    rooff = _offsets(bin_counts + per_series)
    day = np.zeros((len(sr), 2))
    day[read] = windows.day_table(ordered.t[read])
    station_f = np.array([(np.nan if state.newest_t is None else state.newest_t, rules.gap_s, float(rules.interval_s))
                          for state, _, rules, _ in jobs], dtype=np.float64).reshape(len(jobs), 3)
    wocount, woi, wof = np.zeros(len(bucket_counts), np.int64), np.zeros((wooff[-1], 5), np.int64), np.zeros((wooff[-1], 2))
    rocount, roi, rof = np.zeros(n_series, np.int64), np.zeros((rooff[-1], 2), np.int64), np.zeros((rooff[-1], 2))
    plain, newest, last = np.zeros(len(jobs), dtype=bool), np.full(len(jobs), np.nan), np.full(n_series, np.nan)
    settings = jobs[0][2]
    rule_pass.run_batch(stations, station_f, settings.lateness_s, settings.min_coverage, sr, ordered.t, ordered.learn,
                        ordered.good, day, perm, _offsets(per_series),
                        np.array(layout.series_f, dtype=np.float64).reshape(n_series, 5),
                        np.array(layout.series_i, dtype=np.bool_).reshape(n_series, 3), woff,
                        np.concatenate([r.wi for r in layout.rules]), np.concatenate([r.wf for r in layout.rules]), roff,
                        np.concatenate([r.ri for r in layout.rules]), np.concatenate([r.rf for r in layout.rules]),
                        wooff, wocount, woi, wof, rooff, rocount, roi, rof, plain,
                        newest, last)
    out: list[PlainBatch | None] = []
    lasts = last.tolist()
    for k, (_, _, first, end) in enumerate(stations.tolist()):
        if not plain[k]:
            out.append(None)
            continue
        kept = layout.rules[k]
        c, e = rule_pass.BASIS_COUNT * first, rule_pass.BASIS_COUNT * end
        counts, bins = wocount[c:e], rocount[first:end]
        buckets, binned = _rows(wooff[c:e], counts), _rows(rooff[first:end], bins)
        present = kept.present | np.repeat(per_series[first:end] > 0, rule_pass.BASIS_COUNT)
        after = StationRules(kept.parameters, counts.copy(), present, woi[buckets], wof[buckets], bins.copy(),
                             roi[binned], rof[binned])
        row_of = {p: first + i for i, p in enumerate(kept.parameters)}
        last_t = {p: unopt(lasts[row_of[p]]) for p in layout.read[k] if p in jobs[k][2].parameters}
        out.append(_plain_batch(jobs[k], float(newest[k]), last_t, after, layout.read[k]))
    return out


def _plain_batch(job: Job, newest: float, last_t: dict[str, float | None], after: StationRules,
                 series_of: dict[str, int]) -> PlainBatch:
    """A plain station's `PlainBatch`; `last_t` has the parameters it read that it has, `series_of` all it read."""
    _, rows, _, _ = job
    assert rows.columns is not None
    names, t, values, ts = rows.parameters, rows.t, rows.columns.learn, rows.ts
    if len(last_t) < len(series_of):  # readings of parameters the station does not have are left out
        present = [i for i, spec in enumerate(rows.specs) if spec is not None]
        names, t = [names[i] for i in present], [t[i] for i in present]
        values, ts = [values[i] for i in present], [ts[i] for i in present]
    assert rows.ordered is not None
    return PlainBatch(None if newest != newest else newest, last_t, after, names, t, values,  # type: ignore[arg-type]
                      ts, rows.ordered, rows.span, series_of)


def _rows(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The rows `starts[k]` to `starts[k] + counts[k] - 1` of every k, in order (`starts` may have one more)."""
    total = int(counts.sum())
    return np.repeat(starts[:len(counts)] - _offsets(counts)[:-1], counts) + np.arange(total)


def _offsets(counts: np.ndarray) -> np.ndarray:
    """Where each of `counts`' runs begins in a flat array, and its end."""
    return np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
