"""What detection keeps per station between batches, as typed records, and its versioned JSON form.

The worker keeps one `StationState` per station alive, and snapshots it in the store as the JSON of
`to_json` (`processors.worker_state`). Its
fields are plain numbers, strings, lists and dicts, so that a vectorised engine can map each field
to an array: per parameter, the time of its last reading, its open window buckets
(`processors.windows`), its rate-of-change bins (`processors.rate_span`), its open fault and
calibration runs, the incident its detectors share (`processors.incident`) and each detector's
own learned state (`Detector.state()`); per multivariate group, the time of its last complete
vector and the detector's state.

JSON versions (`version`):
- 1 (before the typed state): `{"v": 1, "newest", "late", "plan", "token", "p": {parameter: {"t", "w",
  "rate", "fault": [first, count], "cal": [run start, day start, day seconds], "claim": [detector,
  last flag], "det"}}, "mv": {"mv:A,B": detector state}, "mv_t": {"mv:A,B": last time}}`; a state
  with no version in that layout is read as version 1. `from_json` migrates it, so that what the
  detectors learned is kept.
- 2: the fields of `StationState` under their own names.
A state of any other version is dropped (`from_json` gives None) and detection starts afresh.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any, Iterable

import orjson

VERSION = 2
"""The version `to_json` writes; bump it (and migrate in `from_json`) when the layout changes."""

Json = dict[str, Any]


class RowJson:
    """A detector's learned state as the JSON text the worker's bank wrote for it (`processors.engine.row_json`).

    The worker writes its stations' states as JSON after every batch: a row's text goes into it as is
    (`to_json` gives it as an `orjson.Fragment`) and is parsed only if the state is read back.
    """

    __slots__ = ("raw",)

    def __init__(self, raw: bytes) -> None:
        self.raw = raw

    def value(self) -> Json:
        """The state as `Detector.state()` gives it."""
        parsed: Json = orjson.loads(self.raw)
        return parsed

    def __eq__(self, other: object) -> bool:
        return self.value() == (other.value() if isinstance(other, RowJson) else other)

    __hash__ = None  # type: ignore[assignment]  # equal to the dict it spells, which is unhashable


DetectorState = Json | RowJson


def plain(state: DetectorState | None) -> Json | None:
    """A detector's state as a dict, whichever form it is kept in."""
    return state.value() if isinstance(state, RowJson) else state


def _written(state: DetectorState | None) -> Json | orjson.Fragment | None:
    return orjson.Fragment(state.raw) if isinstance(state, RowJson) else state


@dataclass
class FaultRun:
    """A run of device-fault readings (status 02) of one parameter, still open."""

    first_t: float
    """Event time (epoch s) of the run's first fault reading."""
    count: int
    """How many fault readings in a row so far."""


@dataclass
class CalibrationRun:
    """Calibration time (status 01) of one parameter: the open run and the local day's total."""

    run_start_t: float | None
    """Event time (epoch s) the open calibration run began; None: not calibrating now."""
    day_start_t: float
    """Start (epoch s) of the local day `day_s` counts in."""
    day_s: float
    """Seconds calibrated so far on that day."""


@dataclass
class IncidentClaim:
    """The incident of one series: which detector opened it, when any detector last flagged, and whether it has
    ended (its alert resolved) and is in its refractory span."""

    detector: str
    last_flag_t: float
    ended: bool = False

    @classmethod
    def of(cls, claim: list[Any] | None) -> IncidentClaim | None:
        """From `processors.incident.join`'s `[detector, last flag time]` (and `True` once ended)."""
        return None if claim is None else cls(str(claim[0]), float(claim[1]), len(claim) > 2 and bool(claim[2]))

    def as_list(self) -> list[Any]:
        """In `processors.incident.join`'s form."""
        return [self.detector, self.last_flag_t, True] if self.ended else [self.detector, self.last_flag_t]


