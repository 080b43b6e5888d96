"""The worker's readings consumer: the readings topic in bulk, committed only once a batch is stored.

Faust's per-event path (conductor, stream, `noack_take`, acknowledgements) cost more than the worker's
whole budget for a message, and while a batch was judged it held up Faust's fetching, so a reading
waited 1.2-1.5 s between Kafka and the store at 10,000 readings/s (docs/performance.md). Faust stays
the worker's framework (app, timers, producer); the readings come through this plain aiokafka consumer
in the worker's consumer group (`QUANTRAC_WORKER_ID`): `getmany` hands over whatever has been fetched,
so a batch grows with the load instead of waiting for a window to fill.

Offsets are committed by hand after a batch is stored, judged and its alerts published, for exactly
the records of that batch: nothing is committed past a reading that was not processed, and a batch
that was not committed (a crash, a rebalance in between) is read again by the next owner, where the
store finds its readings stored already (idempotent) and detection judges only new ones. A rebalance
waits for the batch in progress (`on_partitions_revoked` takes the same lock), so a partition changes
owner between batches.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from quantrac.failures import RateLimitedLog, describe
from quantrac.settings import Settings

log = structlog.get_logger(__name__)
_log = RateLimitedLog(log)


def newest_records(records: Sequence[ConsumerRecord]) -> dict[TopicPartition, ConsumerRecord]:
    """Per partition, its record of the highest offset among `records`."""
    newest: dict[tuple[str, int], ConsumerRecord] = {}
    for record in records:
        key = (record.topic, record.partition)
        kept = newest.get(key)
        if kept is None or record.offset > kept.offset:
            newest[key] = record
    return {TopicPartition(*key): record for key, record in newest.items()}


class ReadingsConsumer(ConsumerRebalanceListener):
    """The readings topic in batches; `generation` counts the assignments this worker received and the revocations
    before them: a batch fetched in an earlier generation is dropped, its partitions read again from their committed
    offsets."""

    def __init__(self, settings: Settings, batching: asyncio.Lock) -> None:
        self.settings = settings
        self.batching = batching
        """Held by the caller while it processes a batch; a rebalance waits for it."""
        self.generation = 0
        self.committed: dict[TopicPartition, int] = {}
        """Per owned partition: the offset this worker committed last, or found committed when assigned."""
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap.split(","), group_id=settings.worker_id,
            client_id=f"{settings.worker_id}-readings", enable_auto_commit=False, auto_offset_reset="earliest",
            session_timeout_ms=10_000, heartbeat_interval_ms=3_000,
            metadata_max_age_ms=int(settings.worker_kafka_metadata_max_age_s * 1000),
            max_partition_fetch_bytes=settings.worker_fetch_partition_bytes)

    async def start(self) -> None:
        """Join the group; the first assignment comes with the first `batch`."""
        self._consumer.subscribe([self.settings.readings_topic], listener=self)
        await self._consumer.start()

    async def stop(self) -> None:
        """Leave the group (what was not committed is read again by the next owner)."""
        await self._consumer.stop()

    async def batch(self) -> tuple[int, list[ConsumerRecord]]:
        """The records fetched so far (at most `QUANTRAC_WORKER_BATCH_SIZE`), waiting up to the batch latency for some,
        with the generation they were fetched in: a batch from an earlier generation is dropped, its partitions read
        again from their committed offsets."""
        fetched = await self._consumer.getmany(timeout_ms=int(self.settings.worker_batch_latency_s * 1000),
                                               max_records=self.settings.worker_batch_size)
        return self.generation, [record for records in fetched.values() for record in records]

    async def commit(self, records: Sequence[ConsumerRecord]) -> None:
        """Commit past these processed records; a commit the group refuses (it rebalanced) is left to the next owner."""
        offsets = {tp: record.offset + 1 for tp, record in newest_records(records).items()}
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            _log("warning", "worker.commit_refused", key="rebalanced", error=describe(exc), records=len(records),
                 action="the next owner of the partitions reads the batch again; its readings are stored already")
            return
        except KafkaError as exc:
            _log("warning", "worker.commit_failed", key=type(exc).__name__, error=describe(exc), records=len(records),
                 action="committed with a later batch, or read again after a restart (stored already)")
            return
        self.committed.update(offsets)

    def assignment(self) -> set[TopicPartition]:
        """The readings partitions this worker owns now."""
        return set(self._consumer.assignment())

    def partition_count(self) -> int:
        """The readings topic's partitions as the cluster reports them (the setting until its metadata is known).

        Producers place a station by the topic's own count, which may exceed `QUANTRAC_TOPIC_PARTITIONS` (a topic is
        grown to the setting, never shrunk), so the worker finds the stations of its partitions by that count too."""
        found = self._consumer.partitions_for_topic(self.settings.readings_topic)
        return len(found) if found else self.settings.topic_partitions

    def highwater(self, tp: TopicPartition) -> int | None:
        """The partition's end offset as of the last fetch (None before any)."""
        found: int | None = self._consumer.highwater(tp)
        return found

    async def on_partitions_revoked(self, revoked: Any) -> None:
        """aiokafka's call before a rebalance: wait for the batch in progress, then start a generation, so that a batch
        fetched before it is dropped. Handled during the rebalance, such a batch was stored and then its commit refused
        (its partitions no longer assigned): its next owner read it again, found its readings stored, and judged it a
        second time from the snapshots, replaying each station's readings once more (measured with two workers: 35,488
        readings replayed twice for 67 stations)."""
        async with self.batching:  # the batch in progress ends, and is committed, before the partitions move
            for tp in revoked:
                self.committed.pop(tp, None)
            self.generation += 1

    async def on_partitions_assigned(self, assigned: Any) -> None:
        """aiokafka's call after a rebalance: a new generation, and the committed offsets of the new partitions."""
        self.generation += 1
        for tp in assigned:
            try:
                found = await self._consumer.committed(tp)
            except KafkaError:
                found = None
            if found is not None:
                self.committed[tp] = found
        log.info("worker.partitions_assigned", generation=self.generation,
                 partitions=sorted(tp.partition for tp in assigned))
