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
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Mapping, Sequence

import orjson

from alerts.rules import (
    Condition,
    OpenKeys,
    in_range,
    judge_anomaly,
    judge_calibration,
    judge_data_stopped,
    judge_fault,
    judge_limit,
    judge_range,
    judge_rate,
)
from processors import rate_span, windows
from processors.detection_state import CalibrationRun, FaultRun, IncidentClaim, ParameterState, StationState, load
from processors.detectors import DETECTORS, Detector
from processors.detectors.presets import hyperparameters, params_of, station_channels
from processors.incident import Judged, join
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
    incident_hold_s: float = 900.0
    """How long all detectors of a series must be clear before a new anomaly is a new incident (the alerts' clear hold)."""
    detectors: tuple[str, ...] = ("spike", "drift", "flatline", "multivariate")
    """The detectors the worker may run: a station's channel naming another is left out."""
    detector_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Hyperparameters of the channels that give none (the generic channels of the kind presets)."""

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
                   relearn_gap_s=s.detect_relearn_gap_s, incident_hold_s=s.alert_clear_hold_s, detectors=names)


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
            [{p: [c.model_dump() for c in cs] for p, cs in scalar.items()}, [c.model_dump() for c in vector],
             config.detector_params], option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]
        return cls(scalar, vector, key)


_PLANS: dict[int, tuple[Station, DetectionConfig, Plan]] = {}


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


def _threshold(det: Detector) -> float:
    for attr in ("threshold", "h", "n_intervals"):
        if hasattr(det, attr):
            return float(getattr(det, attr))
    return 0.0


class _Run:
    """The detectors of one station, built from their saved state once per batch and saved back at its end."""

    def __init__(self, state: StationState, config: DetectionConfig, open_keys: OpenKeys | None = None) -> None:
        self.state, self.config, self.open_keys = state, config, open_keys
        self.live: dict[tuple[str, str], Detector] = {}

    def get(self, parameter: str, channel: DetectorChannel, specs: list[ParameterSpec]) -> Detector:
        key = (parameter, channel.detector)
        if key not in self.live:
            saved = self._saved(parameter, channel.detector)
            params = detector_params(channel, specs, self.config)
            cls = DETECTORS[channel.detector]
            self.live[key] = cls.from_state(saved, **params) if saved is not None else cls(**params)
        return self.live[key]

    def _saved(self, parameter: str, name: str) -> dict[str, Any] | None:
        """A detector's saved state: per parameter, or per multivariate group (`parameter` is `mv:COD,TSS,NH4`)."""
        if parameter.startswith("mv:"):
            return self.state.group(parameter.removeprefix("mv:")).detector
        return self.state.parameters[parameter].detectors.get(name)

    def save(self) -> None:
        """Write every live detector's state back into the station's state."""
        for (parameter, name), det in self.live.items():
            if parameter.startswith("mv:"):
                self.state.group(parameter.removeprefix("mv:")).detector = det.state()
            else:
                self.state.parameters[parameter].detectors[name] = det.state()


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


LiveDetectors = dict[str, tuple[str, dict[tuple[str, str], Detector]]]
"""Per station: the token of the state its detectors were saved into, and those detectors, alive.

Building detectors from their JSON state (numpy arrays from lists) cost about an eighth of the
worker's time when each batch brings a station one reading per parameter. The worker keeps the
detectors of its last batch and reuses them when the next state it is handed carries the same
token, that is, when the state is the one these detectors wrote (not a retried batch's older state,
nor one written meanwhile by another worker): the result is the same as building them afresh."""


def _prepare(state: StationState | dict[str, Any] | None, station: Station, config: DetectionConfig,
             live: LiveDetectors | None, open_keys: OpenKeys | None, owned: bool) -> tuple[StationState, Plan, _Run]:
    """The station's state to work on (a copy, so the caller's stays as it was, unless `owned`), its plan,
    and its detectors.

    A state of an unknown version starts afresh; a state learned under another plan (another preset
    or channels) keeps its windows and rule runs but its detectors start afresh. The worker's live
    detectors are taken when the state is the one they wrote (`LiveDetectors`).
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
    run = _Run(current, config, open_keys)
    kept = live.get(station.id) if live is not None else None
    if kept is not None and loaded is not None and not replanned and current.token == kept[0]:
        run.live = kept[1]
    return current, plan, run


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


def _in_order(run: _Run, plan: Plan, r: Reading, spec: ParameterSpec, value: float | None, t: float,
              station: Station, config: DetectionConfig) -> list[Condition]:
    """Rules that need order on a reading newer than its parameter's last: gap, status runs, rate, detectors."""
    ps = run.state.parameters[r.parameter]
    found: list[Condition] = []
    if ps.last_t is not None and t - ps.last_t > gap_s(station, config):
        found.extend(_relearn_after_gap(run, plan, station, spec, config, ps.last_t, r.ts))
    ps.last_t = t
    found.extend(_status_rules(ps, r, station, config, t, run.open_keys))
    if value is None:
        return found
    _add(found, _rate(ps, station, spec, config, t, value, r.ts, run.open_keys))
    judged = []
    for channel in plan.scalar[r.parameter]:
        det = run.get(r.parameter, channel, [spec])
        judged.append(Judged(det.update(value, r.ts), _threshold(det)))
    claim, judged = join(None if ps.incident is None else ps.incident.as_list(), judged, t, config.incident_hold_s)
    ps.incident = IncidentClaim.of(claim)
    for j in judged:
        _add(found, judge_anomaly(station, r.parameter, j.verdict.kind, j.verdict.is_anomaly, value, j.verdict.score,
                                  j.threshold, j.verdict.detail, r.ts, open_keys=run.open_keys))
    return found


