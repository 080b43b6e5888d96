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

from ingest.tt10 import BOM, COMMA_DECIMAL_RE, NUMBER_RE, UTF16_BOMS
from quantrac.domain import Reading, ReasonCode, Station, Status
from quantrac.safe_text import clip, safe_text
from quantrac.wire import DEADLETTER_PAYLOAD_CAP

if TYPE_CHECKING:
    from quantrac.settings import Settings

MAX_MAGNITUDE = 1e12
"""The largest |value| a reading may have. No instrument of the catalogue reports near it (a stack's
flow is some 1e7 Nm3/h, coliforms some 1e9 MPN/100 mL); beyond it a value is a gateway's scaling or
garbling, and its square, summed into a rollup, could overflow float8: the worker then set the whole
record aside ("value out of range: overflow") or stored it, depending on what shared its bucket."""

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
class WireBatch:
    """The valid readings of one message as the wire's reading objects (`quantrac.wire.encode_wire_readings`).

    What the bridge forwards: checked in one pass like `StationBatch`, without a model object per reading.
    """

    station_id: str
    ts: datetime
    readings: list[dict[str, Any]]
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


def _json_text(raw: Any) -> str:
    """A decoded value as JSON (what the gateway sent), else its repr (an integer beyond 64 bits)."""
    try:
        return orjson.dumps(raw).decode()
    except TypeError:
        return repr(raw)


def _json_kind(raw: Any) -> str:
    """What JSON calls a decoded value's type (a gateway's author thinks in JSON, not Python)."""
    if raw is None:
        return "null"
    if isinstance(raw, bool):
        return "boolean"
    return {int: "number", float: "number", list: "array", dict: "object"}.get(type(raw), type(raw).__name__)


def parse_timestamp(raw: Any) -> datetime:
    """An aware datetime from ISO 8601; raises ValueError naming the problem."""
    if not isinstance(raw, str) or not ISO_8601.fullmatch(raw):
        shown = repr(safe_text(raw, 60)) if isinstance(raw, str) else f"{safe_text(_json_text(raw), 60)} (a JSON {_json_kind(raw)})"
        raise ValueError(f"ts {shown} is not an ISO 8601 time with an offset, e.g. 2026-11-29T21:05:00+07:00")
    try:
        ts = datetime.fromisoformat(raw)
    except ValueError as exc:
        raise ValueError(f"ts {safe_text(raw, 60)!r} is not a real time ({exc}); send an ISO 8601 time with an offset, "
                         "e.g. 2026-11-29T21:05:00+07:00") from None
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
    checked = check_reading(item, index, station)
    if isinstance(checked, Rejection):
        return checked
    symbol, value, unit, status = checked
    return Reading(station_id=station.id, parameter=symbol, value=value, unit=unit, ts=ts, status=status)


def _shown(raw: Any) -> str:
    """`raw` as written in a rejection's message, clipped: the message names it, the dead letter keeps it whole."""
    return clip(repr(raw), 40)


def _symbol_fix(symbol: str, station: Station) -> str:
    """What to do about a parameter the station does not have: the configured symbol it differs from only in case or
    spaces, if one does (symbols are matched exactly, as Circular 10/2021 writes them), else the general fix."""
    near = [p for p in station.parameters if p.casefold() == symbol.strip().casefold()]
    if len(near) == 1:
        return f"symbols are exact: send {near[0]!r} (fix the gateway's parameter names)"
    return "add it to the registry or fix the gateway"


def _status_fix(raw: Any) -> str:
    """A hint for a status sent as a number or without its leading zero (0 for 00)."""
    if isinstance(raw, bool) or not isinstance(raw, (int, str)):
        return ""
    digits = str(raw).strip()
    if digits.isdigit() and int(digits) in (0, 1, 2):
        return f"; send the text {f'0{int(digits)}'!r}, two digits in quotes"
    return ""


