"""A synchronous Kafka producer for ingest paths that must know a batch is safe before moving on.

The TT10 watcher moves a file out of the drop folder only after Kafka confirmed every record it
became; `send_confirmed` blocks until then, or raises so the caller keeps the file and retries.
"""

from __future__ import annotations

from typing import Iterable

from kafka import KafkaProducer

from quantrac.settings import Settings

Record = tuple[str, bytes | None, bytes]
"""(topic, key, value)."""


def make_producer(settings: Settings, client_id: str) -> KafkaProducer:
    """Idempotent, `acks=all`: a confirmed record is on the broker, a retried one is not doubled."""
    return KafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap.split(","), acks="all", enable_idempotence=True,
        linger_ms=5, batch_size=256 * 1024, max_block_ms=10_000, client_id=client_id,
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


CONSUMER_OPTIONS = {"receive_message_max_bytes": 64 * 1024 * 1024, "enable_incremental_fetch_sessions": False}
"""For every kafka-python consumer:
- its default frame limit (1,000,000 bytes) is below its default `fetch_max_bytes` (52 MiB), so a
  fetch of several large records (dead letters of oversize payloads) fails with
  `InvalidReceiveError: Invalid frame length` and is retried for ever;
- incremental fetch sessions (KIP-227, new in kafka-python 2.1) have had consumers stop returning
  a partition's records (dpkp/kafka-python#2575, #3131); our consumers read a handful of
  partitions, where full fetches cost nothing measurable."""

