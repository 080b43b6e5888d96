"""Plausible station data with known incidents: a seeded, pure generator and its ground truth.

Nothing here does I/O, so detection can be scored without a broker:

    incidents = random_incidents(stations, start, timedelta(days=1), seed=7)
    for message in generate(stations, start, timedelta(days=1), seed=7, incidents=incidents):
        ...  # message.readings: one station at one event time; message.deliver_at >= message.ts
    truth = [ground_truth(i, stations) for i in incidents]   # what each incident should cause

The same arguments give the same stream. Each series (station, parameter) is its typical value
(`BASELINES`) shaped by a daily cycle and the factory's shift pattern (day shifts 06–22 run fuller
than the night shift, Sundays lighter), plus AR(1) noise, so neighbouring values are correlated
as real analyser output is. Values are rounded to the parameter's usual decimals (`Baseline.decimals`).

Incidents (`Incident.kind`):
- on values: `exceedance` (held at `magnitude` x the limit), `spike` (one reading at `magnitude` x
  typical), `drift` (a linear ramp from normal to `magnitude` x the limit at `end`), `spill` (a jump
  to `magnitude` x the limit decaying back with a time constant of a third of the window);
- on status: `calibration` (status 01), `fault` (status 02, no value), `stuck` (the value freezes);
- on delivery (whole station when `parameter` is None): `silent` (nothing sent), `late` (everything
  of the window delivered at its end, oldest first), `out_of_order` (each message delayed by a
  random 0–2 intervals, so later ones can arrive first), `clock` (the gateway's clock is wrong: every
  message is delivered on time but stamped with the window's start when `magnitude` is 0, a stopped
  clock, or `magnitude` hours early, e.g. 7 for UTC time marked +07:00).
"""

from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Iterable, Iterator, Literal, Mapping
from zoneinfo import ZoneInfo

from quantrac.domain import ParameterSpec, Reading, Station, Status
from quantrac.settings import Settings

VN = ZoneInfo("Asia/Ho_Chi_Minh")

IncidentKind = Literal["exceedance", "spike", "drift", "spill", "calibration", "fault", "stuck",
                       "silent", "late", "out_of_order", "clock"]
VALUE_KINDS: tuple[IncidentKind, ...] = ("exceedance", "spike", "drift", "spill")
STATUS_KINDS: tuple[IncidentKind, ...] = ("calibration", "fault", "stuck")
DELIVERY_KINDS: tuple[IncidentKind, ...] = ("silent", "late", "out_of_order")
CLOCK_KINDS: tuple[IncidentKind, ...] = ("clock",)
"""Not among `random_incidents`' default kinds: while a station's clock is wrong its readings are stored at the wrong time
or refused, so another incident under it could not be told; clock faults are drawn apart (`with_clock_faults`)."""
CLOCK_MARGIN = timedelta(hours=2)
"""How far a clock fault is kept from any other incident of its station: once the clock is set right, the detectors
relearn after the gap it left."""


@dataclass(frozen=True)
class Baseline:
    """Normal operation of one parameter (illustrative values for the seed province's zones).

    `daily` is the relative amplitude of the daily cycle (peak mid-afternoon), `shift` how much the
    value follows the production load (1: proportional, 0: not at all), `phi` the AR(1) memory of
    the noise, `decimals` how analysers usually report it.
    """

    mean: float
    sd: float
    daily: float = 0.05
    shift: float = 0.0
    phi: float = 0.8
    decimals: int = 2


