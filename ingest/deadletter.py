"""Dead letters kept queryable, and sent through again once the cause is fixed.

The dead-letter topic stays the record of truth (every rejection, whole). A keeper (a thread
of the bridge, or `quantrac deadletter keep`) copies each record into the `deadletters` table,
keyed by its Kafka partition and offset, so the copy is idempotent and the API can filter and
page. It commits its Kafka offsets only after the rows are in PostgreSQL.

`replay` re-validates the original bytes against today's registry, with the original receive
time as "now" (a reading that was on time then is on time now), and produces the readings that
pass straight to the readings topic (source `replay`). A dead letter is marked replayed when its
own cause is gone; the store's primary key makes readings sent twice harmless, so replay is
idempotent. Only MQTT dead letters are replayed: a TT10 file is re-dropped into the watch folder.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import psycopg
import structlog
from kafka import KafkaConsumer

from ingest.payload import Limits, MessageRejected, decode_message
from ingest.producer import CONSUMER_OPTIONS, Record, make_producer, send_or_quarantine
from quantrac import metrics
from quantrac.clock import utc_now
from quantrac.db import where_clause
from quantrac.deadletter_rows import INSERT as _INSERT
from quantrac.deadletter_rows import row_of
from quantrac.domain import Station
from quantrac.failures import RECORD_ATTEMPTS, RateLimitedLog, describe, is_record_failure
from quantrac.safe_text import safe_text
from quantrac.settings import Settings
from quantrac.wire import encode_quarantine, encode_readings

log = structlog.get_logger(__name__)
_log = RateLimitedLog(log)

def keeper_group(settings: Settings) -> str:
    """The keeper's consumer group, named after the bridge so two deployments don't share it."""
    return f"{settings.mqtt_bridge_client_id}-deadletters"


def quarantine_row(kafka_topic: str, partition: int, offset: int, raw: bytes, error: str) -> tuple[Any, ...]:
    """The row that stands for a dead-letter record the keeper could not decode or store: its head, size and SHA-256."""
    return row_of(kafka_topic, partition, offset, encode_quarantine(
        stage="deadletter-keeper", raw=raw, error=error, received_at=utc_now(), topic=f"kafka:{kafka_topic}",
        source="deadletter"))


def make_keeper_consumer(settings: Settings) -> KafkaConsumer:
    """A consumer of the dead-letter topic that commits only what the keeper has stored."""
    return KafkaConsumer(settings.deadletter_topic, bootstrap_servers=settings.kafka_bootstrap.split(","), **CONSUMER_OPTIONS,
                         group_id=keeper_group(settings), enable_auto_commit=False, auto_offset_reset="earliest",
                         client_id="quantrac-deadletter-keeper")


def keep_batch(consumer: KafkaConsumer, conn: psycopg.Connection[Any], timeout_ms: int = 1000) -> int:
    """Copy one poll's worth of dead letters into PostgreSQL, then commit their offsets; returns rows stored.

    A record that does not decode, or that PostgreSQL refuses, is quarantined (a small row standing
    for it) instead of holding back the records behind it; PostgreSQL or Kafka being unavailable
    raises, and the offsets stay where they were. `conn` is an autocommit connection the caller keeps
    across batches (one connection per batch cost a connect for every dead letter of a slow trickle).
    """
    polled = consumer.poll(timeout_ms=timeout_ms, max_records=1000)
    rows = []
    for tp, records in polled.items():
        for record in records:
            try:
                rows.append(row_of(tp.topic, tp.partition, record.offset, record.value))
            except Exception as exc:  # a foreign or damaged record in the topic must not stop the keeper
                _quarantined(tp.partition, record.offset, exc)
                rows.append(quarantine_row(tp.topic, tp.partition, record.offset, record.value or b"", describe(exc)))
    if rows:
        store_rows(conn, rows)
    if polled:
        consumer.commit()
    return len(rows)


def store_rows(conn: psycopg.Connection[Any], rows: Sequence[tuple[Any, ...]]) -> None:
    """Insert the rows in one transaction; when PostgreSQL refuses the batch for its content, row by row.

    Row by row, each row that still fails `RECORD_ATTEMPTS` times is replaced by its quarantine row.
    """
    try:
        with conn.transaction(), conn.cursor() as cur:
            cur.executemany(_INSERT, rows)
        return
    except psycopg.Error as exc:
        if not is_record_failure(exc):
            raise
    for row in rows:
        _store_one(conn, row)


def _store_one(conn: psycopg.Connection[Any], row: tuple[Any, ...]) -> None:
    error: BaseException | None = None
    for _ in range(RECORD_ATTEMPTS):
        try:
            with conn.transaction():
                conn.execute(_INSERT, row)
            return
        except psycopg.Error as exc:
            if not is_record_failure(exc):
                raise
            error = exc
    kafka_topic, partition, offset = row[0], row[1], row[2]
    assert error is not None
    _quarantined(partition, offset, error)
    with conn.transaction():
        conn.execute(_INSERT, quarantine_row(kafka_topic, partition, offset, _row_bytes(row), describe(error)))


def _row_bytes(row: tuple[Any, ...]) -> bytes:
    """What a refused row held, as bytes to keep the head and hash of."""
    return orjson.dumps([str(v) if not isinstance(v, bytes) else base64.b64encode(v).decode() for v in row])


def _quarantined(partition: int, offset: int, exc: BaseException) -> None:
    metrics.QUARANTINED.labels("deadletter-keeper").inc()
    _log("error", "deadletter.quarantined", key=type(exc).__name__, partition=partition, offset=offset,
         error=safe_text(describe(exc), 300), fix="GET /api/v1/deadletters?reason=quarantined shows its head, size and SHA-256")


def run_keeper(settings: Settings, stop: threading.Event) -> None:
    """Copy dead letters until `stop`; waits out Kafka or PostgreSQL being unavailable (offsets held meanwhile)."""
    consumer: KafkaConsumer | None = None
    conn: psycopg.Connection[Any] | None = None
    backoff = 1.0
    while not stop.is_set():
        try:
            if consumer is None:
                consumer = make_keeper_consumer(settings)
            if conn is None or conn.closed:
                conn = psycopg.connect(settings.pg_dsn, autocommit=True)
            kept = keep_batch(consumer, conn)
            backoff = 1.0
            if kept:
                log.info("deadletter.kept", rows=kept)
        except Exception as exc:
            _log("warning", "deadletter.keeper_retry", key=type(exc).__name__, error=safe_text(describe(exc), 300),
                 retry_in_s=backoff, fix="check Kafka and PostgreSQL (quantrac stack status); dead letters stay in the topic meanwhile")
            if consumer is not None:
                consumer.close()
                consumer = None
            if conn is not None:
                conn.close()
                conn = None
            stop.wait(backoff)
            backoff = min(backoff * 2, 30.0)
    if consumer is not None:
        consumer.close()
    if conn is not None:
        conn.close()


def start_keeper(settings: Settings, stop: threading.Event) -> threading.Thread:
    """Run the dead-letter keeper in a daemon thread until `stop` is set."""
    thread = threading.Thread(target=run_keeper, args=(settings, stop), name="deadletter-keeper", daemon=True)
    thread.start()
    return thread


# --- replay ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplayResult:
    """What a replay of dead letters did: how many it tried, sent, and why the rest still fail."""
    considered: int
    replayed: int
    still_rejected: dict[str, int]
    readings_sent: int


def select_pending(conn: psycopg.Connection[Any], station: str | None, reason: str | None,
                   since: datetime | None) -> list[tuple[Any, ...]]:
    """Dead letters from MQTT not yet replayed, oldest first, filtered by station, reason and age."""
    where, params = where_clause(("replayed_at IS NULL", True), ("source = 'mqtt'", True), ("station_id = %s", station or None),
                                 ("reason = %s", reason or None), ("received_at >= %s", since))
    return conn.execute(f"SELECT id, topic, payload, received_at, item_index, reason FROM deadletters "
                        f"{where} ORDER BY received_at, id", params).fetchall()


def plan_replay(rows: Sequence[tuple[Any, ...]], stations: Mapping[str, Station], limits: Limits,
                readings_topic: str) -> tuple[list[Record], dict[int, str | None]]:
    """Records to produce and, per dead-letter id, None when its cause is gone or the reason it is still refused.

    Rows from one message (same topic, bytes and receive time) are validated once and sent once.
    """
    groups: dict[tuple[str, bytes, datetime], list[tuple[int, int | None]]] = {}
    for row_id, topic, payload, received_at, index, _reason in rows:
        groups.setdefault((topic, bytes(payload), received_at), []).append((row_id, index))
    records: list[Record] = []
    outcome: dict[int, str | None] = {}
    for (topic, payload, received_at), members in groups.items():
        try:
            batch = decode_message(topic, payload, stations, received_at, limits)
        except MessageRejected as rejected:
            for row_id, _ in members:
                outcome[row_id] = rejected.rejection.reason
            continue
        except Exception as exc:  # a bug of ours on this dead letter: leave it pending, go on with the others
            metrics.QUARANTINED.labels("replay").inc()
            _log("exception", "deadletter.replay_failed", key=type(exc).__name__, rows=[row_id for row_id, _ in members],
                 error=safe_text(describe(exc), 300))
            for row_id, _ in members:
                outcome[row_id] = "quarantined"
            continue
        refused = {r.index: r.reason for r in batch.rejections}
        if batch.readings:
            records.append((readings_topic, batch.station_id.encode(),
                            encode_readings(batch.station_id, batch.readings, received_at, "replay")))
        for row_id, index in members:
            outcome[row_id] = refused.get(index) if index is not None else None
    return records, outcome


def replay(settings: Settings, conn: psycopg.Connection[Any], stations: Mapping[str, Station], *, station: str | None = None,
           reason: str | None = None, since: datetime | None = None, dry_run: bool = False) -> ReplayResult:
    """Send the pending dead letters matching the filters through validation again; see the module docstring."""
    limits = Limits.from_settings(settings)
    rows = select_pending(conn, station, reason, since)
    records, outcome = plan_replay(rows, stations, limits, settings.readings_topic)
    sent = sum(len(_readings_in(value)) for _, _, value in records)
    fixed = [row_id for row_id, still in outcome.items() if still is None]
    still: dict[str, int] = {}
    for why in outcome.values():
        if why is not None:
            still[why] = still.get(why, 0) + 1
    if not dry_run and records:
        producer = make_producer(settings, "quantrac-replay")
        try:
            send_or_quarantine(producer, records, stage="replay", deadletter_topic=settings.deadletter_topic)
        finally:
            producer.close(timeout=5)
    if not dry_run:
        with conn.transaction():
            conn.execute("UPDATE deadletters SET replayed_at = now(), replay_result = 'sent' WHERE id = ANY(%s)", (fixed,))
            for row_id, why in outcome.items():
                if why is not None:
                    conn.execute("UPDATE deadletters SET replay_result = %s WHERE id = %s", (f"still rejected: {why}", row_id))
    log.info("deadletter.replayed", considered=len(rows), replayed=len(fixed), readings=sent, still_rejected=still, dry_run=dry_run)
    return ReplayResult(len(rows), len(fixed), still, sent)


def _readings_in(value: bytes) -> list[Any]:
    import orjson

    return list(orjson.loads(value)["readings"])
