"""Detection for one station: windows, rules and streaming detectors over a batch of new readings.

`detect(state, readings, station, config)` is pure: it takes the station's state
(`processors.detection_state`, as kept in a Faust table) and its new readings, and returns the
new state and every condition found,
active or clear. Readings are taken one at a time in arrival order (a station's records keep
their order on its Kafka partition), so the result does not depend on how the readings were
cut into batches: a burst replayed with historical timestamps gives the same conditions as
live delivery. Event time decides which window a reading counts in and what is late.

Per reading:
- late (older than the station's newest event time minus the lateness): stored already,
  counted as late, judged on its instantaneous value only;
- otherwise counted in its windows (status 01/02 and out-of-range values only in the totals);
- in order for its parameter (newer than its last reading): status runs (device fault,
  calibration), rate of change and the anomaly detectors, which need order.

The anomaly detectors run last, once per engine bank over every station of the batch
(`processors.detection_banks`); their conditions are put back where judging reading by reading
put them.
"""

from __future__ import annotations

import hashlib
import json
import math
from bisect import bisect_right
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any, Callable, Iterable, Mapping, Sequence

import orjson

from alerts.rules import (
    Condition,
    OpenKeys,
    in_range,
    judge_calibration,
    judge_data_stopped,
    judge_fault,
    judge_limit,
    judge_range,
    judge_rate,
)
from processors import rate_span, windows
from processors.detection_banks import ChannelSpec, Judgements, LiveBanks, SeriesKey
from processors.detection_state import (
    CalibrationRun,
    DetectorState,
    FaultRun,
    ParameterState,
    StateCache,
    StationState,
    encode_state,
    load,
)
from processors.detectors import DETECTORS
from processors.detectors.presets import hyperparameters, params_of, station_channels
from processors.plain_pass import Job, PlainBatch, PlainRules, RuleRows, StationRules, plain_batches
from processors.rule_columns import InstantColumns, MeanGate
from processors.station_rows import StationRows, of_station, split
from quantrac.batch_columns import BatchColumns, as_columns, batch_columns
from quantrac.domain import DetectorChannel, ParameterSpec, Reading, Station, Status
from quantrac.settings import Settings