BASELINES: dict[str, Baseline] = {
    "Flow": Baseline(120.0, 8.0, daily=0.10, shift=0.6, decimals=1),
    "Temp": Baseline(29.0, 0.4, daily=0.04, shift=0.05, phi=0.95, decimals=1),
    "pH": Baseline(7.2, 0.08, daily=0.0, shift=0.0, phi=0.9, decimals=2),
    "TSS": Baseline(30.0, 4.0, shift=0.3, decimals=1),
    "COD": Baseline(55.0, 5.0, shift=0.3, decimals=1),
    "NH4": Baseline(3.0, 0.4, shift=0.2, decimals=2),
    "Color": Baseline(40.0, 4.0, shift=0.3, decimals=0),
    "TN": Baseline(12.0, 1.2, shift=0.2, decimals=2),
    "TP": Baseline(1.5, 0.2, shift=0.2, decimals=2),
    "P": Baseline(101.3, 0.3, daily=0.002, phi=0.95, decimals=2),
    "O2": Baseline(8.0, 0.4, shift=-0.2, decimals=2),
    "PM": Baseline(60.0, 6.0, shift=0.4, decimals=1),
    "SO2": Baseline(180.0, 15.0, shift=0.4, decimals=1),
    "NO2": Baseline(300.0, 25.0, shift=0.4, decimals=1),
    "CO": Baseline(250.0, 30.0, shift=0.3, decimals=1),
}
DEFAULT_BASELINE = Baseline(10.0, 1.0)
NORMAL_CEILING: float = Settings.model_fields["detect_early_warning_fraction"].default
"""Normal operation peaks (daily cycle at its top, four standard deviations of noise) at most at this share of a
one-sided upper limit: the early warning's default share (`QUANTRAC_DETECT_EARLY_WARNING_FRACTION`), so the
simulator's normal data opens no alert where the generic baseline would sit near a strict limit (COD 55 mg/L
against Đại An's column-A limit of 67.5)."""


def station_baseline(symbol: str, spec: ParameterSpec) -> Baseline:
    """The baseline of `symbol` at a station: the generic one, scaled down (mean and noise alike) where its normal
    peak would pass `NORMAL_CEILING` of the station's one-sided upper limit (where the early warning applies)."""
    base = BASELINES.get(symbol, DEFAULT_BASELINE)
    limit = spec.limit
    if limit is None or limit.high is None or limit.high <= 0 or limit.low is not None:
        return base
    peak = base.mean * (1 + abs(base.daily)) + 4 * base.sd
    if peak <= NORMAL_CEILING * limit.high:
        return base
    scale = NORMAL_CEILING * limit.high / peak
    return replace(base, mean=base.mean * scale, sd=base.sd * scale)


def load_factor(ts: datetime) -> float:
    """Production load at `ts` (local time): 1.0 on day shifts (06–22), 0.6 at night, 0.7 on Sundays."""
    local = ts.astimezone(VN)
    load = 1.0 if 6 <= local.hour < 22 else 0.6
    return load * (0.7 if local.weekday() == 6 else 1.0)


def day_phase(ts: datetime) -> tuple[float, float]:
    """(daily-cycle sine, production load) at `ts`, the two inputs of `normal_level`."""
    local = ts.astimezone(VN)
    hour = local.hour + local.minute / 60 + local.second / 3600
    return math.sin(2 * math.pi * (hour - 9) / 24), load_factor(ts)


def normal_level(base: Baseline, ts: datetime, phase: tuple[float, float] | None = None) -> float:
    """The noiseless normal value at `ts`: daily cycle (peak at 15:00 local) and shift pattern."""
    sine, load = phase or day_phase(ts)
    return base.mean * (1 + base.daily * sine) * (1 + base.shift * (load - 1))


def reference_limit(spec: ParameterSpec, base: Baseline) -> float:
    """The level incidents are scaled to: the station's limit, else twice the typical value."""
    if spec.limit is not None and spec.limit.high is not None:
        return spec.limit.high
    return 2 * base.mean


@dataclass(frozen=True)
class Incident:
    """Something that happens to a station (or one of its parameters) during [start, end)."""

    station: str
    parameter: str | None
    kind: IncidentKind
    start: datetime
    end: datetime
    magnitude: float = 1.5
    """How strong: a multiple of the limit or of the typical value (see the module's list); for `clock`, the hours
    the stamped times run behind (0: a clock stopped at the incident's start)."""
    value: float | None = None
    """A fixed value for `exceedance` instead of `magnitude` x the limit (e.g. `simulate --inject`)."""

    def active(self, ts: datetime) -> bool:
        """Whether the incident is under way at event time `ts` (start included, end excluded)."""
        return self.start <= ts < self.end

    def applies(self, station_id: str, parameter: str | None) -> bool:
        """Whether it touches `parameter` of `station_id`; an incident without a parameter touches all of its station's."""
        return self.station == station_id and (self.parameter is None or self.parameter == parameter)


