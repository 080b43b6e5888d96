"""The Kafka record formats shared by every stage (JSON, version field `v`).

`quantrac.readings`: a batch of one station's readings, keyed by station id, so a station's
readings stay in order on one partition (the bridge joins the messages of a station that wait
together into one record: `join_wire_readings`).
`quantrac.readings.deadletter`: one record per rejection, with the original bytes.
`quantrac.alerts`: one record per alert transition.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime
from typing import Any, Iterable, Sequence

import orjson

from quantrac.domain import Reading, Status
from quantrac.safe_text import TEXT_LIMIT, safe_optional, safe_text

WIRE_VERSION = 1


def encode_readings(station_id: str, readings: Iterable[Reading], received_at: datetime, source: str) -> bytes:
    """The Kafka value of a batch of one station's readings."""
    return encode_wire_readings(station_id, [
        {"parameter": r.parameter, "value": r.value, "unit": r.unit, "ts": r.ts.isoformat(), "status": r.status.value}
        for r in readings
    ], received_at, source)


def encode_wire_readings(station_id: str, readings: list[dict[str, Any]], received_at: datetime, source: str) -> bytes:
    """`encode_readings` of readings already in the wire's shape (`parameter`, `value`, `unit`, `ts` text, `status` text)."""
    return orjson.dumps({
        "v": WIRE_VERSION,
        "station_id": station_id,
        "source": source,
        "received_at": received_at.isoformat(),
        "readings": readings,
    })


_READINGS_KEY = b'"readings":['


def join_wire_readings(values: Sequence[bytes]) -> bytes:
    """One record holding the readings of `values`, in order; the receive time is the last one's.

    `values` are `encode_wire_readings` records of one station and one source. The result is
    byte for byte `encode_wire_readings` of their readings joined with the last record's
    `received_at`, made without decoding them: in JSON a quote inside a string is always escaped,
    so the first `"readings":[` of a record is its last key, and the record ends with `]}`.
    """
    if len(values) == 1:
        return bytes(values[0])
    last = values[-1]
    head = last.index(_READINGS_KEY) + len(_READINGS_KEY)
    bodies = [value[value.index(_READINGS_KEY) + len(_READINGS_KEY):-2] for value in values]
    return b"".join((last[:head], b",".join([body for body in bodies if body]), b"]}"))


def decode_readings(raw: bytes) -> tuple[list[Reading], datetime]:
    """Readings and the bridge's receive time from one `quantrac.readings` record."""
    readings, received_at, _source = decode_sourced(raw)
    return readings, received_at


def decode_sourced(raw: bytes) -> tuple[list[Reading], datetime, str]:
    """Readings, receive time and source (`mqtt`, `tt10`, `replay`, `import`) of one `quantrac.readings` record."""
    body = orjson.loads(raw)
    station_id = body["station_id"]
    readings = [
        Reading(station_id=station_id, parameter=r["parameter"], value=r["value"], unit=r["unit"],
                ts=datetime.fromisoformat(r["ts"]), status=Status(r["status"]))
        for r in body["readings"]
    ]
    return readings, datetime.fromisoformat(body["received_at"]), str(body.get("source", "mqtt"))


DEADLETTER_PAYLOAD_CAP = 256 * 1024
"""Bytes of the original payload a dead letter keeps by default (`QUANTRAC_DEADLETTER_PAYLOAD_CAP_BYTES`).

Base64 makes them 4/3 as many, so a dead letter stays near 350 kB: well inside Kafka's default
maximum request (1 MiB), which an oversize dead letter once exceeded and blocked the bridge."""

QUARANTINE_HEAD = 1024
"""Bytes of a quarantined record kept: enough to recognise it, never enough to fail again for size."""


def encode_deadletter(*, topic: str, payload: bytes, reason: str, message: str, received_at: datetime,
                      station_id: str | None = None, parameter: str | None = None, index: int | None = None,
                      source: str = "mqtt", stage: str = "ingest", cap: int = DEADLETTER_PAYLOAD_CAP) -> bytes:
    """A dead-letter record: the reason, and the original bytes up to `cap` (base64) with their size and SHA-256.

    A payload longer than `cap` keeps its head and `truncated: true`; the SHA-256 is always of the
    whole payload. Text fields are made safe and clipped (`quantrac.safe_text`), so the record
    always encodes and always fits Kafka's request size whatever the input.
    `stage` names the loop that set the record aside (`ingest` for validation at the edge).
    """
    kept = payload[:max(cap, 0)]
    return orjson.dumps({
        "v": WIRE_VERSION, "source": safe_text(source), "stage": stage, "topic": safe_text(topic), "reason": reason,
        "message": safe_text(message, 4 * TEXT_LIMIT), "received_at": received_at.isoformat(),
        "station_id": safe_optional(station_id), "parameter": safe_optional(parameter), "index": index,
        "payload_b64": base64.b64encode(kept).decode("ascii"), "payload_size": len(payload),
        "payload_sha256": hashlib.sha256(payload).hexdigest(), "truncated": len(kept) < len(payload),
    })


def encode_quarantine(*, stage: str, raw: bytes, error: str, received_at: datetime, topic: str = "",
                      source: str = "", station_id: str | None = None) -> bytes:
    """The small dead letter (reason `quarantined`) of a record a loop could not handle after its tries.

    Keeps the first `QUARANTINE_HEAD` bytes, the size and the SHA-256 of `raw`, and the error.
    """
    return encode_deadletter(topic=topic or stage, payload=raw, reason="quarantined",
                             message=f"{stage}: set aside after its tries failed: {error}", received_at=received_at,
                             station_id=station_id, source=source or stage, stage=stage, cap=QUARANTINE_HEAD)


def decode_deadletter(raw: bytes) -> dict[str, Any]:
    """A dead-letter record with its payload bytes restored."""
    body: dict[str, Any] = orjson.loads(raw)
    body["payload"] = base64.b64decode(body["payload_b64"])
    return body
