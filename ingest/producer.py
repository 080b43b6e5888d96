"""A synchronous Kafka producer for ingest paths that must know a batch is safe before moving on.

The TT10 watcher moves a file out of the drop folder only after Kafka confirmed every record it
became; `send_confirmed` blocks until then, or raises so the caller keeps the file and retries.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Iterable, Sequence

import structlog
from kafka import KafkaProducer
from kafka.errors import KafkaError

from quantrac import metrics
from quantrac.failures import RECORD_ATTEMPTS, is_record_failure
from quantrac.settings import Settings
from quantrac.wire import encode_quarantine

log = structlog.get_logger(__name__)

Record = tuple[str, bytes | None, bytes]
"""(topic, key, value)."""


def make_producer(settings: Settings, client_id: str) -> KafkaProducer:
    """Idempotent, `acks=all`: a confirmed record is on the broker, a retried one is not doubled."""
    return KafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap.split(","), acks="all", enable_idempotence=True,
        linger_ms=5, batch_size=256 * 1024, max_block_ms=10_000, client_id=client_id,
        max_request_size=settings.kafka_max_request_bytes,
    )


def send_confirmed(producer: KafkaProducer, records: Iterable[Record], timeout_s: float = 30.0) -> int:
    """Send every record and wait until Kafka confirmed each; returns how many were sent.

    Raises kafka.errors.KafkaError (or a timeout) when any record is not confirmed.
    """
    futures = [producer.send(topic, key=key, value=value) for topic, key, value in records]
    producer.flush(timeout=timeout_s)
    for future in futures:
        future.get(timeout=timeout_s)
    return len(futures)


def send_or_quarantine(producer: KafkaProducer, records: Sequence[Record], *, stage: str, deadletter_topic: str,
                       timeout_s: float = 30.0) -> list[int]:
    """Like `send_confirmed`, but a record Kafka refuses for what it is does not hold back the others.

    Such a record (too large, invalid) is sent again up to RECORD_ATTEMPTS times, then replaced by
    its quarantine dead letter (reason `quarantined`, `stage`, head, size, SHA-256). Returns the
    positions of the records quarantined. Raises kafka.errors.KafkaError (or a timeout) when
    Kafka is unavailable, so the caller keeps its position and retries.
    """
    pending = list(range(len(records)))
    for _ in range(RECORD_ATTEMPTS):
        pending = _refused(producer, [records[i] for i in pending], pending, timeout_s)
        if not pending:
            return []
    quarantine: list[Record] = []
    for i in pending:
        topic, key, value = records[i]
        log.error("kafka.record_quarantined", stage=stage, topic=topic, size=len(value),
                  fix="GET /api/v1/deadletters?reason=quarantined shows its head, size and SHA-256")
        metrics.QUARANTINED.labels(stage).inc()
        quarantine.append((deadletter_topic, key, encode_quarantine(
            stage=stage, raw=value, error=f"Kafka refused the record for {topic} after {RECORD_ATTEMPTS} tries",
            received_at=datetime.now(timezone.utc), topic=f"kafka:{topic}",
            station_id=key.decode("utf-8", "replace") if key else None)))
    send_confirmed(producer, quarantine, timeout_s)
    return pending


def _refused(producer: KafkaProducer, records: Sequence[Record], positions: Sequence[int], timeout_s: float) -> list[int]:
    """Send the records; the positions of those Kafka refused for what they are. Raises on anything else."""
    futures: list[tuple[int, Any]] = []
    refused: list[int] = []
    for position, (topic, key, value) in zip(positions, records, strict=True):
        try:
            futures.append((position, producer.send(topic, key=key, value=value)))
        except KafkaError as exc:
            if not is_record_failure(exc):
                raise
            refused.append(position)
    producer.flush(timeout=timeout_s)
    for position, future in futures:
        try:
            future.get(timeout=timeout_s)
        except KafkaError as exc:
            if not is_record_failure(exc):
                raise
            refused.append(position)
    return sorted(refused)


CONSUMER_OPTIONS = {"receive_message_max_bytes": 64 * 1024 * 1024, "enable_incremental_fetch_sessions": False}
"""For every kafka-python consumer:
- its default frame limit (1,000,000 bytes) is below its default `fetch_max_bytes` (52 MiB), so a
  fetch of several large records (dead letters of oversize payloads) fails with
  `InvalidReceiveError: Invalid frame length` and is retried for ever;
- incremental fetch sessions (KIP-227, new in kafka-python 2.1) have had consumers stop returning
  a partition's records (dpkp/kafka-python#2575, #3131); our consumers read a handful of
  partitions, where full fetches cost nothing measurable."""