def ground_truth(incident: Incident, stations: Mapping[str, Station]) -> dict[str, object]:
    """One ground-truth record (a JSON line): the incident and the effect a detector should see."""
    station = stations.get(incident.station)
    spec = station.parameters.get(incident.parameter) if station and incident.parameter else None
    base = (station_baseline(incident.parameter, spec) if spec and incident.parameter
            else BASELINES.get(incident.parameter or "", DEFAULT_BASELINE))
    limit = reference_limit(spec, base) if spec else None
    k, m = incident.kind, incident.magnitude
    expected: dict[str, object]
    if k == "exceedance":
        expected = {"value": incident.value if incident.value is not None else round((limit or 0) * m, 6),
                    "limit": limit, "above_limit": True, "rule": "exceedance"}
    elif k == "spike":
        expected = {"value": round(base.mean * m, 6), "readings": 1, "limit": limit,
                    "above_limit": bool(limit is not None and base.mean * m > limit), "rule": "anomaly"}
    elif k == "drift":
        expected = {"value_at_end": round((limit or 0) * m, 6), "limit": limit, "shape": "linear ramp", "rule": "drift"}
    elif k == "spill":
        expected = {"peak": round((limit or 0) * m, 6), "limit": limit, "shape": "jump then exponential decay",
                    "rule": "exceedance"}
    elif k == "calibration":
        expected = {"status": Status.CALIBRATING.value, "excluded_from_compliance": True}
    elif k == "fault":
        expected = {"status": Status.FAULT.value, "value": None}
    elif k == "stuck":
        expected = {"constant_value": True, "rule": "stuck"}
    elif k == "silent":
        expected = {"no_data": True, "rule": "silent_station"}
    elif k == "late":
        expected = {"delivered_at": incident.end.isoformat(), "stored": True}
    elif k == "clock":
        expected = {"stamped": "stopped at the start" if m == 0 else f"{m:g} h behind", "rule": "station_clock"}
    else:
        expected = {"out_of_order": True, "stored": True}
    return {"station": incident.station, "parameter": incident.parameter, "kind": k,
            "start": incident.start.isoformat(), "end": incident.end.isoformat(), "magnitude": m,
            "expected": expected}


def incident_from_truth(record: Mapping[str, object]) -> Incident:
    """The incident of one ground-truth record (a line written by `ground_truth`), for scoring from the log.

    What scoring needs comes back exactly (station, parameter, kind, start, end, magnitude); an
    exceedance's fixed `value` does not, since the record gives every exceedance its expected value.
    """
    return Incident(str(record["station"]), None if record["parameter"] is None else str(record["parameter"]),
                    record["kind"], datetime.fromisoformat(str(record["start"])),  # type: ignore[arg-type]  # record is an untyped ground-truth line; its kind was written from an Incident, so it is an IncidentKind
                    datetime.fromisoformat(str(record["end"])), float(record["magnitude"]))  # type: ignore[arg-type]  # record is an untyped ground-truth line; its magnitude was written from an Incident's float


@dataclass(frozen=True)
class Message:
    """One station's readings at one event time, and when (event time) the gateway delivers them."""

    station_id: str
    ts: datetime
    deliver_at: datetime
    readings: list[Reading]


@dataclass
class _Series:
    base: Baseline
    spec: ParameterSpec
    noise: float = 0.0
    stuck_at: float | None = None

    def __post_init__(self) -> None:
        self.innovation = math.sqrt(1 - self.base.phi ** 2)
        self.low = self.spec.range_min if self.spec.range_min is not None else 0.0


@dataclass
class _StationClock:
    next_ts: datetime
    station_id: str
    interval: timedelta = field(compare=False)

    def __lt__(self, other: _StationClock) -> bool:
        return (self.next_ts, self.station_id) < (other.next_ts, other.station_id)


