"""The readings agent: take a batch, hand it to the pipeline, publish the alerts it raised.

Concurrency stays 1 (faust-streaming #606: with more, an offset can be committed past an
event still in flight). Batches come from `stream.noack_take` and are acknowledged by hand
once stored and published: `stream.take` would acknowledge a batch in a `finally`, even when
the agent is stopped half-way through it (stack notes, faust trap 9). The pipeline retries a
batch until the database takes it.

The stations' detection states and last-seen times (liveness entries) live in the worker for the
stations of the readings partitions it owns, and in the store (`processors.worker_state`). A
detection state is snapshotted every `QUANTRAC_WORKER_STATE_SNAPSHOT_S` (`SnapshotPlan`; a timer
writes those due when no batch comes), not after every batch; liveness entries are written with
every batch, before it is acknowledged. After a rebalance (a new consumer generation) the worker
drops what it kept: a station's state is read from its snapshot at its next batch and brought up to
date from the readings stored since (`BatchProcessor._replay`), and the liveness entries of the
owned partitions are read back at once. A timer reports silent stations, judged against the arrival
frontier of the partitions this worker owns (`liveness.frontier`), so a worker that is behind does
not mistake its backlog for silence.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone
from typing import Any, Iterable

import structlog

from alerts.rules import Condition
from processors import liveness
from processors.app import alerts_topic, app, deadletter_topic, readings_topic, settings
from processors.detection import DetectionConfig
from processors.detection_state import SnapshotPlan
from processors.faust_compat import committed_offset
from processors.pipeline import BatchProcessor, DeadLetter, alert_record, decode_batch, last_seen
from processors.worker_state import Entry, partition_of
from quantrac import metrics
from quantrac.db import live_registry
from quantrac.failures import describe
from quantrac.registry import RegistryCache

log = structlog.get_logger(__name__)


_stations: RegistryCache | None = None
_processed: dict[Any, tuple[int, float | None]] = {}
"""Readings partition → (offset, Kafka timestamp in s) of the last record this worker stored and acknowledged."""


def _registry() -> RegistryCache:
    """The registry, shared by the agent and the liveness timer."""
    global _stations
    if _stations is None:
        _stations = live_registry(settings)
        log.info("worker.registry_loaded", stations=len(_stations))
    return _stations


async def _publish(alerts: list[dict[str, Any]]) -> None:
    for row in alerts:
        key, value = alert_record(row)
        metrics.ALERT_TRANSITIONS.labels("opened" if row.get("opened") else "updated").inc()
        await alerts_topic.send(key=key, value=value)


def _note_seen(seen: dict[str, tuple[datetime, datetime]], stations: RegistryCache) -> tuple[list[Condition], dict[str, Entry]]:
    """The liveness entries after a batch's receipts, and the conditions clearing `station_offline` for stations back
    from silence (their entries keep the offline flag until the batch that clears it is stored)."""
    recoveries: list[Condition] = []
    entries: dict[str, Entry] = {}
    for station_id, (event_ts, received_at) in seen.items():
        station = stations.get(station_id)
        if station is None:
            continue
        entry, recovery = liveness.seen(_liveness.get(station_id), station, event_ts, received_at)
        if recovery is not None:
            recoveries.append(recovery)
        entries[station_id] = entry
    return recoveries, entries


_snapshots = SnapshotPlan(settings.worker_state_snapshot_s)
_judging = asyncio.Lock()
"""Held while a batch or a timer works on the kept states and liveness entries."""
_processors: list[BatchProcessor] = []
"""The agent's processor, once it runs (for the timers)."""
_liveness: dict[str, Entry] = {}
"""Liveness entries of the stations of the readings partitions this worker owns."""
_generation: list[int] = []
"""The consumer generation the kept states and `_liveness` belong to."""


def _owned_partitions() -> set[int]:
    topic = readings_topic.get_topic_name()
    return {tp.partition for tp in app.consumer.assignment() if tp.topic == topic}


async def _follow_rebalance(processor: BatchProcessor) -> None:
    """After a rebalance, drop the kept states and read the owned stations' liveness entries back from the store.

    Another worker may have judged any station meanwhile; its snapshots and entries are in the store. Held under
    `_judging`."""
    generation = app.consumer_generation_id
    if _generation == [generation]:
        return
    processor.forget_all()
    owned = _owned_partitions()
    stored = await processor.load_liveness()
    _liveness.clear()
    _liveness.update({i: e for i, e in stored.items() if partition_of(i, settings.topic_partitions) in owned})
    _generation[:] = [generation]
    log.info("worker.state_reset", generation=generation, partitions=sorted(owned), liveness_entries=len(_liveness),
             reason="a rebalance: detection states are read from their snapshots at their next batch")


async def _save_snapshots_due(processor: BatchProcessor, judged: Iterable[str], liveness_entries: dict[str, Entry]) -> None:
    due = _snapshots.due(judged, processor.unsnapshotted, time.monotonic())
    await processor.save_state(processor.snapshot(due), liveness_entries)


