"""The Kafka record formats shared by every stage (JSON, version field `v`).

`quantrac.readings`: one record per station message, keyed by station id, so a station's
readings stay in order on one partition.
`quantrac.readings.deadletter`: one record per rejection, with the original bytes.
`quantrac.alerts`: one record per alert transition.
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any, Iterable

import orjson

from quantrac.domain import Reading, Status

WIRE_VERSION = 1


def encode_readings(station_id: str, readings: Iterable[Reading], received_at: datetime, source: str) -> bytes:
    return orjson.dumps({
        "v": WIRE_VERSION,
        "station_id": station_id,
        "source": source,
        "received_at": received_at.isoformat(),
        "readings": [
            {"parameter": r.parameter, "value": r.value, "unit": r.unit, "ts": r.ts.isoformat(), "status": r.status.value}
            for r in readings
        ],
    })


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


def encode_deadletter(*, topic: str, payload: bytes, reason: str, message: str, received_at: datetime,
                      station_id: str | None = None, parameter: str | None = None, index: int | None = None,
                      source: str = "mqtt") -> bytes:
    """A dead-letter record keeps the original bytes whole (base64) beside a readable copy when it is text."""
    try:
        text: str | None = payload.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    return orjson.dumps({
        "v": WIRE_VERSION, "source": source, "topic": topic, "reason": reason, "message": message,
        "received_at": received_at.isoformat(), "station_id": station_id, "parameter": parameter, "index": index,
        "payload_b64": base64.b64encode(payload).decode("ascii"), "payload_text": text,
    })


def decode_deadletter(raw: bytes) -> dict[str, Any]:
    body: dict[str, Any] = orjson.loads(raw)
    body["payload"] = base64.b64decode(body["payload_b64"])
    return body