def detect(state: StationState | dict[str, Any] | None, readings: Sequence[Reading], station: Station,
           config: DetectionConfig, live: LiveDetectors | None = None, open_keys: OpenKeys | None = None,
           owned: bool = False) -> Outcome:
    """New state and conditions after the station's new readings, taken in arrival order.

    `state` is the station's state from its last batch, as a `StationState` or its JSON (of any
    version `StationState.from_json` reads); None or an unknown version: start afresh. `live` (the
    worker's, see `LiveDetectors`) is read and updated; without it the state carries no token. With
    `open_keys` (`alerts.rules.OpenKeys`), a clear condition is found only for a key in it. An `owned`
    `StationState` is worked on in place (`processors.detection_state.StateCache`), not copied.
    """
    current, plan, run = _prepare(state, station, config, live, open_keys, owned)
    found: list[Condition] = []
    late: list[Reading] = []
    by_ts: dict[float, dict[str, float]] = defaultdict(dict)
    next_close = -math.inf  # no bucket of any parameter closes before this watermark (see _due)
    for r in readings:
        spec = station.parameter(r.parameter)
        if spec is None:
            continue
        t = windows.epoch(r.ts)
        newest = current.newest_t
        is_late = newest is not None and t < newest - config.lateness_s
        current.newest_t = t if newest is None else max(newest, t)
        ps = current.parameter(r.parameter)
        in_order = ps.last_t is None or t > ps.last_t
        value = _instant(r, spec, station, config, found, open_keys)
        if is_late:
            current.late_count += 1
            late.append(r)
            continue
        touched = windows.add(ps.windows, r.ts, value, station.expected_interval_s, t)
        if in_order:
            found.extend(_in_order(run, plan, r, spec, value, t, station, config))
            if value is not None:
                by_ts[t][r.parameter] = value
        next_close = _close_due(current, station, config, r.parameter, touched, next_close, found, open_keys)
    found.extend(_multivariate(current, run, plan, by_ts, station, config))
    run.save()
    if live is None:
        current.token = None
    else:
        current.token = os.urandom(8).hex()
        live[station.id] = (current.token, run.live)
    return Outcome(current, found, late)


def _close_due(state: StationState, station: Station, config: DetectionConfig, parameter: str, touched: windows.Touched,
               next_close: float, found: list[Condition], open_keys: OpenKeys | None) -> float:
    """Judge the window means due after a reading of `parameter` that counted in the `touched` buckets;
    the new `next_close` (see `_due`).

    While the watermark is before `next_close` no bucket is closed, and every bucket due before this
    reading was judged at its own reading: only the touched buckets can be due, by being complete, and
    only they can end before `next_close` (a bucket is made only by the reading it counts)."""
    watermark = (state.newest_t or 0.0) - config.lateness_s
    if watermark >= next_close:
        found.extend(_due(state, station, config, list(state.parameters), open_keys))
        return min((windows.earliest_end(ps.windows) for ps in state.parameters.values()), default=math.inf)
    found.extend(_judge_means(station, parameter, windows.complete(touched, config.min_coverage), config, open_keys))
    return min(next_close, *(entry[windows.END] for _, _, entry in touched))


def gap_s(station: Station, config: DetectionConfig) -> float:
    """A silence longer than this (event time) in a series is a gap: its alerts close and its detectors relearn."""
    return max(config.gap_intervals * station.expected_interval_s, config.gap_min_s)


def _relearn_after_gap(run: "_Run", plan: Plan, station: Station, spec: ParameterSpec, config: DetectionConfig, last_t: float,
                       resumed: datetime) -> list[Condition]:
    """After a gap: the parameter's anomaly and rate alerts close at the last reading before it (`data_stopped`),
    and, when it lasted `relearn_gap_s` or more, its detectors relearn. Multivariate groups do the same in `_multivariate`.

    A short outage (an hour) leaves the baselines valid, and relearning would blind the detectors for
    their warm-up; a new level after it is accepted by the detectors' own `relearn_after`.
    """
    last = windows.from_epoch(last_t)
    silent_s = windows.epoch(resumed) - last_t
    run.state.parameters[spec.symbol].incident = None
    found: list[Condition] = []
    for channel in plan.scalar[spec.symbol]:
        if silent_s >= config.relearn_gap_s:
            run.get(spec.symbol, channel, [spec]).relearn(silent_s)
        _add(found, judge_data_stopped(station, spec.symbol, f"anomaly_{channel.detector}", last, resumed,
                                       open_keys=run.open_keys))
    if spec.max_rate_per_min is not None:
        _add(found, judge_data_stopped(station, spec.symbol, "rate_of_change", last, resumed, open_keys=run.open_keys))
    return found


