"""The worker's state in the store (`processors.worker_state`), on both store paths (TimescaleDB and native PostgreSQL).

A detection state read back from an older snapshot (a restart, a rebalance, a failed batch) is brought up to date
from the readings stored since, and judges on as if nothing had happened; the oracle is `detect` in memory, batch
after batch, with no snapshot and no store. Liveness entries come back as they were written.
"""

from __future__ import annotations

import asyncio
import math
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
import psycopg
import pytest
from structlog.testing import capture_logs

from processors import pipeline
from processors.detection import DetectionConfig, detect
from processors.detection_state import StationState
from processors.pipeline import BatchProcessor
from quantrac.batch_columns import as_datetime
from quantrac.db import save_stations
from quantrac.domain import DetectorChannel, Reading, Station, Status
from quantrac.settings import Settings
from quantrac.wire import encode_readings
from tests.utils.builders import make_station

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 29, 3, 0, tzinfo=timezone.utc)
BATCH = 20
"""Readings times per batch (each with COD, pH and Flow)."""


def _station() -> Station:
    return make_station(cod_limit=100.0).model_copy(update={"channels": (
        DetectorChannel(detector="spike"), DetectorChannel(detector="drift"), DetectorChannel(detector="flatline"),
        DetectorChannel(detector="multivariate", columns=("COD", "pH")))})


def _batch(station: Station, k: int) -> list[Reading]:
    """Batch `k`: COD, pH and Flow every 5 min, with a calibration run, device faults and an excursion in later batches."""
    out: list[Reading] = []
    for i in range(k * BATCH, (k + 1) * BATCH):
        ts = T0 + timedelta(minutes=5 * i)
        cod = 40.0 + 10.0 * math.sin(i / 20.0) + (150.0 if 95 <= i < 102 else 0.0)
        out.append(Reading(station_id=station.id, parameter="COD", value=round(cod, 1), unit="mg/L", ts=ts,
                           status=Status.CALIBRATING if 50 <= i < 54 else Status.MEASURING))
        faulty = 70 <= i < 73
        out.append(Reading(station_id=station.id, parameter="pH", value=None if faulty else round(7.0 + 0.1 * math.cos(i / 7.0), 2),
                           unit="-", ts=ts, status=Status.FAULT if faulty else Status.MEASURING))
        out.append(Reading(station_id=station.id, parameter="Flow", value=float(i % 3), unit="m3/h", ts=ts))
    return out


def _comparable(state: StationState | bytes) -> dict[str, Any]:
    """A state's JSON without what names the writer (token) or the store transaction."""
    raw = state if isinstance(state, bytes) else orjson.dumps(state.to_json())
    found: dict[str, Any] = orjson.loads(raw)
    found.pop("token", None)
    found.pop("stored_through_us", None)
    return found


def _oracle(station: Station, batches: int) -> StationState:
    state: StationState | None = None
    for k in range(batches):
        state = detect(state, _batch(station, k), station, DetectionConfig()).state
    assert state is not None
    return state


async def _process(processor: BatchProcessor, station: Station, k: int) -> None:
    record = encode_readings(station.id, _batch(station, k), T0 + timedelta(minutes=5 * BATCH * (k + 1)), "mqtt")
    result = await processor.process([record])
    assert result.new == 3 * BATCH


def _stored_snapshot(conn: psycopg.Connection, station: Station) -> bytes:
    row = conn.execute("SELECT state FROM detection_snapshots WHERE station_id = %s", (station.id,)).fetchone()
    assert row is not None, "no snapshot stored"
    return bytes(row[0])