def generate(stations: Mapping[str, Station], start: datetime, duration: timedelta, seed: int,
             incidents: Iterable[Incident] = (), interval: timedelta | None = None) -> Iterator[Message]:
    """Every message of `stations` in [start, start + duration), in the order its readings are taken (pure, seeded).

    Each station reports every `interval` (default its `expected_interval_s`), at a seeded phase
    within its first interval. Delivery incidents only move `deliver_at` (or drop the message), a
    `clock` incident only the stamped `ts`; sort by `deliver_at` to replay the stream as the gateways
    would send it.
    """
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware")
    rng = random.Random(seed)
    end = start + duration
    incidents = list(incidents)
    series = {(s.id, sym): _Series(station_baseline(sym, spec), spec)
              for s in stations.values() for sym, spec in s.parameters.items()}
    clocks: list[_StationClock] = []
    for s in stations.values():
        step = interval or timedelta(seconds=s.expected_interval_s)
        phase = timedelta(microseconds=int(rng.random() * step.total_seconds() * 1e6))
        clocks.append(_StationClock(_tick(start + phase, step), s.id, step))
    heapq.heapify(clocks)
    while clocks:
        clock = heapq.heappop(clocks)
        ts = clock.next_ts
        if ts >= end:
            continue
        clock.next_ts = _tick(ts + clock.interval, clock.interval)
        heapq.heappush(clocks, clock)
        station = stations[clock.station_id]
        here = [i for i in incidents if i.station == station.id and i.active(ts)]
        sun = day_phase(ts)
        stamped = _stamped(ts, clock.interval, here)
        readings = [_reading(station, sym, series[(station.id, sym)], ts, stamped, sun, here, rng) for sym in station.parameters]
        deliver_at = ts
        if any(i.kind == "silent" and i.parameter is None for i in here):
            continue
        for i in here:
            if i.kind == "late" and i.parameter is None:
                deliver_at = max(deliver_at, i.end)
            elif i.kind == "out_of_order" and i.parameter is None:
                deliver_at = max(deliver_at, ts + clock.interval * (2 * rng.random()))
        yield Message(station.id, stamped, deliver_at, readings)


def _stamped(ts: datetime, step: timedelta, here: list[Incident]) -> datetime:
    """The time a gateway writes on the readings it takes at `ts`: `ts` unless a `clock` incident has its clock wrong."""
    for i in here:
        if i.kind == "clock" and i.parameter is None:
            return _tick(i.start, step) if i.magnitude == 0 else ts - timedelta(hours=i.magnitude)
    return ts


