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

`plain_batches` lays every station's state out in flat arrays, runs `processors.engine.rule_pass`
once over the batch and builds the new state of the stations it found plain, without touching the
states: a station it did not goes through `_station_pass`. The scalar path stays the oracle:
`tests/test_plain_pass.py` checks that both give the same states and conditions.
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
from processors.station_rows import OrderedColumns, StationRows
from quantrac.domain import ParameterSpec

_BASES = list(windows.BASES)


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
    """Every parameter whose rule state changed (read or closed), those read in the order of their first reading."""
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


Job = tuple[StationState, StationRows, PlainRules]
"""A station's state (not changed here), its rows of the batch and its settings."""


class _Layout:
    """The stations' series and their rule state as `rule_pass.run` takes them."""

    def __init__(self, ordered: OrderedColumns) -> None:
        self.row_of = np.full(int(ordered.series.max(initial=-1)) + 1, -1, dtype=np.int64)
        """Per series of the batch (station, parameter): its row here, -1 if the pass does not take it."""
        self.parameters: list[str] = []
        self.states: list[ParameterState | None] = []
        self.series_f: list[tuple[float, float, float, float, float]] = []
        self.series_i: list[tuple[bool, bool, bool]] = []
        self.bucket_counts: list[int] = []
        self.bucket_keys: list[int] = []
        self.buckets: list[list[Any]] = []
        self.bin_counts: list[int] = []
        self.bins: list[list[Any]] = []
        self.read_order: list[list[int]] = []
        """Per station: the rows of the parameters it reads, in the order of their first reading."""
        self.complete: list[bool] = []
        """Per station: whether it has every parameter it reads."""

    def station(self, state: StationState, rules: PlainRules, read: list[tuple[int, str]]) -> tuple[int, int]:
        """Lay out the station's parameters: those of its state, then those it reads for the first time (`read`: the
        batch's series of the station and their parameters, in the order of their first reading); its rows."""
        first = len(self.parameters)
        rows: dict[str, int] = {}
        for parameter, ps in state.parameters.items():
            rows[parameter] = self._series(parameter, ps, rules)
        order = []
        self.complete.append(True)
        for series, parameter in read:
            if parameter not in rules.parameters:
                self.complete[-1] = False
                continue
            if parameter not in rows:
                rows[parameter] = self._series(parameter, None, rules)
            self.row_of[series] = rows[parameter]
            order.append(rows[parameter])
        self.read_order.append(order)
        return first, len(self.parameters)

    def _series(self, parameter: str, ps: ParameterState | None, rules: PlainRules) -> int:
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
        saved = {} if ps is None else ps.windows
        for basis in _BASES:
            buckets = saved.get(basis) or {}
            self.bucket_counts.append(len(buckets))
            self.bucket_keys.extend(map(int, buckets))
            self.buckets.extend(buckets.values())
        bins = [] if ps is None else ps.rate_bins
        self.bin_counts.append(len(bins))
        self.bins.extend(bins)
        self.parameters.append(parameter)
        self.states.append(ps)
        return len(self.parameters) - 1


def plain_batches(jobs: Sequence[Job | None]) -> list[PlainBatch | None]:
    """Each station's `PlainBatch` when its batch is plain (see the module), else None (also for a job of None, or of
    rows without the batch's judged columns)."""
    out: list[PlainBatch | None] = [None] * len(jobs)
    taken = [(k, job) for k, job in enumerate(jobs) if job is not None and job[1].ordered is not None]
    if not taken:
        return out
    ordered = taken[0][1][1].ordered
    assert ordered is not None
    layout = _Layout(ordered)
    first_read = _series_in_first_order(ordered.series)
    stations = np.array([(*rows.span, *layout.station(state, rules, first_read(rows.span, rows)))
                         for _, (state, rows, rules) in taken], dtype=np.int64).reshape(len(taken), 4)
    found = _run(layout, ordered, stations, [job for _, job in taken])
    if found is None:
        return out
    for (k, _), batch in zip(taken, found, strict=True):
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