@dataclass
class ParameterState:
    """What detection keeps for one parameter of a station."""

    last_t: float | None = None
    """Event time (epoch s) of its newest in-order reading; None before the first."""
    windows: Json = field(default_factory=dict)
    """Open 5-min, 1-h and day buckets, in `processors.windows`' layout."""
    rate_bins: list[list[Any]] = field(default_factory=list)
    """Rate-of-change bins, in `processors.rate_span`' layout."""
    fault: FaultRun | None = None
    calibration: CalibrationRun | None = None
    """None until its first calibration reading."""
    incident: IncidentClaim | None = None
    detectors: dict[str, DetectorState] = field(default_factory=dict)
    """Per detector name: its learned state (`Detector.state()`, or its JSON text: `RowJson`)."""

    def to_json(self) -> Json:
        """The JSON form (version 2)."""
        return {"last_t": self.last_t, "windows": self.windows, "rate_bins": self.rate_bins,
                "fault": None if self.fault is None else {"first_t": self.fault.first_t, "count": self.fault.count},
                "calibration": None if self.calibration is None else {
                    "run_start_t": self.calibration.run_start_t, "day_start_t": self.calibration.day_start_t,
                    "day_s": self.calibration.day_s},
                "incident": None if self.incident is None else {
                    "detector": self.incident.detector, "last_flag_t": self.incident.last_flag_t,
                    "ended": self.incident.ended},
                "detectors": {name: _written(state) for name, state in self.detectors.items()}}

    @classmethod
    def from_json(cls, d: Json) -> ParameterState:
        """From the JSON form (version 2)."""
        fault, cal, incident = d.get("fault"), d.get("calibration"), d.get("incident")
        return cls(last_t=d.get("last_t"), windows=d.get("windows") or {}, rate_bins=d.get("rate_bins") or [],
                   fault=None if fault is None else FaultRun(fault["first_t"], fault["count"]),
                   calibration=None if cal is None else CalibrationRun(cal["run_start_t"], cal["day_start_t"], cal["day_s"]),
                   incident=None if incident is None else IncidentClaim(incident["detector"], incident["last_flag_t"],
                                                                        bool(incident.get("ended", False))),
                   detectors=d.get("detectors") or {})

    @classmethod
    def from_v1(cls, d: Json) -> ParameterState:
        """From a version-1 parameter entry (`t`, `w`, `rate`, `fault`, `cal`, `claim`, `det`)."""
        fault, cal = d.get("fault"), d.get("cal")
        return cls(last_t=d.get("t"), windows=d.get("w") or {}, rate_bins=d.get("rate") or [],
                   fault=None if fault is None else FaultRun(fault[0], fault[1]),
                   calibration=None if cal is None else CalibrationRun(cal[0], cal[1], cal[2]),
                   incident=IncidentClaim.of(d.get("claim")), detectors=d.get("det") or {})


@dataclass
class GroupState:
    """What detection keeps for one multivariate group of a station's parameters."""

    last_t: float | None = None
    """Event time (epoch s) of the newest complete vector scored; None before the first."""
    detector: DetectorState | None = None
    """The group's detector's learned state (`Detector.state()` or `RowJson`); None before it was built."""


@dataclass
class StationState:
    """Everything detection keeps for one station between batches."""

    newest_t: float | None = None
    """The station's newest event time (epoch s) seen: the watermark is this minus the lateness."""
    late_count: int = 0
    """Readings that came later than the lateness, counted since the state began."""
    plan: str | None = None
    """The `Plan.key` the detectors learned under: another key (a new preset) makes them start afresh."""
    token: str | None = None
    """Names the worker's live detectors that wrote this state (`processors.detection.LiveDetectors`)."""
    stored_through_us: int | None = None
    """The store transaction time (`readings.received_at`, epoch µs) of the newest batch this state has judged: a
    state read back from a snapshot replays the station's readings stored after it (`processors.pipeline`). None:
    unknown (a state written before snapshots), nothing is replayed."""
    parameters: dict[str, ParameterState] = field(default_factory=dict)
    groups: dict[str, GroupState] = field(default_factory=dict)
    """Per multivariate group, keyed by its parameters joined with commas ("COD,TSS,NH4")."""

    def parameter(self, symbol: str) -> ParameterState:
        """The parameter's state, created empty on its first reading."""
        ps = self.parameters.get(symbol)
        if ps is None:
            ps = self.parameters[symbol] = ParameterState()
        return ps

    def group(self, key: str) -> GroupState:
        """The group's state, created empty on its first use."""
        gs = self.groups.get(key)
        if gs is None:
            gs = self.groups[key] = GroupState()
        return gs

    def to_json(self) -> Json:
        """The JSON form, version `VERSION`; `token` only when set."""
        out: Json = {"version": VERSION, "newest_t": self.newest_t, "late_count": self.late_count, "plan": self.plan,
                     "parameters": {p: ps.to_json() for p, ps in self.parameters.items()},
                     "groups": {g: {"last_t": gs.last_t, "detector": _written(gs.detector)} for g, gs in self.groups.items()}}
        if self.token is not None:
            out["token"] = self.token
        if self.stored_through_us is not None:
            out["stored_through_us"] = self.stored_through_us
        return out

    @classmethod
    def from_json(cls, d: Json) -> StationState | None:
        """A state from its JSON form of any known version (migrated); None for an unknown version."""
        version = d.get("version")
        if version == VERSION:
            return cls(newest_t=d.get("newest_t"), late_count=d.get("late_count", 0), plan=d.get("plan"),
                       token=d.get("token"), stored_through_us=d.get("stored_through_us"),
                       parameters={p: ParameterState.from_json(ps) for p, ps in (d.get("parameters") or {}).items()},
                       groups={g: GroupState(gs.get("last_t"), gs.get("detector")) for g, gs in (d.get("groups") or {}).items()})
        if version is None and d.get("v", 1) == 1 and "p" in d:
            return cls.from_v1(d)
        return None

    @classmethod
    def from_v1(cls, d: Json) -> StationState:
        """Migrate a version-1 state (see the module's docstring); the detectors keep what they learned."""
        detectors: dict[str, Json] = d.get("mv") or {}
        times: dict[str, float | None] = d.get("mv_t") or {}
        groups = {key.removeprefix("mv:"): GroupState(times.get(key), detectors.get(key)) for key in dict.fromkeys([*times, *detectors])}
        return cls(newest_t=d.get("newest"), late_count=d.get("late", 0), plan=d.get("plan"), token=d.get("token"),
                   parameters={p: ParameterState.from_v1(ps) for p, ps in (d.get("p") or {}).items()}, groups=groups)

    def copy(self) -> StationState:
        """A deep copy (through JSON, as a snapshot would give it back)."""
        copied = StationState.from_json(orjson.loads(orjson.dumps(self.to_json())))
        assert copied is not None, "to_json writes the current version"
        return copied


