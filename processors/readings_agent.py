"""The worker's readings path: take a batch from the readings consumer, hand it to the pipeline, publish
the alerts and dead letters it produced, commit. Faust runs it as a task, beside its timers.

Batches come from `processors.readings_consumer` (aiokafka, bulk `getmany`), not from a Faust agent:
Faust's per-event path cost more than the rest of the worker for a message and held up fetching
while a batch was judged (docs/performance.md). One batch is judged at a time; the next one is fetched
and decoded while PostgreSQL finishes storing it, and its COPY begins on a second connection while the
batch before it commits. Offsets are committed once the batch is stored and what it published is
delivered. The pipeline retries a batch until the database takes it.

The stations' detection states and last-seen times (liveness entries) live in the worker for the
stations of the readings partitions it owns, and in the store (`processors.worker_state`). A
detection state is snapshotted every `QUANTRAC_WORKER_STATE_SNAPSHOT_S` (`SnapshotPlan`; a timer
writes those due when no batch comes), not after every batch; the snapshots due and the liveness
entries are written in the batch's own transaction (`KeptWrites`). After a rebalance (a new
assignment) the worker drops what it kept: a station's state is read from its snapshot at its next batch and brought up to date from the
readings stored since (`BatchProcessor._replay`), and the liveness entries of the owned partitions
are read back at once. A timer reports silent stations, judged against the arrival frontier of the
partitions this worker owns (`liveness.frontier`), so a worker that is behind does not mistake its
backlog for silence.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Iterable, Sequence
from datetime import datetime, timezone
from typing import Any, NamedTuple

import structlog
from aiokafka import ConsumerRecord, TopicPartition

from alerts.rules import CLOCK_RULE, Condition
from processors import liveness
from processors.app import alerts_topic, app, deadletter_topic, settings
from processors.deadline import within
from processors.detection import DetectionConfig
from processors.detection_state import SnapshotPlan
from processors.pipeline import BatchProcessor, DeadLetter, KeptWrites, alert_record, decode_batch, last_seen
from processors.readings_consumer import ReadingsConsumer, newest_records
from processors.worker_state import Entry, partition_of
from quantrac import metrics
from quantrac.batch_columns import BatchColumns
from quantrac.db import live_registry
from quantrac.failures import describe
from quantrac.registry import RegistryCache

log = structlog.get_logger(__name__)


class _Fetched(NamedTuple):
    """A batch as the consumer gave it, with the generation it was fetched in, and decoded: its columns and the dead
    letters of the records that could not be."""

    generation: int
    records: list[ConsumerRecord]
    columns: BatchColumns
    undecodable: list[DeadLetter]


class ReadingsWorker:
    """The batch loop and what it keeps between batches: the consumer, the processor (detection states), the
    liveness entries of the owned stations and the snapshot plan; the timers work on them under `lock`."""

    def __init__(self, stations: RegistryCache) -> None:
        self.stations = stations
        self.lock = asyncio.Lock()
        """Held while a batch or a timer works on the kept states and liveness entries (a rebalance waits for it)."""
        self.consumer = ReadingsConsumer(settings, self.lock)
        self.processor = BatchProcessor(settings.pg_dsn, stations, DetectionConfig.from_settings(settings))
        self.snapshots = SnapshotPlan(settings.worker_state_snapshot_s)
        self.liveness: dict[str, Entry] = {}
        """Liveness entries of the stations of the readings partitions this worker owns."""
        self.generation: int | None = None
        """The assignment the kept states and `liveness` belong to."""
        self.processed: dict[TopicPartition, tuple[int, float | None]] = {}
        """Readings partition → (offset, Kafka timestamp in s) of the last record this worker stored and committed."""

    async def run(self) -> None:
        """Batches until cancelled (the worker stops). The next batch is fetched and decoded once this one is judged
        (`_fetched`), while PostgreSQL finishes storing it: decoding took a fifth of a batch's time, with PostgreSQL
        idle meanwhile, then the worker idle while PostgreSQL finished. Decoding any earlier would only take the
        interpreter from the judging (docs/performance.md). Its COPY then begins while this batch's last statements,
        commit and snapshots go on (`BatchProcessor.begin_ahead`)."""
        await self.consumer.start()
        ahead: asyncio.Task[_Fetched] | None = None
        try:
            ahead = asyncio.ensure_future(self._fetched())
            while True:
                fetched = await ahead
                self.processor.judged.clear()
                ahead = asyncio.ensure_future(self._fetched())
                try:
                    if fetched.records:
                        await self.handle(fetched)
                finally:
                    self.processor.judged.set()
        finally:  # no snapshot here: the next owner replays from the store
            if ahead is not None:
                ahead.cancel()
                await asyncio.gather(ahead, return_exceptions=True)
            await self.consumer.stop()
            await self.processor.close()

    async def _fetched(self) -> _Fetched:
        """The next batch from the consumer once the batch before it is judged (what arrives while it is judged comes
        along), decoded in a thread (the event loop goes on with that batch meanwhile), and its transaction begun with
        its COPY (`BatchProcessor.begin_ahead`): PostgreSQL stores it while the batch before it finishes."""
        await self.processor.judged.wait()
        generation, records = await self.consumer.batch()
        undecodable: list[DeadLetter] = []
        columns = await asyncio.to_thread(decode_batch, [record.value for record in records], undecodable)
        if records and generation == self.consumer.generation:
            await self.processor.begin_ahead(columns)
        return _Fetched(generation, records, columns, undecodable)

    async def handle(self, fetched: _Fetched) -> None:
        """Store, judge and alert on one batch, then commit it; a batch fetched before a rebalance is dropped (its
        partitions are read again from their committed offsets)."""
        records = fetched.records
        async with self.lock:
            if fetched.generation != self.consumer.generation:
                await self.processor.drop_ahead()
                return
            await self.follow_rebalance()
            metrics.WORKER_RECORDS_IN.inc(len(records))
            metrics.WORKER_BATCH_RECORDS.observe(len(records))
            columns = fetched.columns
            seen_conditions, entries = self._note_seen(last_seen(columns))
            result = await self.processor.process(batch=columns, extra=seen_conditions,
                                                  kept=KeptWrites(entries, self._snapshots_due))
            self.liveness.update(entries)
            await _delivered([*_alert_sends(result.alerts),
                              *[deadletter_topic.send(key=key, value=value)
                                for key, value in [*fetched.undecodable, *result.deadletters]]])
            await self.consumer.commit(records)
            for tp, record in newest_records(records).items():
                self.processed[tp] = (record.offset, record.timestamp / 1000)
        log.debug("worker.batch", records=len(records), new_readings=result.new, alerts=len(result.alerts), late=result.late)

    def _note_seen(self, seen: dict[str, tuple[datetime, datetime]]) -> tuple[list[Condition], dict[str, Entry]]:
        """The liveness entries after a batch's receipts, and their conditions: `station_offline` cleared for stations
        back from silence, `station_clock` raised or cleared (the kept entries change only once the batch is stored)."""
        conditions: list[Condition] = []
        entries: dict[str, Entry] = {}
        for station_id, (event_ts, received_at) in seen.items():
            station = self.stations.get(station_id)
            if station is None:
                continue
            entry, found = liveness.seen(self.liveness.get(station_id), station, event_ts, received_at,
                                         settings.clock_lag_alert_s, settings.alert_clear_hold_s)
            conditions.extend(found)
            entries[station_id] = entry
            for behind in (c for c in found if c.rule == CLOCK_RULE and c.active):
                log.warning("worker.station_clock", station=station_id, lag_s=round(behind.value or 0.0),
                            newest_event_ts=entry["event_ts"], fix="set the gateway's clock right (NTP) or its time zone "
                            "offset; see the alert's message")
        return conditions, entries

    async def follow_rebalance(self) -> None:
        """After a rebalance, drop the kept states and read the owned stations' liveness entries back from the store.

        Another worker may have judged any station meanwhile; its snapshots and entries are in the store."""
        generation = self.consumer.generation
        if generation == self.generation:
            return
        self.processor.forget_all()
        owned = {tp.partition for tp in self.consumer.assignment()}
        stored = await self.processor.load_liveness()
        partitions = self.consumer.partition_count()
        kept = {i: e for i, e in stored.items() if partition_of(i, partitions) in owned}
        self.liveness = liveness.resume(kept, await self.processor.open_keys(kept), datetime.now(timezone.utc))
        self.processed = {tp: seen for tp, seen in self.processed.items() if tp.partition in owned}
        self.generation = generation
        log.info("worker.state_reset", generation=generation, partitions=sorted(owned), liveness_entries=len(self.liveness),
                 reason="a rebalance: detection states are read from their snapshots at their next batch")

    def _snapshots_due(self, judged: Iterable[str]) -> set[str]:
        """The stations whose snapshots `SnapshotPlan` finds due now, after a batch that judged `judged`."""
        return self.snapshots.due(judged, self.processor.unsnapshotted, time.monotonic())

    async def snapshot_quiet_stations(self) -> None:
        """The snapshots due when no batch comes to write them."""
        async with self.lock:
            await self.follow_rebalance()
            await self.processor.save_state(self.processor.snapshot(self._snapshots_due(())), {})

    async def check_liveness(self) -> None:
        """Report the owned stations past their deadline at the arrival frontier, once each."""
        now = datetime.now(timezone.utc)  # before asking the broker: what arrived by now is below the end offsets
        try:
            views = await within(self._partition_views(), 0.8 * settings.liveness_check_s)  # answered before the next check
        except Exception as exc:  # noqa: BLE001 (Kafka unreachable: judge nobody rather than everybody)
            log.warning("worker.liveness_deferred", reason="end offsets unavailable", error=describe(exc),
                        fix="check Kafka (quantrac stack status); silence is judged again at the next check")
            return
        at = liveness.frontier(views, now)
        if at is None:
            log.info("worker.liveness_deferred", reason="a readings partition has a backlog not yet reached; silence is "
                     "judged once the worker has processed something of it")
            return
        metrics.WORKER_ARRIVAL_FRONTIER_AGE.set((now - at).total_seconds())
        async with self.lock:
            await self.follow_rebalance()
            found = liveness.overdue(list(self.liveness.items()), self.stations, at, settings.offline_grace_s)
            if not found:
                return
            alerts = await self.processor.apply([condition for _, _, condition in found])
            entries = {station_id: entry for station_id, entry, _ in found}
            await self.processor.save_state({}, entries)
            self.liveness.update(entries)
        for station_id, entry in entries.items():
            log.warning("worker.station_offline", station=station_id, received_at=entry["received_at"])
        await _delivered(_alert_sends(alerts))

    async def _partition_views(self) -> list[liveness.PartitionView]:
        """What this worker knows of each readings partition it owns (empty while unassigned).

        End offsets come from the broker at each check: the consumer's own high watermark is only as
        fresh as its last fetch, which after a pause (or a long batch) would hide the backlog. One query
        at a time: a check that finds the previous one still waiting judges nobody."""
        tps = sorted(self.consumer.assignment())
        if not tps:
            return []
        if _offsets_lock.locked():
            raise TimeoutError("the previous end-offsets query has not answered yet")
        async with _offsets_lock:
            ends = await asyncio.to_thread(_end_offsets, [(tp.topic, tp.partition) for tp in tps])
        views = []
        for tp in tps:
            offset, timestamp = self.processed.get(tp, (None, None))
            views.append(liveness.PartitionView(ends.get((tp.topic, tp.partition)), offset, liveness.kafka_time(timestamp),
                                                self.consumer.committed.get(tp)))
        return views

    def report_consumer_lag(self) -> None:
        """Set the lag gauge of each owned readings partition (partitions moved to another worker drop out)."""
        metrics.WORKER_CONSUMER_LAG.clear()
        for tp in self.consumer.assignment():
            lag = metrics.consumer_lag(self.consumer.highwater(tp), self.consumer.committed.get(tp))
            if lag is not None:
                metrics.WORKER_CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(lag)


def _alert_sends(alerts: list[dict[str, Any]]) -> list[Awaitable[Any]]:
    sends: list[Awaitable[Any]] = []
    for row in alerts:
        key, value = alert_record(row)
        metrics.ALERT_TRANSITIONS.labels("opened" if row.get("opened") else "updated").inc()
        sends.append(alerts_topic.send(key=key, value=value))
    return sends


async def _delivered(sends: Sequence[Awaitable[Any]]) -> None:
    """Wait until Kafka has every record sent (Faust's `send` returns once the record is buffered): a batch is
    committed only after what it published is delivered."""
    buffered = [await send for send in sends]
    await asyncio.gather(*buffered)


_workers: list[ReadingsWorker] = []
"""The running worker, once the task has made it (for the timers)."""


@app.task
async def consume_readings() -> None:
    """The readings path, for as long as the worker runs."""
    stations = live_registry(settings)
    log.info("worker.registry_loaded", stations=len(stations))
    worker = ReadingsWorker(stations)
    _workers[:] = [worker]
    try:
        await worker.run()
    finally:
        _workers.clear()


@app.timer(interval=settings.worker_state_snapshot_s / 2)
async def snapshot_quiet_stations() -> None:
    """Snapshot the states judged since their last snapshot whose time has come, also when no batch comes to do it."""
    for worker in list(_workers):
        await worker.snapshot_quiet_stations()


@app.timer(interval=settings.liveness_check_s)
async def check_liveness() -> None:
    """Report stations that missed their slot plus grace, up to the arrival frontier, whether or not others send."""
    for worker in list(_workers):
        await worker.check_liveness()


@app.timer(interval=5.0)
async def report_consumer_lag() -> None:
    """Publish the lag of the readings partitions this worker owns; partitions moved to another worker drop out."""
    for worker in list(_workers):
        worker.report_consumer_lag()


_offsets_client: Any = None
_offsets_lock = asyncio.Lock()


def _end_offsets(partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
    """End offsets from the broker on a connection of its own (kafka-python, no group, in a thread): a slow answer
    on the readings consumer would hold up the fetches of the readings themselves."""
    global _offsets_client
    from kafka import KafkaConsumer
    from kafka import TopicPartition as KafkaTopicPartition

    from ingest.producer import CONSUMER_OPTIONS
    if _offsets_client is None:
        _offsets_client = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap.split(","), enable_auto_commit=False,
                                        request_timeout_ms=int(max(settings.liveness_check_s, 5) * 1000) + 1000,
                                        client_id=f"{settings.worker_id}-liveness", **CONSUMER_OPTIONS)
    ends = _offsets_client.end_offsets([KafkaTopicPartition(t, p) for t, p in partitions])
    return {(tp.topic, tp.partition): int(offset) for tp, offset in ends.items()}