def _run(layout: _Layout, ordered: OrderedColumns, stations: np.ndarray, jobs: list[Job]) -> list[PlainBatch | None] | None:
    """`rule_pass.run` over the layout; None if a state is not in the layout it expects (the scalar pass then judges
    every station, and says what is wrong with it)."""
    n_series = len(layout.parameters)
    try:
        buckets = np.array(layout.buckets, dtype=np.float64).reshape(len(layout.buckets), 6)
        bins = np.array(layout.bins, dtype=np.float64).reshape(len(layout.bins), 4)
    except (ValueError, TypeError):
        return None
    sr = layout.row_of[ordered.series]
    taken = np.zeros(len(sr), dtype=bool)
    for a, b in stations[:, :2].tolist():
        taken[a:b] = True
    sr[~taken] = -1
    read = np.flatnonzero(sr >= 0)
    per_series = np.bincount(sr[read], minlength=n_series)
    perm = read[np.argsort(sr[read], kind="stable")]
    poff = _offsets(per_series)
    bucket_counts = np.array(layout.bucket_counts, dtype=np.int64)
    woff = _offsets(bucket_counts)
    wooff = _offsets(bucket_counts + np.repeat(per_series, rule_pass.BASIS_COUNT))
    bin_counts = np.array(layout.bin_counts, dtype=np.int64)
    roff, rooff = _offsets(bin_counts), _offsets(bin_counts + per_series)
    wi = np.column_stack((np.array(layout.bucket_keys, dtype=np.int64),
                          buckets[:, [windows.VALID, windows.TOTAL, windows.DIRTY, windows.EXPECTED]].astype(np.int64)))
    wf = np.ascontiguousarray(buckets[:, [windows.SUM, windows.END]])
    ri, rf = bins[:, :2].astype(np.int64), np.ascontiguousarray(bins[:, 2:])
    day = np.zeros((len(sr), 2))
    day[read] = windows.day_table(ordered.t[read])
    station_f = np.array([(np.nan if state.newest_t is None else state.newest_t, rules.gap_s, float(rules.interval_s))
                          for state, _, rules in jobs], dtype=np.float64).reshape(len(jobs), 3)
    wocount, woi, wof = np.zeros(len(bucket_counts), np.int64), np.zeros((wooff[-1], 5), np.int64), np.zeros((wooff[-1], 2))
    rocount, roi, rof = np.zeros(n_series, np.int64), np.zeros((rooff[-1], 2), np.int64), np.zeros((rooff[-1], 2))
    wclosed, plain = np.zeros(len(wi), dtype=bool), np.zeros(len(jobs), dtype=bool)
    newest, last = np.full(len(jobs), np.nan), np.full(n_series, np.nan)
    first = jobs[0][2]
    rule_pass.run(stations, station_f, first.lateness_s, first.min_coverage, sr, ordered.t, ordered.learn, ordered.good,
                  day, perm, poff, np.array(layout.series_f, dtype=np.float64).reshape(n_series, 5),
                  np.array(layout.series_i, dtype=np.bool_).reshape(n_series, 3), woff, wi, wf, roff, ri, rf,
                  wooff, wocount, woi, wof, wclosed, rooff, rocount, roi, rof, plain, newest, last)
    state_out = _StateOut(layout, stations, plain, per_series, wooff, wocount, woi, wof, rooff, rocount, roi, rof, woff,
                          wclosed, last)
    return [state_out.batch(job, float(newest[k]), layout.read_order[k], layout.complete[k], int(stations[k, 2]),
                            int(stations[k, 3]))
            if plain[k] else None for k, job in enumerate(jobs)]