class StateCache:
    """The detection state of the stations this worker judges, alive between batches.

    Reading a station's state back from its JSON before every batch, and copying it so that a failed
    batch leaves it as it was, cost about as much as the detectors themselves. The worker works on
    the state it kept, in place. A state it does not keep (the station's first batch on this worker,
    after a rebalance, or after a failed batch) is read from its stored snapshot
    (`processors.worker_state`). Between snapshots the kept state runs ahead of the stored one. A batch
    whose transaction fails must `forget` its stations: their kept state may be half-way through that
    batch; a rebalance must `clear` them all: another worker may have judged them meanwhile.
    """

    def __init__(self) -> None:
        self._kept: dict[str, StationState] = {}

    def kept(self, station_id: str) -> StationState | None:
        """The kept state of a station, if any."""
        return self._kept.get(station_id)

    def keep(self, station_id: str, state: StationState) -> None:
        """Keep `state` alive: the station's next batch works on it in place."""
        self._kept[station_id] = state

    def forget(self, station_ids: Iterable[str]) -> None:
        """Drop the kept states of these stations: their next batch reads the snapshot."""
        for station_id in station_ids:
            self._kept.pop(station_id, None)

    def clear(self) -> None:
        """Drop every kept state."""
        self._kept.clear()


def encode_state(state: StationState) -> bytes:
    """A state as the bytes of its snapshot."""
    return orjson.dumps(state.to_json())


def decode_state(raw: bytes) -> StationState | None:
    """A snapshot's state (None when it is of an unknown version)."""
    return StationState.from_json(orjson.loads(raw))


class SnapshotPlan:
    """Which stations' states the worker snapshots after a batch: each station judged since its last snapshot once
    every `interval_s`, at its own phase of the interval (so the writes trickle, a few stations a batch, instead of
    every station at once); a station with no snapshot yet at once (so a restart knows where to replay it from,
    `processors.pipeline`).

    Serialising every state after every batch cost about half of detection's time with small batches; between
    snapshots the worker's kept states (`StateCache.keep`) run ahead of the stored ones."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.dirty: set[str] = set()
        """Stations judged since their last snapshot."""
        self.written: dict[str, int] = {}
        """Per station, the period (of its own phase) of its last snapshot."""

    def period(self, station_id: str, now: float) -> int:
        """The station's snapshot period at monotonic time `now`: intervals shifted by a phase of its own."""
        phase = zlib.crc32(station_id.encode()) / 2**32 * self.interval_s
        return int((now + phase) // self.interval_s)

    def due(self, judged: Iterable[str], unwritten: Iterable[str], now: float) -> set[str]:
        """The stations to snapshot after a batch that judged `judged` (`unwritten`: those with no snapshot yet), at
        monotonic time `now`. A station first seen with a snapshot counts as written in this period."""
        unwritten = set(unwritten)
        for station_id in judged:
            self.dirty.add(station_id)
            if station_id not in unwritten:
                self.written.setdefault(station_id, self.period(station_id, now))
        due = set()
        for station_id in self.dirty:
            period = self.period(station_id, now)
            if station_id in unwritten or self.written.get(station_id) != period:
                self.written[station_id] = period
                due.add(station_id)
        self.dirty -= due
        return due


def load(state: StationState | Json | None) -> StationState | None:
    """The caller's state as a new `StationState` (theirs stays as it was); None when absent or of an unknown version."""
    if state is None:
        return None
    if isinstance(state, StationState):
        return state.copy()
    return StationState.from_json(orjson.loads(orjson.dumps(state)))