def _value_fix(raw: Any) -> str:
    """Why a value is not a finite number, and what to send: text holding a number, a decimal comma, or neither."""
    if isinstance(raw, str):
        core = raw.strip()
        if NUMBER_RE.fullmatch(core):
            return f"value {_shown(raw)} is text; send it as a JSON number, without quotes ({core})"
        if COMMA_DECIMAL_RE.fullmatch(core):
            return (f"value {_shown(raw)} uses ',' as decimal separator; send a JSON number with '.' "
                    f"({core.replace(',', '.')})")
    return f"value {_shown(raw)} is not a finite number; send a JSON number"


def check_reading(item: Any, index: int, station: Station) -> tuple[str, float | None, str, Status] | Rejection:
    """`validate_reading` without the model: (parameter, value in the registry's unit, that unit, status), or why it is refused."""
    if not isinstance(item, dict) or not isinstance(item.get("parameter"), str):
        return Rejection("schema", f"station {station.id}: readings[{index}] must be an object with a 'parameter' string",
                         station_id=station.id, index=index)
    symbol = item["parameter"]
    where: dict[str, Any] = {"station_id": station.id, "parameter": symbol, "index": index}
    spec = station.parameter(symbol)
    if spec is None:
        return Rejection("unknown_parameter", f"station {station.id}: parameter {_shown(symbol)} is not configured for this "
                         f"station (configured: {', '.join(station.parameters)}); {_symbol_fix(symbol, station)}", **where)
    status_raw = item.get("status", "00")
    try:
        status = Status(status_raw)
    except ValueError:
        return Rejection("bad_status", f"station {station.id}, {symbol}: status {_shown(status_raw)} is not 00 (measuring), "
                         f"01 (calibrating) or 02 (fault){_status_fix(status_raw)}", **where)
    raw_value = item.get("value")
    if raw_value is None:
        if status is Status.MEASURING:
            return Rejection("missing_value", f"station {station.id}, {symbol}: no value with status 00; send the value, "
                             "or status 01/02 when the analyser cannot measure", **where)
        value = None
    elif isinstance(raw_value, bool) or not isinstance(raw_value, (int, float)) or not math.isfinite(raw_value):
        return Rejection("bad_value", f"station {station.id}, {symbol}: {_value_fix(raw_value)}", **where)
    elif not abs(raw_value) <= MAX_MAGNITUDE:
        return Rejection("bad_value", f"station {station.id}, {symbol}: value {raw_value!r} is beyond what any instrument "
                         f"reports (|value| <= {MAX_MAGNITUDE:g}); check the gateway's scaling and units", **where)
    else:
        value = float(raw_value)
    unit = normalise_unit(str(item.get("unit", spec.unit)))
    try:
        value = convert(value, unit, spec.unit)
    except KeyError:
        return Rejection("bad_unit", f"station {station.id}, {symbol}: unit {unit!r} is not {spec.unit!r} and has no exact "
                         f"conversion; configure the gateway to send {spec.unit}", **where)
    return symbol, value, spec.unit, status


def decode_message(topic: str, payload: bytes, stations: Mapping[str, Station], now: datetime,
                   limits: Limits = Limits()) -> StationBatch:
    """Validate one MQTT message into `Reading`s; raises MessageRejected when nothing in it can be kept.

    The reference for `decode_wire`, which the bridge uses (tests/test_payload_fast.py holds them equal).
    """
    station_id, station, ts, items = _message(topic, payload, stations, now, limits)
    valid: list[tuple[int, Reading]] = []
    rejections: list[Rejection] = []
    for index, item in enumerate(items):
        result = validate_reading(item, index, station, ts)
        if isinstance(result, Reading):
            valid.append((index, result))
        else:
            rejections.append(result)
    conflicts = find_conflicts(valid)
    readings = [r for index, r in valid if index not in conflicts]
    return StationBatch(station_id=station_id, readings=readings,
                        rejections=_ordered_rejections(rejections, conflicts, limits, station_id))


