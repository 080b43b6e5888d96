"""Decode and validate one MQTT message against the topic and payload contract.

Contract (README, "Topic and payload"): topic `quantrac/v1/stations/{station_id}/readings`,
JSON `{"ts": ISO-8601 with offset, "readings": [{"parameter", "value", "unit", "status"}]}`.

A message-level fault rejects the whole message; a reading-level fault rejects only that
reading, so one bad value never costs the station its valid ones. Every rejection carries a
reason code (see `quantrac.domain.ReasonCode`) and a message naming the station, the
parameter and the fix.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import orjson

from quantrac.domain import Reading, ReasonCode, Station, Status
from quantrac.safe_text import safe_text
from quantrac.wire import DEADLETTER_PAYLOAD_CAP

if TYPE_CHECKING:
    from quantrac.settings import Settings

TOPIC_PATTERN = re.compile(r"^quantrac/v1/stations/(?P<station>[^/+#]+)/readings$")
SUBSCRIPTION = "quantrac/v1/stations/+/readings"

UNIT_ALIASES: dict[str, str] = {
    "mg/l": "mg/L", "oc": "°C", "degc": "°C", "°c": "°C", "c": "°C", "m³/h": "m3/h", "m3/hr": "m3/h",
    "mg/nm³": "mg/Nm3", "mg/nm3": "mg/Nm3", "ptco": "Pt/Co", "pt-co": "Pt/Co", "pt/co": "Pt/Co", "": "-",
}
"""Spellings of the same unit seen from loggers, mapped to the registry's spelling."""

UNIT_FACTORS: dict[tuple[str, str], float] = {
    ("g/L", "mg/L"): 1000.0, ("ug/L", "mg/L"): 0.001, ("µg/L", "mg/L"): 0.001,
    ("m3/s", "m3/h"): 3600.0, ("m3/d", "m3/h"): 1 / 24, ("L/s", "m3/h"): 3.6,
    ("Pa", "kPa"): 0.001, ("g/Nm3", "mg/Nm3"): 1000.0,
}
"""Exact conversions (a pure factor) from a received unit to the registry's unit."""


@dataclass(frozen=True)
class Rejection:
    """Why a message, or one reading in it, was refused."""

    reason: ReasonCode
    message: str
    station_id: str | None = None
    parameter: str | None = None
    index: int | None = None


class MessageRejected(Exception):
    """The whole message is refused."""

    def __init__(self, rejection: Rejection) -> None:
        super().__init__(rejection.message)
        self.rejection = rejection


@dataclass(frozen=True)
class StationBatch:
    """The valid readings of one message, and the rejections of the rest."""

    station_id: str
    readings: list[Reading]
    rejections: list[Rejection] = field(default_factory=list)


@dataclass(frozen=True)
class Limits:
    """Ingest time bounds."""

    max_payload_bytes: int = 64 * 1024
    max_future: timedelta = timedelta(minutes=5)
    retention: timedelta = timedelta(days=730)
    deadletter_payload_cap: int = DEADLETTER_PAYLOAD_CAP
    max_rejections_per_message: int = 20

    def for_station(self, station: Station) -> "Limits":
        """These limits with the station's own retention, when the registry gives it one."""
        if station.retention_days is None:
            return self
        return replace(self, retention=timedelta(days=station.retention_days))

    @classmethod
    def from_settings(cls, settings: "Settings") -> "Limits":
        """The limits as configured: payload size, future skew, retention, dead-letter payload cap, rejections per message."""
        return cls(settings.max_payload_bytes, timedelta(seconds=settings.max_future_s),
                   timedelta(days=settings.retention_days), settings.deadletter_payload_cap_bytes,
                   settings.deadletter_max_per_message)


def normalise_unit(unit: str) -> str:
    """The catalogue's spelling of a unit written another way (`mg/l` is `mg/L`)."""
    return UNIT_ALIASES.get(unit.strip().lower(), unit.strip())


def convert(value: float | None, unit: str, target: str) -> float | None:
    """`value` expressed in `target`; raises KeyError when no exact conversion is known."""
    if unit == target or value is None:
        return value
    return value * UNIT_FACTORS[(unit, target)]


ISO_8601 = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}(:?\d{2})?)?", re.ASCII)
"""The shape of an ISO 8601 time (`datetime.fromisoformat` alone takes odd text, e.g. a NUL before the offset)."""


def parse_timestamp(raw: Any) -> datetime:
    """An aware datetime from ISO 8601; raises ValueError naming the problem."""
    if not isinstance(raw, str) or not ISO_8601.fullmatch(raw):
        shown = safe_text(raw, 60) if isinstance(raw, str) else type(raw).__name__
        raise ValueError(f"ts {shown!r} is not an ISO 8601 time with an offset, e.g. 2026-11-29T21:05:00+07:00")
    ts = datetime.fromisoformat(raw)
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise ValueError(f"ts {raw!r} has no UTC offset; add one, e.g. +07:00")
    return ts