def _whole_ms(ts: datetime) -> datetime:
    return ts.replace(microsecond=ts.microsecond // 1000 * 1000)


def _tick(ts: datetime, step: timedelta) -> datetime:
    """Event times in whole seconds (what TT10 files can carry) unless stations report faster than that."""
    return ts.replace(microsecond=0) if step >= timedelta(seconds=1) else _whole_ms(ts)


def _reading(station: Station, symbol: str, s: _Series, ts: datetime, stamped: datetime, phase: tuple[float, float],
             here: list[Incident], rng: random.Random) -> Reading:
    """The reading of `symbol` taken at `ts` (its value follows `ts`), stamped with the gateway's time `stamped`."""
    base = s.base
    s.noise = base.phi * s.noise + s.innovation * rng.gauss(0.0, base.sd)
    value: float | None = normal_level(base, ts, phase) + s.noise
    status = Status.MEASURING
    mine = [i for i in here if i.parameter == symbol] if here else []
    limit = reference_limit(s.spec, base)
    for i in mine:
        value = _incident_value(i, value, s, limit, ts, station)
        if i.kind == "calibration" and status is not Status.FAULT:
            status = Status.CALIBRATING
        elif i.kind == "fault":
            status = Status.FAULT
    if mine and any(i.kind == "stuck" for i in mine):
        s.stuck_at = value if s.stuck_at is None else s.stuck_at
        value = s.stuck_at
    else:
        s.stuck_at = None
    if status is Status.FAULT:
        value = None
    elif value is not None:
        value = round(max(value, s.low), base.decimals)
    # Built without re-validation: every field is made here from validated registry data.
    return Reading.model_construct(station_id=station.id, parameter=symbol, value=value, unit=s.spec.unit, ts=stamped,
                                   status=status)


def _incident_value(i: Incident, value: float | None, s: _Series, limit: float, ts: datetime, station: Station) -> float | None:
    """The value an exceedance, spike, drift or spill makes of the normal one at `ts`."""
    base = s.base
    if i.kind == "exceedance":
        return i.value if i.value is not None else limit * i.magnitude + abs(s.noise)
    if i.kind == "spike" and _first_slot(i, ts, station):
        return base.mean * i.magnitude
    if i.kind == "drift":
        progress = (ts - i.start) / (i.end - i.start)
        return (value or 0.0) + (limit * i.magnitude - base.mean) * progress
    if i.kind == "spill":
        tau = (i.end - i.start) / 3
        return (value or 0.0) + (limit * i.magnitude - base.mean) * math.exp(-((ts - i.start) / tau))
    return value


def _first_slot(incident: Incident, ts: datetime, station: Station) -> bool:
    return ts - incident.start < timedelta(seconds=station.expected_interval_s)


def random_incidents(stations: Mapping[str, Station], start: datetime, duration: timedelta, seed: int,
                     per_station_per_day: float = 2.0,
                     kinds: tuple[IncidentKind, ...] = VALUE_KINDS + STATUS_KINDS + DELIVERY_KINDS) -> list[Incident]:
    """Seeded incidents, about `per_station_per_day` per station, each 15 min to 3 h long (a spike: one slot; a wrong
    clock: 2 to 12 h)."""
    rng = random.Random(seed ^ 0x5EED)
    incidents: list[Incident] = []
    days = duration / timedelta(days=1)
    for station in sorted(stations.values(), key=lambda s: s.id):
        count = _poisson(rng, per_station_per_day * days)
        for _ in range(count):
            kind = rng.choice(kinds)
            begin = start + duration * rng.random()
            length = timedelta(minutes=rng.uniform(15, 180))
            if kind == "spike":
                length = timedelta(seconds=station.expected_interval_s)
            parameter = None if kind in DELIVERY_KINDS + CLOCK_KINDS else rng.choice(sorted(station.parameters))
            magnitude = {"exceedance": 1.5, "spike": 8.0, "drift": 1.4, "spill": 3.0}.get(kind, 1.0)
            if kind == "clock":  # a wrong clock lasts until someone sets it right: hours, not minutes
                length = timedelta(hours=rng.uniform(2, 12))
                magnitude = rng.choice((0.0, 7.0))
            incidents.append(Incident(station.id, parameter, kind, _whole_ms(begin),
                                      _whole_ms(min(begin + length, start + duration)), magnitude))
    return sorted(incidents, key=lambda i: (i.start, i.station))


def with_clock_faults(incidents: list[Incident], stations: Mapping[str, Station], start: datetime, duration: timedelta,
                      seed: int, per_station_per_day: float) -> list[Incident]:
    """`incidents` and seeded gateway clock faults (`CLOCK_KINDS`, seed + 1), each at least `CLOCK_MARGIN` from any
    other incident of its station (those that would come nearer are dropped), in order of start."""
    clocks = random_incidents(stations, start, duration, seed + 1, per_station_per_day, kinds=CLOCK_KINDS)
    return sorted(incidents + apart_from(clocks, incidents, CLOCK_MARGIN), key=lambda i: (i.start, i.station))


def apart_from(incidents: Iterable[Incident], others: Iterable[Incident], margin: timedelta) -> list[Incident]:
    """Those of `incidents` that come no nearer than `margin` to any of `others`, nor to one kept before them, at the
    same station."""
    kept: list[Incident] = []
    taken = list(others)
    for i in incidents:
        if not any(o.station == i.station and o.start < i.end + margin and i.start < o.end + margin for o in taken):
            kept.append(i)
            taken.append(i)
    return kept


def _poisson(rng: random.Random, lam: float) -> int:
    threshold, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= threshold:
            return k
        k += 1
