"""A batch begun ahead (`BatchProcessor.begin_ahead`), on both store paths, real servers: its transaction and COPY begin
on the processor's second connection while the batch before it is still open, and `process` takes them over. It is
stored and judged as a batch that was not begun ahead; one whose batch does not come next is rolled back and holds no
key; one that repeats keys of the open batch waits for it and then goes the idempotent way; none is begun while a
transaction that created day partitions is open."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import psycopg
import pytest

from processors.pipeline import BatchProcessor, BatchResult, decode_batch
from quantrac.batch_columns import BatchColumns
from quantrac.db import save_stations
from quantrac.domain import Reading, Station, Status
from quantrac.settings import Settings
from quantrac.wire import encode_readings
from tests.utils.builders import make_station

pytestmark = pytest.mark.integration

DEADLINE_S = 60.0
"""A batch that waits longer for a lock than this is stuck (what these tests would catch)."""


def fresh_day() -> datetime:
    """Midnight UTC of a day no other test stores readings on (its partition is created by the batch, native store)."""
    return datetime(2031, 1, 1, tzinfo=timezone.utc) + timedelta(days=uuid.uuid4().int % 3000)


@pytest.fixture()
def stations(store_db: psycopg.Connection) -> tuple[Station, Station]:
    pair = make_station(cod_limit=100.0), make_station(cod_limit=100.0)
    save_stations(store_db, {s.id: s for s in pair})
    return pair


def batch(station: Station, start: datetime, minutes: range, cod: Callable[[int], float] = lambda m: 20.0) -> BatchColumns:
    """One record a minute, COD and pH, decoded as the worker decodes a Kafka batch."""
    records = []
    for m in minutes:
        ts = start + timedelta(minutes=m)
        readings = [Reading(station_id=station.id, parameter="COD", value=cod(m), unit="mg/L", ts=ts, status=Status.MEASURING),
                    Reading(station_id=station.id, parameter="pH", value=7.0, unit="-", ts=ts, status=Status.MEASURING)]
        records.append(encode_readings(station.id, readings, ts, "test"))
    return decode_batch(records)


def stored(conn: psycopg.Connection, station: Station) -> dict[tuple[str, datetime], tuple[float, datetime]]:
    rows = conn.execute("SELECT parameter, ts, value, received_at FROM readings WHERE station_id = %s", (station.id,))
    return {(p, ts): (value, received_at) for p, ts, value, received_at in rows.fetchall()}


def alerts_of(result: BatchResult) -> list[tuple[Any, ...]]:
    return sorted((a["parameter"], a["rule"], bool(a.get("opened"))) for a in result.alerts)


async def within(awaitable: Any) -> Any:
    return await asyncio.wait_for(awaitable, DEADLINE_S)


def test_a_batch_begun_ahead_is_stored_in_that_transaction_and_judged_as_one_that_is_not(
        store: Settings, store_db: psycopg.Connection, stations: tuple[Station, Station]) -> None:
    day = fresh_day()
    high = lambda m: 500.0 if 30 <= m < 45 else 20.0  # noqa: E731 (COD over its limit for a quarter of an hour)

    async def run(station: Station, ahead: bool) -> tuple[list[tuple[int, list[tuple[Any, ...]]]], list[int]]:
        processor = BatchProcessor(store.pg_dsn, {station.id: station})
        results, begun = [], []
        try:
            for first in range(0, 60, 20):
                b = batch(station, day, range(first, first + 20), high)
                if ahead:
                    await processor.begin_ahead(b)
                    begun.append(processor._ahead.stored_us if processor._ahead else 0)
                result = await within(processor.process(batch=b))
                results.append((result.new, alerts_of(result)))
        finally:
            await processor.close()
        return results, begun

    with_ahead, begun = asyncio.run(run(stations[0], ahead=True))
    without, _ = asyncio.run(run(stations[1], ahead=False))
    assert with_ahead == without
    assert [n for n, _ in with_ahead] == [40, 40, 40]
    assert any(opened for _, alerts in with_ahead for *_, opened in alerts), "the comparison saw no alert opened"
    # Each batch is stored by its transaction begun ahead: its readings carry that transaction's time.
    assert all(begun), begun
    assert {int(at.timestamp() * 1_000_000) for _, at in stored(store_db, stations[0]).values()} == set(begun)


def test_an_ahead_whose_batch_does_not_come_next_is_rolled_back_and_holds_no_key(
        store: Settings, store_db: psycopg.Connection, stations: tuple[Station, Station]) -> None:
    station = stations[0]
    day = fresh_day()
    first = batch(station, day, range(0, 5))
    begun = batch(station, day, range(5, 25))
    instead = batch(station, day, range(5, 30), cod=lambda m: 25.0 if m == 5 else 20.0)  # one of begun's keys differs
    dropped = batch(station, day, range(40, 50))

    async def run() -> tuple[BatchResult, BatchResult, BatchResult]:
        processor = BatchProcessor(store.pg_dsn, {station.id: station})
        other = BatchProcessor(store.pg_dsn, {station.id: station})
        try:
            await processor.process(batch=first)
            await processor.begin_ahead(begun)
            assert processor._ahead is not None
            came = await within(processor.process(batch=instead))  # would wait on begun's uncommitted keys
            again = await within(processor.process(batch=begun))
            await processor.process(batch=batch(station, day, range(30, 40)))  # all new: the direct way again
            await processor.begin_ahead(dropped)
            assert processor._ahead is not None
            await processor.drop_ahead()  # as after a rebalance: another worker stores the batch
            elsewhere = await within(other.process(batch=batch(station, day, range(40, 50))))
        finally:
            await processor.close()
            await other.close()
        return came, again, elsewhere

    came, again, elsewhere = asyncio.run(run())
    assert (came.new, again.new, elsewhere.new) == (50, 0, 20)
    assert [key for key, _ in again.deadletters] == [station.id.encode()]  # minute 5's COD: 20 against the stored 25
    assert stored(store_db, station)[("COD", day + timedelta(minutes=5))][0] == 25.0
    assert len(stored(store_db, station)) == 2 * (5 + 25 + 10 + 10)


def test_an_ahead_that_repeats_keys_of_the_open_batch_waits_for_it_then_goes_the_idempotent_way(
        store: Settings, store_db: psycopg.Connection, stations: tuple[Station, Station]) -> None:
    station = stations[0]
    day = fresh_day()
    earlier = batch(station, day, range(0, 5))  # creates the day's partition, committed before the overlap
    open_batch = batch(station, day, range(5, 25))
    repeats = batch(station, day, range(15, 35), cod=lambda m: 30.0 if m == 20 else 20.0)

    async def run() -> tuple[BatchResult, BatchResult]:
        processor = BatchProcessor(store.pg_dsn, {station.id: station})
        try:
            await processor.process(batch=earlier)
            processor.judged.clear()
            first = asyncio.ensure_future(processor.process(batch=open_batch))
            await within(processor.judged.wait())
            await within(processor.begin_ahead(repeats))  # begins once the open batch's COPY is done, then waits on its keys
            assert processor._ahead is not None
            return await within(first), await within(processor.process(batch=repeats))
        finally:
            await processor.close()

    one, two = asyncio.run(run())
    assert (one.new, two.new) == (40, 20)
    assert len(two.deadletters) == 1  # minute 20's COD, 30 against the stored 20
    assert len(stored(store_db, station)) == 2 * 35


def test_no_batch_begins_ahead_while_a_transaction_that_created_day_partitions_is_open(
        store: Settings, store_db: psycopg.Connection, stations: tuple[Station, Station]) -> None:
    station = stations[0]
    day = fresh_day()
    opening, following = batch(station, day, range(0, 20)), batch(station, day, range(20, 40))

    async def run() -> tuple[bool, bool, int]:
        processor = BatchProcessor(store.pg_dsn, {station.id: station})
        try:
            processor.judged.clear()
            first = asyncio.ensure_future(processor.process(batch=opening))
            await within(processor.judged.wait())
            await within(processor.begin_ahead(following))
            while_open = processor._ahead is not None
            await within(first)
            await processor.begin_ahead(following)
            after = processor._ahead is not None
            return while_open, after, (await within(processor.process(batch=following))).new
        finally:
            await processor.close()

    assert asyncio.run(run()) == (False, True, 40)
    assert len(stored(store_db, station)) == 80
