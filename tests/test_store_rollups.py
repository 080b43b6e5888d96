"""Rollups on both store paths, real servers: rollup tables kept by the writer (native PostgreSQL)
and continuous aggregates (TimescaleDB) hold the same numbers as a GROUP BY over the raw readings;
SQL buckets match the Python rule, a late reading corrects exactly its buckets, a replayed batch is
stored once (binary COPY through the writer) and leaves the rollups unchanged."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from typing import Any, Sequence, TypeVar

import psycopg
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from processors.partitions import refresh_aggregates
from processors.pipeline import BatchProcessor, decode_batch
from processors.reading_writer import ReadingWriter
from processors.rollups import ROLLUPS, VALID_SQL, LateRefresh, bucket_sql, rebuild_rollups, update_rollups
from quantrac.batch_columns import BatchColumns
from quantrac.db import connect, save_stations
from quantrac.domain import Reading, Station, Status
from quantrac.settings import Settings
from quantrac.timebuckets import bucket_start
from quantrac.wire import encode_readings
from tests.utils.builders import make_station

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 20, 16, 0, tzinfo=timezone.utc)  # 23:00 in Hanoi: the local day ends within the hour


@pytest.fixture()
def station(store_db: psycopg.Connection) -> Station:
    s = make_station(cod_limit=1000.0)
    save_stations(store_db, {s.id: s})
    return s


def reading(station: Station, ts: datetime, value: float | None, status: Status = Status.MEASURING,
            parameter: str = "COD") -> Reading:
    return Reading(station_id=station.id, parameter=parameter, value=value, unit="mg/L", ts=ts, status=status)


Batch = TypeVar("Batch", BatchColumns, list[Reading])


async def _store(dsn: str, readings: Batch, writer: ReadingWriter | None = None) -> Batch:
    """What the worker does with a batch, minus the rules: store, then roll up the new readings, one transaction;
    then (TimescaleDB) refresh the aggregates for readings older than their last refresh."""
    writer = writer or ReadingWriter()
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        async with conn.transaction():
            new = await writer.write(conn, readings)
            await update_rollups(conn, new)
        await LateRefresh().run(conn, new)
    return new


def store_readings(settings: Settings, readings: list[Reading]) -> list[Reading]:
    return asyncio.run(_store(settings.pg_dsn, readings))


def rollup_rows(conn: psycopg.Connection, station_id: str) -> dict[tuple[str, str, datetime], tuple[Any, ...]]:
    rows = {}
    for bucket, table in ROLLUPS.items():
        for r in conn.execute(f"SELECT parameter, bucket, avg, min, max, count, count_valid FROM {table} "
                              "WHERE station_id = %s", (station_id,)):
            rows[(bucket, r[0], r[1])] = tuple(r[2:])
    return rows


def expected_rollups(readings: Sequence[Reading]) -> dict[tuple[str, str, datetime], tuple[Any, ...]]:
    """The rollups computed in Python from the readings (the oracle)."""
    groups: dict[tuple[str, str, datetime], list[Reading]] = {}
    for r in readings:
        for bucket in ROLLUPS:
            groups.setdefault((bucket, r.parameter, bucket_start(r.ts, bucket)), []).append(r)
    out = {}
    for key, members in groups.items():
        valid = [m.value for m in members if m.is_valid_measurement]
        out[key] = (sum(valid) / len(valid) if valid else None, min(valid, default=None), max(valid, default=None),
                    len(members), len(valid))
    return out


def approx(rows: dict[Any, tuple[Any, ...]]) -> dict[Any, tuple[Any, ...]]:
    return {k: tuple(pytest.approx(v) if isinstance(v, float) else v for v in row) for k, row in rows.items()}


@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ts=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2060, 1, 1), timezones=st.just(timezone.utc)),
       bucket=st.sampled_from(sorted(ROLLUPS)))
def test_sql_buckets_match_the_python_rule(db: psycopg.Connection, ts: datetime, bucket: str) -> None:
    row = db.execute(f"SELECT {bucket_sql(bucket, '%s::timestamptz')}", (ts,)).fetchone()
    assert row is not None and row[0] == bucket_start(ts, bucket)


def test_rollups_hold_mean_min_max_over_valid_readings_and_count_all(
        store: Settings, store_db: psycopg.Connection, station: Station) -> None:
    readings = [reading(station, T0 + timedelta(minutes=m), float(m)) for m in range(0, 120, 1)]
    readings += [reading(station, T0 + timedelta(minutes=3, seconds=30), None, Status.FAULT),
                 reading(station, T0 + timedelta(minutes=61, seconds=30), 9999.0, Status.CALIBRATING)]
    store_readings(store, readings)
    assert rollup_rows(store_db, station.id) == approx(expected_rollups(readings))
    assert rollup_rows(store_db, station.id)[("5m", "COD", T0)] == (2.0, 0.0, 4.0, 6, 5)


def test_a_late_reading_corrects_exactly_its_buckets(store: Settings, store_db: psycopg.Connection, station: Station) -> None:
    on_time = [reading(station, T0 + timedelta(minutes=m), 10.0 + m % 7, parameter=p)
               for m in range(0, 180, 5) for p in ("COD", "pH")]
    store_readings(store, on_time)
    before = rollup_rows(store_db, station.id)

    late = reading(station, T0 + timedelta(minutes=62), 500.0)
    assert store_readings(store, [late]) == [late]
    after = rollup_rows(store_db, station.id)

    changed = {k for k in after if after[k] != before.get(k)}
    assert changed == {("5m", "COD", T0 + timedelta(minutes=60)), ("1h", "COD", T0 + timedelta(hours=1)),
                       ("1d", "COD", bucket_start(late.ts, "1d"))}
    assert after == approx(expected_rollups([*on_time, late]))


def test_a_replayed_batch_is_stored_once_and_leaves_the_rollups_unchanged(
        store: Settings, store_db: psycopg.Connection, station: Station) -> None:
    batch = [reading(station, T0 + timedelta(minutes=m), float(m)) for m in range(30)]
    assert len(store_readings(store, batch)) == 30
    before = rollup_rows(store_db, station.id)
    assert store_readings(store, batch) == []
    assert store_readings(store, [*batch[:10], *batch[:10]]) == []
    assert store_db.execute("SELECT count(*) FROM readings WHERE station_id = %s", (station.id,)).fetchone() == (30,)
    assert rollup_rows(store_db, station.id) == before


def test_the_worker_batch_path_maintains_the_rollups(store: Settings, store_db: psycopg.Connection, station: Station) -> None:
    """`BatchProcessor` (what the Faust agent calls) updates the rollups in the batch's transaction."""
    readings = [reading(station, T0 + timedelta(minutes=m), 20.0) for m in range(10)]
    record = encode_readings(station.id, readings, T0, "test")

    async def run() -> tuple[int, int]:
        processor = BatchProcessor(store.pg_dsn, {station.id: station})
        try:
            first = (await processor.process([record])).new
            replay = (await processor.process([record])).new
        finally:
            await processor.close()
        return first, replay

    assert asyncio.run(run()) == (10, 0)
    assert rollup_rows(store_db, station.id) == approx(expected_rollups(readings))