def _rows(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The rows `starts[k]` to `starts[k] + counts[k] - 1` of every k, in order (`starts` may have one more)."""
    total = int(counts.sum())
    return np.repeat(starts[:len(counts)] - _offsets(counts)[:-1], counts) + np.arange(total)


def _offsets(counts: np.ndarray) -> np.ndarray:
    """Where each of `counts`' runs begins in a flat array, and its end."""
    return np.concatenate(([0], np.cumsum(counts))).astype(np.int64)


class _StateOut:
    """What the pass left in its arrays, as the state's JSON layout for the stations it found plain: the buckets and
    bins of every read series of those stations turned into lists at once, then sliced per series."""

    def __init__(self, layout: _Layout, stations: np.ndarray, plain: np.ndarray, per_series: np.ndarray,
                 wooff: np.ndarray, wocount: np.ndarray, woi: np.ndarray, wof: np.ndarray, rooff: np.ndarray,
                 rocount: np.ndarray, roi: np.ndarray, rof: np.ndarray, woff: np.ndarray, wclosed: np.ndarray,
                 last: np.ndarray) -> None:
        self.layout = layout
        taken = np.zeros(len(per_series), dtype=bool)
        for (a, b), is_plain in zip(stations[:, 2:].tolist(), plain.tolist(), strict=True):
            taken[a:b] = is_plain
        taken &= per_series > 0
        self.read = (per_series > 0).tolist()
        buckets = _rows(wooff, wocount * np.repeat(taken, rule_pass.BASIS_COUNT))
        ints, floats = woi[buckets], wof[buckets]
        self.keys = list(map(str, ints[:, rule_pass.START].tolist()))
        self.buckets = list(map(list, zip(floats[:, rule_pass.SUM].tolist(),  ints[:, rule_pass.VALID].tolist(),
                                          ints[:, rule_pass.TOTAL].tolist(), ints[:, rule_pass.DIRTY].tolist(),
                                          floats[:, rule_pass.END].tolist(), ints[:, rule_pass.EXPECTED].tolist(), strict=True)))
        self.bucket_at = _offsets(wocount * np.repeat(taken, rule_pass.BASIS_COUNT)).tolist()
        bins = _rows(rooff, rocount * taken)
        self.bins = list(map(list, zip(roi[bins, 0].tolist(), roi[bins, 1].tolist(), rof[bins, 0].tolist(),
                                       rof[bins, 1].tolist(), strict=True)))
        self.bin_at = _offsets(rocount * taken).tolist()
        self.woff, self.wclosed, self.last = woff.tolist(), wclosed, last.tolist()

    def batch(self, job: Job, newest: float, read_order: list[int], complete: bool, first: int, end: int) -> PlainBatch:
        """The station's `PlainBatch`: its parameters read (`read_order`), then those whose buckets closed; `complete`:
        the station has every parameter it read."""
        _, rows, rules = job
        parameters = {self.layout.parameters[s]: self._read(s) for s in read_order}
        for s in range(first, end):
            if not self.read[s]:
                closed = self._closed(s)
                if closed is not None:
                    parameters[self.layout.parameters[s]] = closed
        assert rows.columns is not None
        names, t, values, ts = rows.parameters, rows.t, rows.columns.learn, rows.ts
        if not complete:  # readings of parameters the station does not have are left out
            present = [i for i, spec in enumerate(rows.specs) if spec is not None]
            names, t = [names[i] for i in present], [t[i] for i in present]
            values, ts = [values[i] for i in present], [ts[i] for i in present]
        by_ts: dict[float, dict[str, float]] = {}
        if rules.grouped:
            for parameter, time, value in zip(names, t, values, strict=True):
                if parameter in rules.grouped:
                    by_ts.setdefault(time, {})[parameter] = value  # type: ignore[assignment]
        return PlainBatch(None if newest != newest else newest, parameters, names, t, values, ts,  # type: ignore[arg-type]
                          by_ts)

    def _read(self, s: int) -> PlainParameter:
        """A read series' new state."""
        found: dict[str, Any] = {}
        for b, basis in enumerate(_BASES):
            c = rule_pass.BASIS_COUNT * s + b
            a, e = self.bucket_at[c], self.bucket_at[c + 1]
            found[basis] = dict(zip(self.keys[a:e], self.buckets[a:e], strict=True))
        last = self.last[s]
        return PlainParameter(None if last != last else last, found, self.bins[self.bin_at[s]:self.bin_at[s + 1]])

    def _closed(self, s: int) -> PlainParameter | None:
        """An unread series' state without the buckets the watermark passed; None if none did."""
        ps = self.layout.states[s]
        a = self.woff[rule_pass.BASIS_COUNT * s]
        if ps is None or not self.wclosed[a:self.woff[rule_pass.BASIS_COUNT * (s + 1)]].any():
            return None
        left = {basis: dict(buckets) for basis, buckets in ps.windows.items()}
        for basis in _BASES:
            for key in list(left.get(basis) or {}):
                if self.wclosed[a]:
                    del left[basis][key]
                a += 1
        return PlainParameter(ps.last_t, left, ps.rate_bins)