def test_a_state_read_back_from_an_older_snapshot_replays_what_was_stored_since(store: Settings, store_db: psycopg.Connection,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Worker A snapshots after batch 2 only, its batch 4 comes after a rebalance (its kept states are dropped) and its
    batch 5 fails once after detection (its kept state is dropped); worker B takes over from the snapshot for batch 6.
    Each ends with the oracle's state."""
    station = _station()
    save_stations(store_db, {station.id: station})
    record_completeness = pipeline.completeness.record
    failures = []

    async def fail_once(conn: Any, *args: Any) -> None:
        if failures == ["armed"]:
            failures.append("failed")
            raise psycopg.OperationalError("injected: the connection broke after detection")
        await record_completeness(conn, *args)

    async def run() -> tuple[bytes, bytes, bytes]:
        a = BatchProcessor(store.pg_dsn, {station.id: station})
        try:
            for k in range(5):
                if k == 2:
                    await a.save_state(a.snapshot([station.id]), {})
                    snapshot = _stored_snapshot(store_db, station)
                if k == 3:
                    a.forget_all()
                if k == 4:
                    failures.append("armed")
                await _process(a, station, k)
            after_a = a.snapshot([station.id])[station.id]
        finally:
            await a.close()
        b = BatchProcessor(store.pg_dsn, {station.id: station})
        try:
            await _process(b, station, 5)
            after_b = b.snapshot([station.id])[station.id]
        finally:
            await b.close()
        return snapshot, after_a, after_b

    monkeypatch.setattr(pipeline.completeness, "record", fail_once)
    snapshot, after_a, after_b = asyncio.run(run())
    assert failures == ["armed", "failed"]
    assert _comparable(snapshot) == _comparable(_oracle(station, 2))
    assert _comparable(after_a) == _comparable(_oracle(station, 5))
    assert _comparable(after_b) == _comparable(_oracle(station, 6))
    without_replay = detect(orjson.loads(snapshot), _batch(station, 5), station, DetectionConfig()).state
    assert _comparable(without_replay) != _comparable(after_b), "the replay is what brings the snapshot up to date"
    stored_through = orjson.loads(after_b)["stored_through_us"]
    newest = store_db.execute("SELECT max(received_at) FROM readings WHERE station_id = %s", (station.id,)).fetchone()
    assert newest is not None and as_datetime(stored_through) == newest[0]


def test_a_worker_keeps_judging_on_its_kept_state_between_snapshots(store: Settings, store_db: psycopg.Connection) -> None:
    """No snapshot at all: the kept state carries every batch, and its snapshot at the end is the oracle's; the station
    is named as one with no snapshot (the worker writes those at once)."""
    station = _station()
    save_stations(store_db, {station.id: station})

    async def run() -> tuple[bytes, set[str]]:
        processor = BatchProcessor(store.pg_dsn, {station.id: station})
        try:
            for k in range(4):
                await _process(processor, station, k)
            return processor.snapshot([station.id])[station.id], set(processor.unsnapshotted)
        finally:
            await processor.close()

    snapshot, unsnapshotted = asyncio.run(run())
    assert _comparable(snapshot) == _comparable(_oracle(station, 4))
    assert unsnapshotted == {station.id}


def test_a_batch_presumed_new_that_repeats_stored_readings_is_judged_again_from_the_snapshot(
        store: Settings, store_db: psycopg.Connection) -> None:
    """A batch is judged while the direct COPY stores it, presumed new after an all-new batch. When it repeats stored
    readings (a redelivery), the COPY refuses it: the judgement is dropped, the state read back from its snapshot and
    replayed, and the batch judged again on the idempotent way, so each reading is judged once (the oracle's state)."""
    station = _station()
    save_stations(store_db, {station.id: station})

    async def run() -> tuple[list[int], bytes, list[str]]:
        processor = BatchProcessor(store.pg_dsn, {station.id: station})
        try:
            await _process(processor, station, 0)
            await processor.save_state(processor.snapshot([station.id]), {})  # as the worker does for a station's first batch
            for k in (1, 2):
                await _process(processor, station, k)
            repeated = [*_batch(station, 2)[-12:], *_batch(station, 3)]
            with capture_logs() as logs:
                again = await processor.process([encode_readings(station.id, repeated, T0 + timedelta(days=1), "mqtt")])
            after = await processor.process([encode_readings(station.id, _batch(station, 4), T0 + timedelta(days=1), "mqtt")])
            return [again.new, after.new], processor.snapshot([station.id])[station.id], [e["event"] for e in logs]
        finally:
            await processor.close()

    new, state, events = asyncio.run(run())
    assert new == [3 * BATCH, 3 * BATCH]
    assert "worker.state_replayed" in events, "the refused judgement's state was read back from the snapshot"
    assert _comparable(state) == _comparable(_oracle(station, 5))


def test_a_station_the_worker_does_not_know_is_stored_without_reading_its_state_back(
        store: Settings, store_db: psycopg.Connection) -> None:
    """Readings of a station the registry does not hold (retired, or not loaded yet) are stored and not judged; its
    snapshot is not read back and replayed with each of its batches. Known again, it replays what was stored meanwhile."""
    station = _station()
    save_stations(store_db, {station.id: station})

    async def run() -> tuple[list[str], list[dict[str, Any]]]:
        stations = {station.id: station}
        processor = BatchProcessor(store.pg_dsn, stations)
        try:
            await _process(processor, station, 0)
            await processor.save_state(processor.snapshot([station.id]), {})
            del stations[station.id]
            processor.forget_all()
            with capture_logs() as unknown:
                for k in (1, 2):
                    await _process(processor, station, k)
            stations[station.id] = station
            with capture_logs() as known:
                await _process(processor, station, 3)
            return [e["event"] for e in unknown], [e for e in known if e["event"] == "worker.state_replayed"]
        finally:
            await processor.close()

    unknown, replayed = asyncio.run(run())
    assert "worker.state_replayed" not in unknown
    assert [e["readings"] for e in replayed] == [2 * 3 * BATCH]


def test_liveness_entries_come_back_as_written(store: Settings, store_db: psycopg.Connection) -> None:
    station = _station()
    save_stations(store_db, {station.id: station})
    first = {"event_ts": T0.isoformat(), "received_at": (T0 + timedelta(seconds=3)).isoformat(), "offline": False,
             "back_since": (T0 + timedelta(seconds=3)).isoformat(),
             "clock": {"alerted": True, "received_at": T0.isoformat(), "event_ts": T0.isoformat(), "latest_ts": T0.isoformat()}}
    second = {"event_ts": T0.isoformat(), "received_at": (T0 + timedelta(seconds=3)).isoformat(), "offline": True}

    async def run() -> tuple[dict[str, Any], dict[str, Any]]:
        processor = BatchProcessor(store.pg_dsn, {station.id: station})
        try:
            await processor.save_state({}, {station.id: first})
            once = (await processor.load_liveness())[station.id]
            await processor.save_state({}, {station.id: second})
            return once, (await processor.load_liveness())[station.id]
        finally:
            await processor.close()

    once, twice = asyncio.run(run())
    assert once == first and twice == second


def _entry(at: datetime) -> dict[str, Any]:
    return {"event_ts": at.isoformat(), "received_at": (at + timedelta(seconds=3)).isoformat(), "offline": False}


def test_the_worker_s_snapshots_and_liveness_entries_are_written_in_the_batch_s_own_transaction(
        store: Settings, store_db: psycopg.Connection) -> None:
    """`KeptWrites`: the snapshot due and the liveness entry are stored with the readings, in their transaction (the
    snapshot's `written_at` is the readings' `received_at`, both that transaction's `now()`), the snapshot as the batch
    left the state."""
    station = _station()
    save_stations(store_db, {station.id: station})
    entry = _entry(T0)
    asked: list[list[str]] = []

    def due(judged: Any) -> set[str]:
        asked.append(sorted(judged))
        return set(judged)

    async def run() -> bytes:
        processor = BatchProcessor(store.pg_dsn, {station.id: station})
        try:
            record = encode_readings(station.id, _batch(station, 0), T0 + timedelta(minutes=5 * BATCH), "mqtt")
            result = await processor.process([record], kept=pipeline.KeptWrites({station.id: entry}, due))
            assert result.new == 3 * BATCH
            return processor.snapshot([station.id])[station.id]
        finally:
            await processor.close()

    after = asyncio.run(run())
    assert asked == [[station.id]]
    assert _comparable(_stored_snapshot(store_db, station)) == _comparable(after) == _comparable(_oracle(station, 1))
    stored_at = store_db.execute("SELECT DISTINCT received_at FROM readings WHERE station_id = %s", (station.id,)).fetchall()
    written_at = store_db.execute("SELECT written_at FROM detection_snapshots WHERE station_id = %s", (station.id,)).fetchone()
    assert stored_at == [written_at]
    liveness = store_db.execute("SELECT event_ts, received_at FROM station_liveness WHERE station_id = %s",
                                (station.id,)).fetchone()
    assert liveness == (T0, T0 + timedelta(seconds=3))


def test_a_batch_stored_record_by_record_still_writes_the_worker_s_snapshots_and_liveness_entries(
        store: Settings, store_db: psycopg.Connection) -> None:
    """A batch PostgreSQL refuses as a whole (two values whose bucket sum overflows) is stored record by record, its bad
    record quarantined; the `KeptWrites` are written once that is done, with the good record's state."""
    station = _station()
    save_stations(store_db, {station.id: station})
    edge = [Reading(station_id=station.id, parameter="COD", value=1.7e308, unit="mg/L", ts=T0 - timedelta(minutes=m))
            for m in (1, 2)]
    records = [encode_readings(station.id, edge, T0, "mqtt"),
               encode_readings(station.id, _batch(station, 0), T0 + timedelta(minutes=5 * BATCH), "mqtt")]

    async def run() -> tuple[int, int]:
        processor = BatchProcessor(store.pg_dsn, {station.id: station})
        try:
            result = await processor.process(records, kept=pipeline.KeptWrites({station.id: _entry(T0)}, set))
            return result.new, len(result.deadletters)
        finally:
            await processor.close()

    assert asyncio.run(run()) == (3 * BATCH, 1)
    assert _stored_snapshot(store_db, station)
    assert store_db.execute("SELECT offline FROM station_liveness WHERE station_id = %s", (station.id,)).fetchone() == (False,)