def decode_wire(topic: str, payload: bytes, stations: Mapping[str, Station], now: datetime,
                limits: Limits = Limits()) -> WireBatch:
    """`decode_message` in one pass, its valid readings as the wire's objects; the same readings, rejections and reasons.

    Every reading of a message has the message's time, so a conflict is a second reading of a parameter.
    """
    station_id, station, ts, items = _message(topic, payload, stations, now, limits)
    ts_text = ts.isoformat()
    readings: list[dict[str, Any]] = []
    first: dict[str, tuple[float | None, Status]] = {}
    rejections: list[Rejection] = []
    conflicts: dict[int, Rejection] = {}
    shapes = _accepted_shapes(station)
    for index, item in enumerate(items):
        checked = _check_known_shape(item, shapes) or _check_learning_shape(item, index, station, shapes)
        if isinstance(checked, Rejection):
            rejections.append(checked)
            continue
        symbol, value, unit, status = checked
        seen = first.setdefault(symbol, (value, status))
        if seen != (value, status):
            conflicts[index] = _conflict(station.id, symbol, ts, (value, status), seen, index)
            continue
        readings.append({"parameter": symbol, "value": value, "unit": unit, "ts": ts_text, "status": status.value})
    return WireBatch(station_id, ts, readings, _ordered_rejections(rejections, conflicts, limits, station_id))


_ABSENT = object()
ShapeKey = tuple[str, object, str]
"""A reading's (parameter, unit text or _ABSENT, status text)."""
Shape = tuple[str, Status, float | None]
"""What `check_reading` made of a shape it accepted with a number: the registry's unit, the status, the unit factor (None: none)."""
_SHAPES: dict[str, tuple[Station, dict[ShapeKey, Shape]]] = {}
MAX_SHAPES = 1024
"""Shapes remembered per station; beyond, they are forgotten and learnt again (a gateway inventing unit spellings)."""


def _accepted_shapes(station: Station) -> dict[ShapeKey, Shape]:
    """The shapes `check_reading` accepted for this station object (a reloaded registry starts afresh)."""
    held = _SHAPES.get(station.id)
    if held is None or held[0] is not station or len(held[1]) > MAX_SHAPES:
        held = _SHAPES[station.id] = (station, {})
    return held[1]


def _check_known_shape(item: Any, shapes: dict[ShapeKey, Shape]) -> tuple[str, float, str, Status] | None:
    """`check_reading` of a number within `MAX_MAGNITUDE` in a shape accepted before, by a lookup; None for anything else."""
    if type(item) is not dict:
        return None
    try:
        shape = shapes.get((item.get("parameter"), item.get("unit", _ABSENT), item.get("status", "00")))  # type: ignore[arg-type]  # the keys of an unchecked payload item; a missing or non-str parameter or status just misses the lookup
    except TypeError:  # a list or object where a text belongs
        return None
    raw_value = item.get("value")
    if shape is None or not ((type(raw_value) is float or type(raw_value) is int) and abs(raw_value) <= MAX_MAGNITUDE):
        return None
    unit, status, factor = shape
    value = float(raw_value)
    return item["parameter"], (value if factor is None else value * factor), unit, status


def _check_learning_shape(item: Any, index: int, station: Station,
                          shapes: dict[ShapeKey, Shape]) -> tuple[str, float | None, str, Status] | Rejection:
    """`check_reading`, remembering the shape of an item it accepts with a number (then the unit was checked too)."""
    checked = check_reading(item, index, station)
    if isinstance(checked, Rejection) or checked[1] is None:
        return checked
    unit_raw, status_raw = item.get("unit", _ABSENT), item.get("status", "00")
    if (unit_raw is _ABSENT or type(unit_raw) is str) and type(status_raw) is str and type(item["parameter"]) is str:
        symbol, _value, unit, status = checked
        received = normalise_unit(str(unit if unit_raw is _ABSENT else unit_raw))
        shapes[(symbol, unit_raw, status_raw)] = (unit, status, None if received == unit else UNIT_FACTORS[(received, unit)])
    return checked


def _ordered_rejections(rejections: list[Rejection], conflicts: dict[int, Rejection], limits: Limits,
                        station_id: str) -> list[Rejection]:
    return cap_rejections(sorted([*rejections, *conflicts.values()], key=lambda r: r.index or 0),
                          limits.max_rejections_per_message, station_id)