def station_from_topic(topic: str) -> str | None:
    """The station id in a readings topic, or None for a topic outside the contract."""
    match = TOPIC_PATTERN.match(topic)
    return match.group("station") if match else None


def _reject(reason: ReasonCode, message: str, **where: Any) -> MessageRejected:
    return MessageRejected(Rejection(reason, message, **where))


def missing_station(station_id: str, stations: Mapping[str, Station], what: str,
                    fix: str = "register it or fix the gateway's station id") -> Rejection:
    """The rejection for a station id with no active station in the registry: retired, or never registered.

    `what` names the thing refused (a message's station, a file's station code); `fix` is the
    advice for a station never registered. A retired station is told apart only when `stations`
    knows the retired ids (`RegistryCache.retired_ids`, from a `RegistrySnapshot`).
    """
    if station_id in getattr(stations, "retired_ids", ()):
        return Rejection("station_retired", f"{what} is retired in the registry, its readings are refused; re-activate it "
                         "(quantrac stations update) if it is back in service, or switch its gateway off", station_id=station_id)
    return Rejection("unknown_station", f"{what} is not in the registry; {fix}", station_id=station_id)


def check_time(ts: datetime, now: datetime, limits: Limits, station_id: str) -> Rejection | None:
    """The rejection for an event time too far ahead of `now` or older than retention, else None."""
    if ts - now > limits.max_future:
        return Rejection("future", f"station {station_id}: ts {ts.isoformat()} is more than {limits.max_future} ahead of "
                         f"the receive time {now.isoformat()}; check the gateway's clock (NTP)", station_id=station_id)
    if now - ts > limits.retention:
        return Rejection("too_old", f"station {station_id}: ts {ts.isoformat()} is older than the retention of "
                         f"{limits.retention.days} days; such data cannot be stored; to keep an archive, give the station its own "
                         "retention_days (quantrac stations update) or import with --retention-days", station_id=station_id)
    return None


def _check_time(ts: datetime, now: datetime, limits: Limits, station_id: str) -> None:
    rejection = check_time(ts, now, limits, station_id)
    if rejection is not None:
        raise MessageRejected(rejection)


def validate_reading(item: Any, index: int, station: Station, ts: datetime) -> Reading | Rejection:
    """One reading (`{"parameter", "value", "unit", "status"}`) of `station` at `ts`, or why it is refused.

    Shared by every ingest path (MQTT messages, TT10 file lines), so they reject alike.
    """
    if not isinstance(item, dict) or not isinstance(item.get("parameter"), str):
        return Rejection("schema", f"station {station.id}: readings[{index}] must be an object with a 'parameter' string",
                         station_id=station.id, index=index)
    symbol = item["parameter"]
    where: dict[str, Any] = {"station_id": station.id, "parameter": symbol, "index": index}
    spec = station.parameter(symbol)
    if spec is None:
        return Rejection("unknown_parameter", f"station {station.id}: parameter {symbol!r} is not configured for this "
                         f"station (configured: {', '.join(station.parameters)}); add it to the registry or fix the gateway", **where)
    status_raw = item.get("status", "00")
    try:
        status = Status(status_raw)
    except ValueError:
        return Rejection("bad_status", f"station {station.id}, {symbol}: status {status_raw!r} is not 00 (measuring), "
                         "01 (calibrating) or 02 (fault)", **where)
    raw_value = item.get("value")
    if raw_value is None:
        if status is Status.MEASURING:
            return Rejection("missing_value", f"station {station.id}, {symbol}: no value with status 00; send the value, "
                             "or status 01/02 when the analyser cannot measure", **where)
        value = None
    elif isinstance(raw_value, bool) or not isinstance(raw_value, (int, float)) or not math.isfinite(raw_value):
        return Rejection("bad_value", f"station {station.id}, {symbol}: value {raw_value!r} is not a finite number; "
                         "send a JSON number", **where)
    else:
        value = float(raw_value)
    unit = normalise_unit(str(item.get("unit", spec.unit)))
    try:
        value = convert(value, unit, spec.unit)
    except KeyError:
        return Rejection("bad_unit", f"station {station.id}, {symbol}: unit {unit!r} is not {spec.unit!r} and has no exact "
                         f"conversion; configure the gateway to send {spec.unit}", **where)
    return Reading(station_id=station.id, parameter=symbol, value=value, unit=spec.unit, ts=ts, status=status)