@dataclass(frozen=True)
class DetectionConfig:
    """The worker's detection settings (`QUANTRAC_DETECT_*`): lateness, window coverage, rule runs, gaps, detectors."""

    lateness_s: float = 600.0
    min_coverage: float = 0.5
    early_fraction: float = 0.8
    fault_after_n: int = 3
    fault_after_s: float = 1800.0
    calibration_max_s: float = 3600.0
    calibration_daily_s: float = 7200.0
    rate_span_s: float = 300.0
    gap_intervals: float = 6.0
    gap_min_s: float = 900.0
    relearn_gap_s: float = 21600.0
    spike_relearn_gap_s: float = 7200.0
    """The spike detector's own `relearn_gap_s`: its level is the series' last before the gap, which a daily cycle has
    left behind after a few hours, while the other detectors' baselines stay valid longer."""
    incident_hold_s: float = 900.0
    """How long all detectors of a series must be clear before a new anomaly is a new incident (the alerts' clear hold)."""
    incident_refractory_s: float = 1800.0
    """After a series' incident ended, how long (from its last flag) an anomaly is an echo of it, not a new alert."""
    detectors: tuple[str, ...] = ("spike", "drift", "flatline", "multivariate")
    """The detectors the worker may run: a station's channel naming another is left out."""
    detector_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Hyperparameters of the channels that give none (the generic channels of the kind presets)."""

    def relearn_gap_for(self, detector: str) -> float:
        """How long a gap must be for `detector` (a channel's name) to relearn after it."""
        return self.spike_relearn_gap_s if detector == "spike" else self.relearn_gap_s

    @property
    def shortest_relearn_gap_s(self) -> float:
        """The shortest gap after which some detector relearns: a gap at least this long goes to the judgements."""
        return min(self.relearn_gap_s, self.spike_relearn_gap_s)

    @classmethod
    def from_settings(cls, s: Settings) -> "DetectionConfig":
        """The settings' values; unknown detector names or hyperparameters that are not JSON are refused."""
        names = tuple(n.strip() for n in s.detect_detectors.split(",") if n.strip())
        unknown = [n for n in names if n not in DETECTORS]
        if unknown:
            raise ValueError(f"QUANTRAC_DETECT_DETECTORS names unknown detectors {unknown}; known: {sorted(DETECTORS)}")
        try:
            params = json.loads(s.detect_detector_params)
        except json.JSONDecodeError as exc:
            raise ValueError(f"QUANTRAC_DETECT_DETECTOR_PARAMS is not JSON ({exc}); give an object such as "
                             '{"drift": {"h": 20}}') from exc
        return cls(lateness_s=s.detect_lateness_s, detector_params=params, min_coverage=s.detect_window_min_coverage,
                   early_fraction=s.detect_early_warning_fraction, fault_after_n=s.detect_fault_after_n,
                   fault_after_s=s.detect_fault_after_s, calibration_max_s=s.detect_calibration_max_s,
                   calibration_daily_s=s.detect_calibration_daily_s, rate_span_s=s.detect_rate_span_s,
                   gap_intervals=s.detect_gap_intervals, gap_min_s=s.detect_gap_min_s,
                   relearn_gap_s=s.detect_relearn_gap_s, spike_relearn_gap_s=s.detect_spike_relearn_gap_s,
                   incident_hold_s=s.alert_clear_hold_s,
                   incident_refractory_s=s.detect_refractory_s, detectors=names)


@dataclass
class Outcome:
    """What `detect` gives for a station's batch of readings."""

    state: StationState
    """The station's state after the batch, to keep for its next one."""
    conditions: list[Condition]
    """Every condition judged, active or clear, in reading order (multivariate groups last)."""
    late: list[Reading]
    """Readings older than the lateness: judged on their instantaneous value only."""


@dataclass(frozen=True)
class Plan:
    """The channels a station runs, as the worker applies them: per parameter the scalar ones, and the groups.

    On a parameter, a channel naming it wins over a channel of the same detector on every parameter.
    A parameter's own `detectors` list decides which detectors run on it: each takes the preset's
    channel for it if there is one, else the worker's hyperparameters. A group runs where the station
    reports all of it.
    """

    scalar: dict[str, tuple[DetectorChannel, ...]]
    vector: tuple[DetectorChannel, ...]
    key: str
    """A digest of the channels and the worker's hyperparameters: learned state is kept only under the same key."""

    @classmethod
    def of(cls, station: Station, config: DetectionConfig) -> "Plan":
        """The station's plan; kept while the worker is handed the same station and config objects (one registry load)."""
        kept = _PLANS.get(id(station))
        if kept is not None and kept[0] is station and kept[1] is config:
            return kept[2]
        if len(_PLANS) >= 4096:
            _PLANS.clear()
        plan = cls._build(station, config)
        _PLANS[id(station)] = (station, config, plan)
        return plan

    @classmethod
    def _build(cls, station: Station, config: DetectionConfig) -> "Plan":
        allowed = [c for c in station_channels(station) if c.detector in config.detectors]
        vector = tuple(c for c in allowed if DETECTORS[c.detector].input_kind == "vector"
                       and all(p in station.parameters for p in c.columns or ()))
        scalar: dict[str, tuple[DetectorChannel, ...]] = {}
        for symbol, spec in station.parameters.items():
            offered: dict[str, DetectorChannel] = {}
            for c in allowed:
                if c.columns == (symbol,) and DETECTORS[c.detector].input_kind == "scalar":
                    offered.setdefault(c.detector, c)
            for c in allowed:
                if c.columns is None:
                    offered.setdefault(c.detector, c)
            if spec.detectors is None:
                scalar[symbol] = tuple(offered.values())
            else:
                scalar[symbol] = tuple(offered.get(name) or DetectorChannel(detector=name)
                                       for name in spec.detectors if name in config.detectors)
        key = hashlib.sha256(orjson.dumps(
            [{p: [_keyed(c) for c in cs] for p, cs in scalar.items()}, [_keyed(c) for c in vector],
             {name: _learned_under(name, params) for name, params in config.detector_params.items()}],
            option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]
        return cls(scalar, vector, key)


_PLANS: dict[int, tuple[Station, DetectionConfig, Plan]] = {}


def _learned_under(detector: str, params: dict[str, Any] | None) -> dict[str, Any] | None:
    """`params` without the detector's `restart_only` hyperparameters: what its learned state depends on (`Plan.key`)."""
    cls = DETECTORS.get(detector)
    if cls is None or not params:
        return params
    return {k: v for k, v in params.items() if k not in cls.restart_only}


def _keyed(channel: DetectorChannel) -> dict[str, Any]:
    """A channel as it counts in `Plan.key`."""
    return {**channel.model_dump(), "params": _learned_under(channel.detector, channel.params)}


def detector_params(channel: DetectorChannel, specs: list[ParameterSpec], config: DetectionConfig) -> dict[str, Any]:
    """What a channel's detector is built with: its own params, else the worker's with the instruments' resolution."""
    name = channel.detector
    return params_of(channel, {**config.detector_params.get(name, {}), **instrument_params(name, specs, config)})


def instrument_params(name: str, specs: list[ParameterSpec], config: DetectionConfig) -> dict[str, Any]:
    """The instrument's resolution as the detector's scale floor, unless the detector's parameters set one.

    Scalar detectors take `resolution` (None: they learn it); the multivariate one takes `eps`, one
    per parameter, when every parameter of its group has a resolution.
    """
    configured = config.detector_params.get(name, {})
    resolutions = [spec.resolution for spec in specs]
    if any(r is None for r in resolutions):
        return {}
    if name == "multivariate":
        return {} if "eps" in configured else {"eps": resolutions}
    accepts = "resolution" in hyperparameters(name)
    return {"resolution": resolutions[0]} if accepts and "resolution" not in configured else {}


class _Work:
    """A station's part of a batch: its state, plan and the series it hands the batch's `Judgements`."""

    def __init__(self, state: StationState, plan: Plan, station: Station, config: DetectionConfig,
                 judgements: Judgements, loaded: set[SeriesKey]) -> None:
        self.state, self.plan, self.station, self.config = state, plan, station, config
        self.judgements, self.loaded = judgements, loaded
        self.series: dict[str, int | None] = {}
        self.gate: MeanGate | None = None
        """The batch's gate of window means (None: every mean is judged)."""

    def series_of(self, parameter: str, spec: ParameterSpec) -> int | None:
        """The index of the parameter's series in the judgements (None: no detector runs on it)."""
        if parameter not in self.series:
            ps = self.state.parameters[parameter]
            sid, plan = self.station.id, self.plan

            def channels() -> list[ChannelSpec]:
                return [(c.detector, (sid, plan.key, parameter, c.detector), partial(detector_params, c, [spec], self.config),
                         ps.detectors.get(c.detector)) for c in plan.scalar[parameter]]

            self.series[parameter] = self.judgements.add_series(self.station, parameter, (sid, plan.key, parameter),
                                                                channels, self.loaded, ps, ps.detectors.__setitem__)
        return self.series[parameter]

    def group_series(self, channel: DetectorChannel) -> int:
        """The index of a multivariate group's series in the judgements."""
        group = channel.columns or ()
        key = ",".join(group)
        gs = self.state.group(key)

        def save(_: str, state: DetectorState) -> None:
            gs.detector = state

        def spec() -> list[ChannelSpec]:
            return [(channel.detector, (self.station.id, self.plan.key, "mv:" + key, channel.detector),
                     partial(detector_params, channel, [self.station.parameters[p] for p in group], self.config),
                     gs.detector)]

        series = self.judgements.add_series(self.station, key, (self.station.id, self.plan.key, "mv:" + key), spec,
                                            self.loaded, None, save)
        assert series is not None  # a group has its one channel
        return series


def _add(found: list[Condition], condition: Condition | None) -> None:
    if condition is not None:
        found.append(condition)


def _status_rules(ps: ParameterState, r: Reading, station: Station, config: DetectionConfig, t: float,
                  open_keys: OpenKeys | None) -> list[Condition]:
    """Device-fault (status 02) and calibration (status 01) runs of an in-order reading's parameter."""
    found: list[Condition] = []
    if r.status is Status.FAULT:
        if ps.fault is None:
            ps.fault = FaultRun(first_t=t, count=0)
        ps.fault.count += 1
        _add(found, judge_fault(station, r.parameter, ps.fault.count, t - ps.fault.first_t, r.ts, config.fault_after_n,
                                config.fault_after_s, open_keys=open_keys))
    elif ps.fault is not None:
        ps.fault = None
        _add(found, judge_fault(station, r.parameter, 0, 0.0, r.ts, config.fault_after_n, config.fault_after_s,
                                open_keys=open_keys))
    day = windows.day_bounds(r.ts, t)[0]
    cal = ps.calibration or CalibrationRun(run_start_t=None, day_start_t=day, day_s=0.0)
    if cal.day_start_t != day:
        cal = CalibrationRun(run_start_t=cal.run_start_t, day_start_t=day, day_s=0.0)
    if r.status is Status.CALIBRATING:
        run_start = t if cal.run_start_t is None else cal.run_start_t
        ps.calibration = CalibrationRun(run_start_t=run_start, day_start_t=cal.day_start_t,
                                        day_s=cal.day_s + station.expected_interval_s)
        run_s = t - run_start + station.expected_interval_s
        _add(found, judge_calibration(station, r.parameter, run_s, ps.calibration.day_s, r.ts, config.calibration_max_s,
                                      config.calibration_daily_s, open_keys=open_keys))
    elif cal.run_start_t is not None:
        ps.calibration = CalibrationRun(run_start_t=None, day_start_t=cal.day_start_t, day_s=cal.day_s)
        _add(found, judge_calibration(station, r.parameter, 0.0, 0.0, r.ts, config.calibration_max_s,
                                      config.calibration_daily_s, open_keys=open_keys))
    return found


LiveDetectors = LiveBanks
"""The worker's detectors, kept alive between batches as engine bank rows (`processors.detection_banks.LiveBanks`).

Building detectors from their JSON state cost about an eighth of the worker's time when each batch
brings a station one reading per parameter. The worker keeps its stations' rows and takes a
station's as they are when the next state it is handed carries the token they wrote: not a retried
batch's older state, nor one written meanwhile by another worker; then they are loaded from that
state. The result is the same as building them afresh."""


def _prepare(state: StationState | dict[str, Any] | None, station: Station, config: DetectionConfig,
             live: LiveBanks, judgements: Judgements, owned: bool) -> _Work:
    """The station's work: its state (a copy, so the caller's stays as it was, unless `owned`), plan and rows.

    A state of an unknown version starts afresh; a state learned under another plan (another preset
    or channels) keeps its windows and rule runs but its detectors start afresh. The worker's live
    rows are taken when the state is the one they wrote (`LiveDetectors`).
    """
    loaded = state if owned and isinstance(state, StationState) else load(state)
    current = StationState() if loaded is None else loaded
    plan = Plan.of(station, config)
    if current.plan is None:
        current.plan = plan.key
    replanned = current.plan != plan.key
    if replanned:  # what the detectors learned was learned under other hyperparameters
        for ps in current.parameters.values():
            ps.detectors = {}
        current.groups, current.plan = {}, plan.key
    kept = live.begin(station.id, current, loaded is None or replanned)
    return _Work(current, plan, station, config, judgements, kept)


def _instant(r: Reading, spec: ParameterSpec, station: Station, config: DetectionConfig,
             found: list[Condition], open_keys: OpenKeys | None) -> float | None:
    """Judge a reading's instantaneous value (range, limits); the value to learn from, None if invalid or out of range."""
    if not r.is_valid_measurement or r.value is None:
        return None
    value = float(r.value)
    _add(found, judge_range(station, spec, value, r.ts, open_keys=open_keys))
    if not in_range(spec, value):
        return None
    found.extend(judge_limit(station, r.parameter, value, r.ts, "instant", config.early_fraction, open_keys=open_keys))
    return value


def _in_order(work: _Work, r: Reading, spec: ParameterSpec, value: float | None, t: float,
              found: list[Condition]) -> None:
    """Rules that need order on a reading newer than its parameter's last: gap, status runs, rate; the detectors'
    part (anomalies, and the gap's relearning and closing) goes to the batch's judgements."""
    station, config = work.station, work.config
    ps = work.state.parameters[r.parameter]
    stopped = relearn = None
    if ps.last_t is not None and t - ps.last_t > gap_s(station, config):
        stopped, silent_s = ps.last_t, t - ps.last_t
        relearn = silent_s if silent_s >= config.shortest_relearn_gap_s else None
        if spec.max_rate_per_min is not None:
            _add(found, judge_data_stopped(station, spec.symbol, "rate_of_change", windows.from_epoch(ps.last_t), r.ts,
                                           open_keys=work.judgements.open_keys))
    ps.last_t = t
    found.extend(_status_rules(ps, r, station, config, t, work.judgements.open_keys))
    if value is not None:
        _add(found, _rate(ps, station, spec, config, t, value, r.ts, work.judgements.open_keys))
    if value is not None or stopped is not None:
        series = work.series_of(r.parameter, spec)
        if series is not None:
            work.judgements.add(series, len(found), t, math.nan if value is None else value, r.ts,
                                judge=value is not None, stopped=stopped, relearn_s=relearn)


def detect(state: StationState | dict[str, Any] | None, readings: Sequence[Reading], station: Station,
           config: DetectionConfig, live: LiveDetectors | None = None, open_keys: OpenKeys | None = None,
           owned: bool = False) -> Outcome:
    """New state and conditions after the station's new readings, taken in arrival order (`detect_batch` of one station).

    `state` is the station's state from its last batch, as a `StationState` or its JSON (of any
    version `StationState.from_json` reads); None or an unknown version: start afresh. `live` (the
    worker's, see `LiveDetectors`) is read and updated; without it the state carries no token. With
    `open_keys` (`alerts.rules.OpenKeys`), a clear condition is found only for a key in it. An `owned`
    `StationState` is worked on in place (`processors.detection_state.StateCache`), not copied.
    """
    part = of_station(batch_columns(readings), station, state, config.early_fraction, open_keys)
    states, conditions, late = _judge_batch([part], config, live, open_keys, owned)
    return Outcome(states[station.id], conditions, late)


def _station_pass(work: _Work, readings: Sequence[Reading], specs: Sequence[ParameterSpec | None],
                  columns: InstantColumns | None, found: list[Condition], late: list[Reading]) -> None:
    """One station's readings in arrival order: windows and rules at once; detector work to the judgements. `columns`
    (this station's part of the batch's, see `processors.rule_columns`) say which readings the instantaneous rules
    must judge; None: all."""
    current, station, config, open_keys = work.state, work.station, work.config, work.judgements.open_keys
    by_ts: dict[float, dict[str, float]] = defaultdict(dict)
    next_close = -math.inf  # no bucket of any parameter closes before this watermark (see _due)
    for i, r in enumerate(readings):
        spec = specs[i]
        if spec is None:
            continue
        t = windows.epoch(r.ts)
        newest = current.newest_t
        is_late = newest is not None and t < newest - config.lateness_s
        current.newest_t = t if newest is None else max(newest, t)
        ps = current.parameter(r.parameter)
        in_order = ps.last_t is None or t > ps.last_t
        value = _instant(r, spec, station, config, found, open_keys) if columns is None or columns.hot[i] \
            else columns.learn[i]
        if is_late:
            current.late_count += 1
            late.append(r)
            continue
        touched = windows.add(ps.windows, r.ts, value, station.expected_interval_s, t)
        if in_order:
            _in_order(work, r, spec, value, t, found)
            if value is not None:
                by_ts[t][r.parameter] = value
        next_close = _close_due(work, r.parameter, touched, next_close, found)
    _multivariate(work, by_ts, len(found))


def _plain_job(work: _Work, part: StationRows, kept: StationRules | None) -> Job | None:
    """The station's batch as `processors.plain_pass` takes it (`kept`: its live rule rows); None without the batch's
    gate (no open keys given)."""
    gate, open_keys, station, config = work.gate, work.judgements.open_keys, work.station, work.config
    if gate is None or open_keys is None:
        return None
    rules = PlainRules(station_id=station.id, parameters=station.parameters, interval_s=station.expected_interval_s,
                       lateness_s=config.lateness_s, gap_s=gap_s(station, config), min_coverage=config.min_coverage,
                       rate_span_s=partial(rate_span_s, station, config=config),
                       rate_clear_below=lambda spec: (spec.max_rate_per_min or 0.0) * (1 - RATE_MARGIN),
                       quiet=lambda parameter, spec: gate.quiet(station.id, parameter, spec, config.early_fraction),
                       open_keys=open_keys)
    return work.state, part, rules, kept


def _take_plain(work: _Work, batch: PlainBatch, anchor: int, keep: RuleRows | None, write: bool) -> None:
    """A plain station's rule state set from `processors.plain_pass`: its windows and bins kept in `keep` when given
    (the live rows), and written into its state if `write`; its readings handed to the detectors as `_station_pass`
    would."""
    station = work.station
    work.state.newest_t = batch.newest_t
    for parameter, last_t in batch.last_t.items():
        work.state.parameter(parameter).last_t = last_t
    if write:
        batch.rules.write(work.state)
    if keep is not None:
        keep[station.id] = batch.rules
    index = {p: work.series_of(p, station.parameters[p]) for p in dict.fromkeys(batch.event_parameters)}
    series = [index[p] for p in batch.event_parameters]
    if None in index.values():
        kept = [i for i, s in enumerate(series) if s is not None]
        series = [series[i] for i in kept]
        batch.event_t, batch.event_values = [batch.event_t[i] for i in kept], [batch.event_values[i] for i in kept]
        batch.event_ts = [batch.event_ts[i] for i in kept]
    work.judgements.add_values(series, anchor, batch.event_t, batch.event_values, batch.event_ts)  # type: ignore[arg-type]
    _plain_multivariate(work, batch, anchor)


def _judge_batch(parts: Sequence[StationRows], config: DetectionConfig, live: LiveDetectors | None,
                 open_keys: OpenKeys | None, owned: bool, save_rows: bool = True, plain: bool = True
                 ) -> tuple[dict[str, StationState], list[Condition], list[Reading]]:
    """Every station's pass, then the detectors once over the whole batch (`Judgements.run`); with `live` the
    states get the token of its rows, else none."""
    banks = LiveBanks() if live is None else live
    judgements = Judgements(banks, open_keys, config.incident_hold_s, config.incident_refractory_s, as_json=owned,
                            relearn_gap_for=config.relearn_gap_for,
                            save=save_rows or live is None)
    works: list[_Work] = []
    found: list[Condition] = []
    late: list[Reading] = []
    gate = None if open_keys is None else MeanGate(open_keys)
    for part in parts:
        work = _prepare(part.state, part.station, config, banks, judgements, owned)
        work.gate = gate
        works.append(work)
    kept = [banks.rules.current(w.station.id, live is not None and live.holds(w.station.id, w.state)) for w in works]
    plains = plain_batches([_plain_job(w, part, rows) for w, part, rows in zip(works, parts, kept, strict=True)]) \
        if plain else [None] * len(parts)
    keep = None if live is None else banks.rules
    for work, part, batch, rows in zip(works, parts, plains, kept, strict=True):
        if batch is None:
            if rows is not None:  # its state's windows are stale while the live rows are kept
                rows.write(work.state)
                banks.rules.pop(work.station.id, None)
            _station_pass(work, part.readings(), part.specs, part.columns, found, late)
        else:
            _take_plain(work, batch, len(found), keep, save_rows or live is None)
    found = judgements.run(found)
    for work in works:
        if live is None:
            work.state.token = None
        else:
            live.stamp(work.station.id, work.state, work.loaded)
    return {w.station.id: w.state for w in works}, found, late


def _close_due(work: _Work, parameter: str, touched: windows.Touched, next_close: float, found: list[Condition]) -> float:
    """Judge the window means due after a reading of `parameter` that counted in the `touched` buckets;
    the new `next_close` (see `_due`).

    While the watermark is before `next_close` no bucket is closed, and every bucket due before this
    reading was judged at its own reading: only the touched buckets can be due, by being complete, and
    only they can end before `next_close` (a bucket is made only by the reading it counts)."""
    state, config = work.state, work.config
    watermark = (state.newest_t or 0.0) - config.lateness_s
    if watermark >= next_close:
        found.extend(_due(work, list(state.parameters)))
        return min((windows.earliest_end(ps.windows) for ps in state.parameters.values()), default=math.inf)
    if windows.can_give_mean(touched):
        found.extend(_judge_means(work, parameter, partial(windows.complete, touched, config.min_coverage)))
    elif windows.completes(touched):
        windows.complete(touched, config.min_coverage)  # settles them: a bucket of one reading gives no mean
    return min(next_close, *(entry[windows.END] for _, _, entry in touched))


def gap_s(station: Station, config: DetectionConfig) -> float:
    """A silence longer than this (event time) in a series is a gap: its alerts close and its detectors relearn."""
    return max(config.gap_intervals * station.expected_interval_s, config.gap_min_s)


def rate_span_s(station: Station, spec: ParameterSpec, config: DetectionConfig) -> float:
    """The span a parameter's rate of change is judged over: its own, else the worker's, and never under the station's interval."""
    return max(spec.rate_span_s or config.rate_span_s, float(station.expected_interval_s))


RATE_MARGIN = 1e-6
"""A level rate this much under its bound is clear whatever `judge_rate` makes of the times' microseconds: such a rate
with no open key builds no condition, so it is not handed over (times turned into datetimes, the condition's text)."""


def _rate(ps: ParameterState, station: Station, spec: ParameterSpec, config: DetectionConfig, t: float, value: float,
          ts: datetime, open_keys: OpenKeys | None) -> Condition | None:
    """`rate_of_change` between robust levels about a span apart (`processors.rate_span`); None while warming up."""
    if spec.max_rate_per_min is None:
        return None
    ps.rate_bins = rate_span.add(ps.rate_bins, t, value, rate_span_s(station, spec, config))
    found = rate_span.levels(ps.rate_bins)
    if found is None or (open_keys is not None and found.rate_per_min < spec.max_rate_per_min * (1 - RATE_MARGIN)
                         and (station.id, spec.symbol, "rate_of_change") not in open_keys):
        return None
    return judge_rate(station, spec, windows.from_epoch(found.from_t), found.from_level, windows.from_epoch(found.to_t),
                      found.to_level, at=ts, smoothed=True, open_keys=open_keys)


def _due(work: _Work, parameters: list[str]) -> list[Condition]:
    """Judge the means that are due among `parameters`' windows.

    Called after every reading, so the result does not depend on how readings were cut into
    batches (replay = live). A bucket becomes due when it is complete, which only a reading of
    its own parameter can make it, or when the watermark passes its end; so between closings
    only the reading's own parameter needs a look.
    """
    state, config = work.state, work.config
    watermark = (state.newest_t or 0.0) - config.lateness_s
    found: list[Condition] = []
    for parameter in parameters:
        means_of = partial(windows.due, state.parameters[parameter].windows, watermark, config.min_coverage)
        found.extend(_judge_means(work, parameter, means_of))
    return found


def _judge_means(work: _Work, parameter: str, means_of: Callable[[tuple[float, float] | None], list[windows.WindowMean]]
                 ) -> list[Condition]:
    """The conditions of the means `means_of` gives: all of them, or with the batch's `MeanGate` those outside the
    quiet interval it gives, which are the ones `judge_limit` can build a condition for."""
    station, gate = work.station, work.gate
    quiet = None if gate is None else gate.quiet(station.id, parameter, station.parameters[parameter], work.config.early_fraction)
    found = [c for mean in means_of(quiet) for c in judge_limit(station, parameter, mean.mean, mean.start, mean.basis,
                                                                work.config.early_fraction, open_keys=work.judgements.open_keys)]
    if found and gate is not None:
        gate.judged(station.id, parameter)
    return found


def _multivariate(work: _Work, by_ts: dict[float, dict[str, float]], anchor: int) -> None:
    """Hand the judgements the station's complete vectors of each multivariate group (`_group_vectors`), from the
    values of its in-order readings by event time."""
    if not work.plan.vector:
        return
    times = sorted(by_ts)
    for channel in work.plan.vector:
        group = channel.columns or ()
        needed = frozenset(group)
        complete = [t for t in times if by_ts[t].keys() >= needed]
        _group_vectors(work, channel, complete, [[by_ts[t][p] for p in group] for t in complete], anchor)


def _plain_multivariate(work: _Work, batch: PlainBatch, anchor: int) -> None:
    """`_multivariate` of a plain station, its vectors taken from the batch's columns."""
    for channel in work.plan.vector:
        times, vectors = batch.vectors(channel.columns or ())
        _group_vectors(work, channel, times.tolist(), vectors.tolist(), anchor)


def _group_vectors(work: _Work, channel: DetectorChannel, times: list[float], vectors: list[list[float]],
                   anchor: int) -> None:
    """Hand the judgements a group's vectors (`times` increasing, each with every parameter of the group) newer than its
    last, in event-time order (after a gap: the group's alerts close and, after a long one, it relearns)."""
    gs = work.state.group(",".join(channel.columns or ()))
    last = gs.last_t
    start = 0 if last is None else bisect_right(times, last)
    if start == len(times):
        return
    gap, relearn_after = gap_s(work.station, work.config), work.config.shortest_relearn_gap_s
    stopped: list[float | None] = []
    relearn: list[float] = []
    for t in times[start:]:
        if last is not None and t - last > gap:
            stopped.append(last)
            relearn.append(t - last if t - last >= relearn_after else math.nan)
        else:
            stopped.append(None)
            relearn.append(math.nan)
        last = t
    work.judgements.add_vectors(work.group_series(channel), anchor, times[start:], vectors[start:], stopped, relearn)
    gs.last_t = last


def detect_batch(readings: Sequence[Reading] | BatchColumns, states: Mapping[str, StationState | dict[str, Any] | None],
                 stations: Mapping[str, Station], config: DetectionConfig, live: LiveDetectors | None = None,
                 open_keys: OpenKeys | None = None, owned: bool = False, save_rows: bool = True, plain: bool = True
                 ) -> tuple[dict[str, StationState], list[Condition], list[Reading]]:
    """`detect` for every station in a batch (`Reading`s, or the worker's columns): (new state per station, conditions,
    late readings).

    Each station's readings are taken in arrival order for its windows and rules; the detectors then
    run once per engine bank over the whole batch (`processors.detection_banks`). Conditions come
    per station in reading order, then the detectors' per series in reading order (groups last).
    With `save_rows` False (and `live`), the detectors' rows stay in `live` and the states carry what
    they last saved: `live.save_rows` writes them in before a state is written out (the worker's snapshots).
    With `plain` False every station takes the scalar pass (`_station_pass`), the oracle of `processors.plain_pass`.
    """
    parts = split(as_columns(readings), states, stations, config.early_fraction, open_keys)
    return _judge_batch(parts, config, live, open_keys, owned, save_rows, plain)


def snapshot_states(cache: StateCache, live: LiveDetectors, station_ids: Iterable[str],
                    newer: Mapping[str, StationState] | None = None) -> dict[str, bytes]:
    """The snapshot bytes of these stations' kept states (or their `newer` ones, of a batch not yet committed) with
    their detectors' rows written in (`save_rows`); a station whose state is not kept (its batch failed, or a rebalance
    took it) is left out."""
    newer = newer or {}
    states = {i: state for i in station_ids if (state := newer.get(i) or cache.kept(i)) is not None}
    live.save_rows(states)
    return {i: encode_state(state) for i, state in states.items()}