@app.agent(readings_topic, concurrency=1)
async def store_readings(stream: Any) -> None:
    """The readings agent: store, judge and alert on every batch of the readings topic."""
    stations = _registry()
    processor = BatchProcessor(settings.pg_dsn, stations, DetectionConfig.from_settings(settings))
    _processors[:] = [processor]
    try:
        async for events in stream.noack_take(settings.worker_batch_size, within=settings.worker_batch_latency_s):
            batch = [event.value for event in events]
            metrics.WORKER_RECORDS_IN.inc(len(batch))
            metrics.WORKER_BATCH_RECORDS.observe(len(batch))
            undecodable: list[DeadLetter] = []
            columns = decode_batch(batch, undecodable)
            async with _judging:
                await _follow_rebalance(processor)
                recoveries, entries = _note_seen(last_seen(columns), stations)
                result = await processor.process(batch=columns, extra=recoveries)
                _liveness.update(entries)
                await _save_snapshots_due(processor, result.states, entries)
            await _publish(result.alerts)
            for key, value in [*undecodable, *result.deadletters]:
                await deadletter_topic.send(key=key, value=value)
            for event in events:
                await stream.ack(event)
                message = event.message
                _processed[message.tp] = (message.offset, message.timestamp)
            log.debug("worker.batch", records=len(batch), new_readings=result.new, alerts=len(result.alerts), late=result.late)
    finally:  # no snapshot here: Faust's producer may be stopping already, and the next owner replays from the store
        _processors.clear()
        await processor.close()


@app.timer(interval=settings.worker_state_snapshot_s / 2)
async def snapshot_quiet_stations() -> None:
    """Snapshot the states judged since their last snapshot whose time has come, also when no batch comes to do it."""
    if not _processors:
        return
    async with _judging:
        if _processors:
            await _follow_rebalance(_processors[0])
            await _save_snapshots_due(_processors[0], (), {})


@app.timer(interval=settings.liveness_check_s)
async def check_liveness() -> None:
    """Report stations that missed their slot plus grace, up to the arrival frontier, whether or not others send."""
    stations = _registry()
    now = datetime.now(timezone.utc)  # before asking the broker: what arrived by now is below the end offsets
    try:
        views = await asyncio.wait_for(asyncio.shield(_partition_views()), timeout=settings.liveness_check_s)
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
    async with _judging:
        if not _processors:
            return
        await _follow_rebalance(_processors[0])
        found = liveness.overdue(list(_liveness.items()), stations, at, settings.offline_grace_s)
        if not found:
            return
        alerts = await _processors[0].apply([condition for _, _, condition in found])
        entries = {station_id: entry for station_id, entry, _ in found}
        await _processors[0].save_state({}, entries)
        _liveness.update(entries)
    for station_id, entry in entries.items():
        log.warning("worker.station_offline", station=station_id, received_at=entry["received_at"])
    await _publish(alerts)


_offsets_client: Any = None
_offsets_lock = asyncio.Lock()


def _end_offsets(partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
    """End offsets from the broker on a connection of its own (kafka-python, no group), never on Faust's
    consumer thread: a slow answer there would hold up the fetches of the readings themselves."""
    global _offsets_client
    from kafka import KafkaConsumer, TopicPartition

    from ingest.producer import CONSUMER_OPTIONS
    if _offsets_client is None:
        _offsets_client = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap.split(","), enable_auto_commit=False,
                                        request_timeout_ms=int(max(settings.liveness_check_s, 5) * 1000) + 1000,
                                        client_id=f"{settings.worker_id}-liveness", **CONSUMER_OPTIONS)
    ends = _offsets_client.end_offsets([TopicPartition(t, p) for t, p in partitions])
    return {(tp.topic, tp.partition): int(offset) for tp, offset in ends.items()}


async def _partition_views() -> list[liveness.PartitionView]:
    """What this worker knows of each readings partition it owns (empty while unassigned).

    End offsets come from the broker at each check: the consumer's own high watermark is only as
    fresh as its last fetch, which after a pause (or a long batch) would hide the backlog. One query
    at a time: a check that finds the previous one still waiting judges nobody."""
    consumer = app.consumer
    tps = [tp for tp in consumer.assignment() if tp.topic == readings_topic.get_topic_name()]
    if not tps:
        return []
    if _offsets_lock.locked():
        raise TimeoutError("the previous end-offsets query has not answered yet")
    async with _offsets_lock:
        ends = await asyncio.to_thread(_end_offsets, [(tp.topic, tp.partition) for tp in tps])
    views = []
    for tp in tps:
        offset, timestamp = _processed.get(tp, (None, None))
        views.append(liveness.PartitionView(ends.get((tp.topic, tp.partition)), offset, liveness.kafka_time(timestamp),
                                            committed_offset(consumer, tp)))
    return views


@app.timer(interval=5.0)
async def report_consumer_lag() -> None:
    """Publish the lag of the readings partitions this worker owns; partitions moved to another worker drop out."""
    consumer = app.consumer
    metrics.WORKER_CONSUMER_LAG.clear()
    for tp in consumer.assignment():
        if tp.topic != readings_topic.get_topic_name():
            continue
        lag = metrics.consumer_lag(consumer.highwater(tp), committed_offset(consumer, tp))
        if lag is not None:
            metrics.WORKER_CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(lag)