def decode_message(topic: str, payload: bytes, stations: Mapping[str, Station], now: datetime,
                   limits: Limits = Limits()) -> StationBatch:
    """Validate one MQTT message; raises MessageRejected when nothing in it can be kept."""
    station_id = station_from_topic(topic)
    if station_id is None:
        raise _reject("topic_mismatch", f"topic {topic!r} is not quantrac/v1/stations/<station_id>/readings")
    if len(payload) > limits.max_payload_bytes:
        raise _reject("oversize", f"station {station_id}: payload of {len(payload)} bytes exceeds {limits.max_payload_bytes}; "
                      "split it into several messages", station_id=station_id)
    body = _envelope(payload, station_id)
    station = stations.get(station_id)
    if station is None:
        raise MessageRejected(missing_station(station_id, stations, f"station {station_id!r}"))
    try:
        ts = parse_timestamp(body.get("ts"))
    except ValueError as exc:
        raise _reject("no_offset", f"station {station_id}: {exc}", station_id=station_id) from None
    _check_time(ts, now, limits.for_station(station), station_id)
    if not body["readings"]:
        raise _reject("empty", f"station {station_id}: the message has an empty 'readings' list, nothing to store; "
                      "send readings, or status 01/02 for a parameter that cannot measure (a gateway with nothing "
                      "to report sends no message)", station_id=station_id)
    valid: list[tuple[int, Reading]] = []
    rejections: list[Rejection] = []
    for index, item in enumerate(body["readings"]):
        result = validate_reading(item, index, station, ts)
        if isinstance(result, Reading):
            valid.append((index, result))
        else:
            rejections.append(result)
    conflicts = find_conflicts(valid)
    readings = [r for index, r in valid if index not in conflicts]
    rejections = cap_rejections(sorted([*rejections, *conflicts.values()], key=lambda r: r.index or 0),
                                limits.max_rejections_per_message, station_id)
    return StationBatch(station_id=station_id, readings=readings, rejections=rejections)


def _envelope(payload: bytes, station_id: str) -> dict[str, Any]:
    """The message's JSON object, with a `readings` list and no other station's id in it."""
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        reason: ReasonCode = "not_utf8" if isinstance(exc.__cause__, UnicodeDecodeError) or b"\xff" in payload else "bad_json"
        raise _reject(reason, f"station {station_id}: payload is not valid UTF-8 JSON ({exc}); send JSON as in the contract",
                      station_id=station_id) from None
    if not isinstance(body, dict) or not isinstance(body.get("readings"), list):
        raise _reject("schema", f"station {station_id}: payload must be an object with 'ts' and a 'readings' list", station_id=station_id)
    if "station_id" in body and body["station_id"] != station_id:
        raise _reject("topic_mismatch", f"payload names station {body['station_id']!r} but was published on the topic of "
                      f"{station_id!r}; publish each station on its own topic", station_id=station_id)
    return body


def find_conflicts(readings: Iterable[tuple[int, Reading]]) -> dict[int, Rejection]:
    """By position, a `conflict` rejection for each reading that contradicts an earlier one.

    Two readings of one parameter at one time with a different value or status cannot both be
    true: the first is kept, the others are refused as `conflict`, their value kept in the dead
    letter. An exact repeat is no conflict: it is stored once and counted as a duplicate.
    """
    first: dict[tuple[str, datetime], Reading] = {}
    conflicts: dict[int, Rejection] = {}
    for position, r in readings:
        seen = first.setdefault((r.parameter, r.ts), r)
        if seen is r or (seen.value == r.value and seen.status == r.status):
            continue
        conflicts[position] = Rejection(
            "conflict", f"station {r.station_id}, {r.parameter} at {r.ts.isoformat()}: value {r.value!r} (status "
            f"{r.status.value}) contradicts {seen.value!r} (status {seen.status.value}) sent before it in the same "
            "message or file; the first is kept. Fix the gateway so it sends one value per parameter and time",
            station_id=r.station_id, parameter=r.parameter, index=position)
    return conflicts


def cap_rejections(rejections: list[Rejection], most: int, station_id: str) -> list[Rejection]:
    """At most `most` rejections of one message, the rest summed up in one `too_many_rejections`.

    Each rejection becomes a dead letter holding the message's payload: without a cap, one 64 kB
    message of 10,000 bad items would write 10,000 copies of itself to Kafka.
    """
    if len(rejections) <= most:
        return rejections
    rest = rejections[most:]
    by_reason: dict[str, int] = {}
    for r in rest:
        by_reason[r.reason] = by_reason.get(r.reason, 0) + 1
    summary = ", ".join(f"{reason} {n}" for reason, n in sorted(by_reason.items()))
    return [*rejections[:most], Rejection(
        "too_many_rejections", f"station {station_id}: {len(rest)} more readings of this message were refused ({summary}), "
        f"beyond the {most} explained one by one; fix the gateway, the first ones say how", station_id=station_id)]