def test_rebuild_recomputes_the_same_rollups_in_sql(native_server: Settings) -> None:
    """Native PostgreSQL only: its rollups are tables the writer maintains (TimescaleDB recomputes its own)."""
    with connect(native_server.pg_dsn) as db:
        station = make_station(cod_limit=1000.0)
        save_stations(db, {station.id: station})
        readings = [reading(station, T0 + timedelta(minutes=7 * m), float(m % 11)) for m in range(40)]
        store_readings(native_server, readings)
        incremental = rollup_rows(db, station.id)
        for table in ROLLUPS.values():
            db.execute(f"DELETE FROM {table} WHERE station_id = %s", (station.id,))
        day = bucket_start(T0, "1d")
        rebuild_rollups(db, day, day + timedelta(days=2), station.id)
        assert rollup_rows(db, station.id) == approx(incremental)


def group_by_raw(conn: psycopg.Connection, station_id: str) -> dict[tuple[str, str, datetime], tuple[Any, ...]]:
    """The rollups as one GROUP BY over the raw readings, with the buckets of `bucket_sql` (the oracle in SQL)."""
    rows = {}
    for bucket in ROLLUPS:
        for r in conn.execute(f"SELECT parameter, {bucket_sql(bucket)} AS b, avg(value) FILTER (WHERE {VALID_SQL}), "
                              f"min(value) FILTER (WHERE {VALID_SQL}), max(value) FILTER (WHERE {VALID_SQL}), count(*), "
                              f"count(*) FILTER (WHERE {VALID_SQL}) FROM readings WHERE station_id = %s GROUP BY 1, 2",
                              (station_id,)):
            rows[(bucket, r[0], r[1])] = tuple(r[2:])
    return rows


def test_the_rollups_equal_a_group_by_over_the_raw_readings_before_and_after_refresh(
        store: Settings, store_db: psycopg.Connection, station: Station) -> None:
    """Two days of 1-minute readings of two parameters, some faulty, NaN and calibrating: the rollups
    equal a GROUP BY over raw, as written (TimescaleDB: real-time aggregation of unmaterialised
    buckets) and after the refresh the worker's maintenance makes (TimescaleDB: materialised)."""
    start = T0 - timedelta(days=1)
    readings = []
    for m in range(0, 2 * 24 * 60, 1):
        status = Status.FAULT if m % 97 == 0 else Status.CALIBRATING if m % 89 == 0 else Status.MEASURING
        value = float("nan") if m % 113 == 0 else float((m * 37) % 101)
        readings += [reading(station, start + timedelta(minutes=m), value, status),
                     reading(station, start + timedelta(minutes=m), 7.0 + (m % 5) / 10, parameter="pH")]
    store_readings(store, readings)
    oracle = group_by_raw(store_db, station.id)
    assert len(oracle) == 2 * (2 * 24 * 12 + 2 * 24 + 3)  # two parameters; two UTC days touch three local days
    assert rollup_rows(store_db, station.id) == approx(oracle)
    refreshed = refresh_aggregates(store_db, until=T0 + timedelta(days=2))
    assert refreshed == (list(ROLLUPS.values()) if store.pg_timescaledb else [])
    assert rollup_rows(store_db, station.id) == approx(oracle)


