"""Rows of the `deadletters` table: a dead-letter record made safe for PostgreSQL, and quarantine rows.

The dead-letter keeper copies records of the dead-letter topic here (keyed by their Kafka
coordinates, so the copy is idempotent); a loop without Kafka (the notifier) writes its
quarantine rows straight here, without coordinates.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from typing import Any

import psycopg

from quantrac.safe_text import TEXT_LIMIT, safe_optional, safe_text
from quantrac.wire import decode_deadletter, encode_quarantine

COLUMNS = ("kafka_topic", "topic_partition", "topic_offset", "source", "stage", "topic", "reason", "message", "received_at",
           "station_id", "parameter", "item_index", "payload", "payload_size", "payload_sha256", "truncated")
INSERT = (f"INSERT INTO deadletters ({', '.join(COLUMNS)}) VALUES ({', '.join(['%s'] * len(COLUMNS))}) "
          "ON CONFLICT (kafka_topic, topic_partition, topic_offset) DO NOTHING")


def row_of(kafka_topic: str | None, partition: int | None, offset: int | None, raw: bytes) -> tuple[Any, ...]:
    """The row of one dead-letter record; every text made safe for PostgreSQL (the bytes stay whole)."""
    body = decode_deadletter(raw)
    payload: bytes = body["payload"]
    bound = 2 * TEXT_LIMIT  # above what `encode_deadletter` keeps: its clipped texts stay as they are, a foreign record's are cut
    return (kafka_topic, partition, offset, safe_text(body.get("source", "mqtt"), bound), safe_text(body.get("stage", "ingest"), bound),
            safe_text(body["topic"], bound), safe_text(body["reason"], bound), safe_text(body["message"], 8 * TEXT_LIMIT),
            datetime.fromisoformat(body["received_at"]), safe_optional(body.get("station_id"), bound),
            safe_optional(body.get("parameter"), bound), body.get("index"), payload, body.get("payload_size", len(payload)),
            body.get("payload_sha256") or hashlib.sha256(payload).hexdigest(), bool(body.get("truncated", False)))


def insert_quarantine(conn: psycopg.Connection[Any], *, stage: str, raw: bytes, error: str, topic: str,
                      station_id: str | None = None) -> None:
    """Quarantine a record of a loop that has no Kafka producer: a row standing for it, with its head, size and SHA-256."""
    value = encode_quarantine(stage=stage, raw=raw, error=error, received_at=datetime.now(timezone.utc), topic=topic,
                              source=stage, station_id=station_id)
    conn.execute(INSERT, row_of(None, None, None, value))