def _message(topic: str, payload: bytes, stations: Mapping[str, Station], now: datetime,
             limits: Limits) -> tuple[str, Station, datetime, list[Any]]:
    """The message-level checks: its station id and station, its time and its non-empty list of reading items, or MessageRejected."""
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
    return station_id, station, ts, body["readings"]


def _envelope(payload: bytes, station_id: str) -> dict[str, Any]:
    """The message's JSON object, with a `readings` list and no other station's id in it. A leading UTF-8 byte order
    mark is passed over, as RFC 8259 allows a parser to: Windows tools write one, and it changes nothing."""
    try:
        body = orjson.loads(payload.removeprefix(_UTF8_BOM))
    except orjson.JSONDecodeError as exc:
        reason, why = not_json(payload, exc)
        raise _reject(reason, f"station {station_id}: {why}", station_id=station_id) from None
    if not isinstance(body, dict) or not isinstance(body.get("readings"), list):
        raise _reject("schema", f"station {station_id}: payload must be an object with 'ts' and a 'readings' list", station_id=station_id)
    if "station_id" in body and body["station_id"] != station_id:
        raise _reject("topic_mismatch", f"payload names station {body['station_id']!r} but was published on the topic of "
                      f"{station_id!r}; publish each station on its own topic", station_id=station_id)
    return body


_UTF8_BOM = BOM.encode()
_NOT_JSON_NUMBERS = ("NaN", "Infinity", "-Infinity")


def not_json(payload: bytes, exc: orjson.JSONDecodeError) -> tuple[ReasonCode, str]:
    """Why `payload` is not UTF-8 JSON, with where and what to send instead: the parser's own words name neither
    the byte a Latin-1 logger wrote nor the `NaN` that Python's `json.dumps` writes for a missing value."""
    if not payload.strip():
        return "bad_json", ("payload is empty (a gateway clearing a retained message publishes one: publish readings "
                            "without the retain flag and there is nothing to clear); send JSON as in docs/contract.md")
    if payload.startswith(UTF16_BOMS):
        return "not_utf8", "payload is UTF-16 (it starts with a UTF-16 byte order mark); send the JSON encoded as UTF-8"
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as bad:
        before = payload[:bad.start].decode("utf-8")
        return "not_utf8", (f"payload is not UTF-8: byte 0x{payload[bad.start]:02x} at offset {bad.start}, after "
                            f"{_excerpt(before, len(before))}; "
                            "encode the JSON as UTF-8 (a µ, ° or Vietnamese letter in Latin-1 or a Windows code page is not)")
    where = f"{exc.msg} at line {exc.lineno} column {exc.colno}, after {_excerpt(text, exc.pos)}"
    if text.startswith(_NOT_JSON_NUMBERS, exc.pos) or text.startswith("-Infinity", max(exc.pos - 1, 0)):
        return "bad_json", (f"payload is not JSON ({where}): NaN and Infinity are not JSON numbers (Python's json.dumps "
                            "writes them); send a reading that has no value as null with status 01 or 02, or leave it out")
    if "surrogate" in exc.msg:
        return "bad_json", (f"payload is not JSON ({where}): a \\ud800-\\udfff escape without its pair encodes no "
                            "character; send the text as UTF-8")
    return "bad_json", f"payload is not JSON ({where}); send JSON as in docs/contract.md"


def _excerpt(text: str, end: int) -> str:
    """The (at most 24) characters of `text` before `end`, as written in a message."""
    return repr(text[max(end - 24, 0):end]) if end > 0 else "its start"


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
        conflicts[position] = _conflict(r.station_id, r.parameter, r.ts, (r.value, r.status), (seen.value, seen.status), position)
    return conflicts


def _conflict(station_id: str, parameter: str, ts: datetime, sent: tuple[float | None, Status],
              kept: tuple[float | None, Status], position: int) -> Rejection:
    return Rejection(
        "conflict", f"station {station_id}, {parameter} at {ts.isoformat()}: value {sent[0]!r} (status "
        f"{sent[1].value}) contradicts {kept[0]!r} (status {kept[1].value}) sent before it in the same "
        "message or file; the first is kept. Fix the gateway so it sends one value per parameter and time",
        station_id=station_id, parameter=parameter, index=position)


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