def test_values_whose_bucket_sums_overflow_fail_the_batch_on_both_stores(
        store: Settings, store_db: psycopg.Connection, station: Station) -> None:
    """Two readings at float64's edge in one bucket: the batch fails with NumericValueOutOfRange on both
    stores (the worker then stores record by record and quarantines the record), and nothing is stored.
    On TimescaleDB, storing it would break every later refresh of the aggregates over its window."""
    edge = [reading(station, T0 + timedelta(minutes=m), 1.7e308) for m in (1, 2)]
    with pytest.raises(psycopg.errors.NumericValueOutOfRange):
        store_readings(store, edge)
    assert store_db.execute("SELECT count(*) FROM readings WHERE station_id = %s", (station.id,)).fetchone() == (0,)
    assert len(store_readings(store, edge[:1])) == 1  # alone in its buckets it sums: stored
    assert rollup_rows(store_db, station.id)[("5m", "COD", T0)] == (1.7e308, 1.7e308, 1.7e308, 1, 1)
    with pytest.raises(psycopg.errors.NumericValueOutOfRange):
        store_readings(store, edge[1:])  # but a second one in the same buckets no longer does
    refresh_aggregates(store_db, until=T0 + timedelta(days=2))  # the aggregates still refresh
    assert rollup_rows(store_db, station.id) == approx(group_by_raw(store_db, station.id))


def raw_rows(conn: psycopg.Connection, station_id: str) -> dict[tuple[str, datetime], tuple[Any, ...]]:
    """The stored readings of the station (a NaN value as the text 'NaN', so that rows compare)."""
    return {(r[0], r[1]): ("NaN" if r[2] != r[2] else r[2], r[3], r[4]) for r in conn.execute(
        "SELECT parameter, ts, value, unit, status FROM readings WHERE station_id = %s", (station_id,))}


def first_of_keys(batches: Sequence[Sequence[Reading]]) -> dict[tuple[str, datetime], tuple[Any, ...]]:
    """What the store must hold: the first reading of each key over the batches in order."""
    first: dict[tuple[str, datetime], tuple[Any, ...]] = {}
    for r in (r for batch in batches for r in batch):
        value = "NaN" if r.value is not None and r.value != r.value else r.value
        first.setdefault((r.parameter, r.ts), (value, r.unit, r.status.value))
    return first


@hsettings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(st.lists(st.tuples(st.integers(min_value=0, max_value=3 * 24 * 60), st.sampled_from(["COD", "pH"]),
                                           st.one_of(st.none(), st.floats(min_value=-1e4, max_value=1e4),
                                                     st.just(float("nan"))),
                                           st.sampled_from(list(Status))),
                                 min_size=1, max_size=60), min_size=1, max_size=6),
       redeliver=st.lists(st.integers(min_value=0, max_value=5), max_size=3))
@pytest.mark.parametrize("form", ["readings", "wire_columns"])
def test_merged_rollups_equal_a_group_by_over_the_raw_readings_after_random_batches(
        store: Settings, store_db: psycopg.Connection, form: str, batches: list[list[tuple[int, str, float | None, Status]]],
        redeliver: list[int]) -> None:
    """Batches in random time order (late readings: minutes anywhere in three days, out of order), repeats
    of a key within and across batches (the store keeps the first), and whole batches delivered again:
    the merged rollups equal a GROUP BY over the raw readings, so only the readings stored were added,
    and the stored rows are exactly the first reading of each key. The writer takes the batch as
    `Reading`s, or as the worker has it: the columns decoded from the bridge's records (`wire_columns`)."""
    station = make_station(cod_limit=1000.0)
    save_stations(store_db, {station.id: station})
    sent = [[reading(station, T0 - timedelta(days=1) + timedelta(minutes=m), value, status, parameter)
             for m, parameter, value, status in batch] for batch in batches]
    sent += [sent[i % len(sent)] for i in redeliver]
    writer = ReadingWriter()  # one writer, as the worker has: it switches between the direct and the staged COPY
    if form == "readings":
        stored = [r for batch in sent for r in asyncio.run(_store(store.pg_dsn, batch, writer))]
    else:
        columns = [decode_batch([encode_readings(station.id, batch, T0, "mqtt")]) for batch in sent]
        sent = [batch.readings() for batch in columns]  # as decoded: a NaN value travels as null
        stored = [r for batch in columns for r in asyncio.run(_store(store.pg_dsn, batch, writer)).readings()]
    assert len(stored) == len({(r.parameter, r.ts) for batch in sent for r in batch})
    assert raw_rows(store_db, station.id) == first_of_keys(sent)
    refresh_aggregates(store_db, until=T0 + timedelta(days=3))
    assert rollup_rows(store_db, station.id) == approx(group_by_raw(store_db, station.id))
    assert rollup_rows(store_db, station.id) == approx(expected_rollups(stored))