def rate_span_s(station: Station, spec: ParameterSpec, config: DetectionConfig) -> float:
    """The span a parameter's rate of change is judged over: its own, else the worker's, and never under the station's interval."""
    return max(spec.rate_span_s or config.rate_span_s, float(station.expected_interval_s))


def _rate(ps: ParameterState, station: Station, spec: ParameterSpec, config: DetectionConfig, t: float, value: float,
          ts: datetime, open_keys: OpenKeys | None) -> Condition | None:
    """`rate_of_change` between robust levels about a span apart (`processors.rate_span`); None while warming up."""
    if spec.max_rate_per_min is None:
        return None
    ps.rate_bins = rate_span.add(ps.rate_bins, t, value, rate_span_s(station, spec, config))
    found = rate_span.levels(ps.rate_bins)
    if found is None:
        return None
    return judge_rate(station, spec, windows.from_epoch(found.from_t), found.from_level, windows.from_epoch(found.to_t),
                      found.to_level, at=ts, smoothed=True, open_keys=open_keys)


def _due(state: StationState, station: Station, config: DetectionConfig, parameters: list[str],
         open_keys: OpenKeys | None) -> list[Condition]:
    """Judge the means that are due among `parameters`' windows.

    Called after every reading, so the result does not depend on how readings were cut into
    batches (replay = live). A bucket becomes due when it is complete, which only a reading of
    its own parameter can make it, or when the watermark passes its end; so between closings
    only the reading's own parameter needs a look.
    """
    watermark = (state.newest_t or 0.0) - config.lateness_s
    found: list[Condition] = []
    for parameter in parameters:
        found.extend(_judge_means(station, parameter, windows.due(state.parameters[parameter].windows, watermark,
                                                                  config.min_coverage), config, open_keys))
    return found


def _judge_means(station: Station, parameter: str, means: list[windows.WindowMean], config: DetectionConfig,
                 open_keys: OpenKeys | None) -> list[Condition]:
    return [c for mean in means for c in judge_limit(station, parameter, mean.mean, mean.start, mean.basis,
                                                     config.early_fraction, open_keys=open_keys)]


def _multivariate(state: StationState, run: _Run, plan: Plan, by_ts: dict[float, dict[str, float]], station: Station,
                  config: DetectionConfig) -> list[Condition]:
    """Score the batch's complete vectors of each multivariate group, in event-time order, newer than its last."""
    found: list[Condition] = []
    for channel in plan.vector:
        group = channel.columns or ()
        key = "mv:" + ",".join(group)
        last = state.group(",".join(group)).last_t
        for t in sorted(by_ts):
            values = by_ts[t]
            if (last is not None and t <= last) or not all(p in values for p in group):
                continue
            det = run.get(key, channel, [station.parameters[p] for p in group])
            if last is not None and t - last > gap_s(station, config):
                if t - last >= config.relearn_gap_s:
                    det.relearn(t - last)
                _add(found, judge_data_stopped(station, ",".join(group), f"anomaly_{channel.detector}",
                                               windows.from_epoch(last), windows.from_epoch(t), open_keys=run.open_keys))
            v = det.update({p: values[p] for p in group}, windows.from_epoch(t))
            _add(found, judge_anomaly(station, ",".join(group), v.kind, v.is_anomaly, None, v.score, _threshold(det),
                                      v.detail, windows.from_epoch(t), open_keys=run.open_keys))
            last = t
        state.group(",".join(group)).last_t = last
    return found


def detect_batch(readings: Sequence[Reading], states: Mapping[str, StationState | dict[str, Any] | None],
                 stations: Mapping[str, Station], config: DetectionConfig, live: LiveDetectors | None = None,
                 open_keys: OpenKeys | None = None, owned: bool = False
                 ) -> tuple[dict[str, StationState], list[Condition], list[Reading]]:
    """`detect` for every station in a batch: (new state per station, conditions, late readings)."""
    by_station: dict[str, list[Reading]] = defaultdict(list)
    for r in readings:
        by_station[r.station_id].append(r)
    new_states: dict[str, StationState] = {}
    conditions: list[Condition] = []
    late: list[Reading] = []
    for station_id, rs in by_station.items():
        station = stations.get(station_id)
        if station is None:
            continue
        outcome = detect(states.get(station_id), rs, station, config, live, open_keys, owned)
        new_states[station_id] = outcome.state
        conditions.extend(outcome.conditions)
        late.extend(outcome.late)
    return new_states, conditions, late
