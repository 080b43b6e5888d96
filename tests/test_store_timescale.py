"""The TimescaleDB path on the real server (PostgreSQL 15 + TimescaleDB 2.28.3 built by `make timescaledb`,
preloaded by the local stack): hypertable, continuous aggregates, compression and retention policies,
through the production migrations, the worker's writer (binary COPY) and the API's history queries.
The store tests shared by both paths (rollups, history API, migrations) are parametrized over the two."""

from __future__ import annotations

import asyncio
import threading
from contextlib import contextmanager
from datetime import date, datetime, timedelta, timezone
from typing import Any, Callable, Iterator, Sequence
from zoneinfo import ZoneInfo

import psycopg
import pytest

from api.routes.history import bucket_series, compliance, raw_gaps
from processors.partitions import apply_retention, refresh_aggregates
from processors.reading_writer import ReadingWriter
from processors.rollups import REFRESH_LOCK, ROLLUPS, LateRefresh, update_rollups
from quantrac.db import connect, plan_migrations, save_stations, schema_version, store_kind
from quantrac.domain import Reading, Station, Status
from quantrac.settings import Settings
from tests.test_store_rollups import _store, approx, group_by_raw, rollup_rows
from tests.utils.builders import make_station
from tests.utils.databases import scratch_database
from tests.utils.poll import wait_for

pytestmark = pytest.mark.integration

# Days no other test writes to: compressing their chunks disturbs nobody.
COMPRESSED_DAY = datetime(2026, 9, 9, 17, 0, tzinfo=timezone.utc)  # 2026-09-10 00:00 in Hanoi
OLD_DAY = datetime(2018, 5, 3, 0, 0, tzinfo=timezone.utc)


@pytest.fixture()
def station(timescale_db: psycopg.Connection) -> Station:
    s = make_station(cod_limit=100.0, expected_interval_s=300)
    save_stations(timescale_db, {s.id: s})
    return s


def day_of_readings(station: Station, day_start: datetime) -> list[Reading]:
    """Every 5 minutes over the local day, a hole 02:00–03:00, COD over 100 from 10:00 to 12:00, one fault."""
    readings = []
    for n in range(288):
        ts = day_start + timedelta(minutes=5 * n)
        if day_start + timedelta(hours=2) <= ts < day_start + timedelta(hours=3):
            continue
        cod = 150.0 if day_start + timedelta(hours=10) <= ts < day_start + timedelta(hours=12) else 50.0 + n % 3
        status = Status.FAULT if n == 200 else Status.MEASURING
        readings.append(Reading(station_id=station.id, parameter="COD", value=cod, unit="mg/L", ts=ts, status=status))
    return readings


def write(settings: Settings, readings: Sequence[Reading]) -> list[Reading]:
    """Through the worker's writer: binary COPY into a staging table, idempotent insert."""
    return asyncio.run(_store(settings.pg_dsn, readings))


def chunks_of_day(conn: psycopg.Connection, day_start: datetime) -> list[tuple[str, bool]]:
    return [(str(r[0]), bool(r[1])) for r in conn.execute(
        "SELECT format('%%I.%%I', chunk_schema, chunk_name), is_compressed FROM timescaledb_information.chunks "
        "WHERE hypertable_name = 'readings' AND range_end > %s AND range_start < %s", (day_start, day_start + timedelta(days=1)))]


def test_the_migrations_build_hypertable_aggregates_compression_and_policies(timescale_db: psycopg.Connection) -> None:
    conn = timescale_db
    assert store_kind(conn) == "timescaledb"
    assert schema_version(conn) == plan_migrations(use_timescale=True)[-1].version
    assert conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'").fetchone() == ("2.28.3",)
    assert conn.execute("SELECT hypertable_name FROM timescaledb_information.hypertables").fetchall() == [("readings",)]
    views = {r[0]: r[1] for r in conn.execute("SELECT view_name, materialized_only FROM timescaledb_information.continuous_aggregates")}
    assert views == {"readings_5m": False, "readings_1h": False, "readings_1d": False}
    segmentby = conn.execute("SELECT attname FROM timescaledb_information.compression_settings "
                             "WHERE hypertable_name = 'readings' AND segmentby_column_index IS NOT NULL "
                             "ORDER BY segmentby_column_index").fetchall()
    assert segmentby == [("series_id",), ("station_id",), ("parameter",)]
    jobs = {r[0] for r in conn.execute("SELECT proc_name FROM timescaledb_information.jobs")}
    assert {"policy_refresh_continuous_aggregate", "policy_compression"} <= jobs


def test_compressed_chunks_take_late_and_replayed_readings_and_still_answer_the_history_query(
        stack: Settings, timescale_db: psycopg.Connection, station: Station) -> None:
    conn = timescale_db
    readings = day_of_readings(station, COMPRESSED_DAY)
    assert len(write(stack, readings)) == 276
    refresh_aggregates(conn, until=COMPRESSED_DAY + timedelta(days=2))
    before = bucket_series(conn, station.id, ["COD"], "1h", COMPRESSED_DAY, COMPRESSED_DAY + timedelta(days=1))

    chunks = chunks_of_day(conn, COMPRESSED_DAY)
    for name, compressed in chunks:
        if not compressed:
            conn.execute("SELECT compress_chunk(%s::regclass)", (name,))
    assert chunks and all(compressed for _, compressed in chunks_of_day(conn, COMPRESSED_DAY))
    [[before_bytes, after_bytes]] = conn.execute(
        "SELECT sum(before_compression_total_bytes), sum(after_compression_total_bytes) FROM chunk_compression_stats('readings') "
        "WHERE format('%%I.%%I', chunk_schema, chunk_name) = ANY(%s)", ([n for n, _ in chunks],)).fetchall()
    assert after_bytes < before_bytes

    assert conn.execute("SELECT count(*) FROM readings WHERE station_id = %s", (station.id,)).fetchone() == (276,)
    assert bucket_series(conn, station.id, ["COD"], "1h", COMPRESSED_DAY, COMPRESSED_DAY + timedelta(days=1)) == before

    # A late reading lands in the compressed chunk through the writer; replaying the day stores nothing twice.
    late = Reading(station_id=station.id, parameter="COD", value=500.0, unit="mg/L", ts=COMPRESSED_DAY + timedelta(hours=2, minutes=30))
    assert write(stack, [late]) == [late]
    assert write(stack, [*readings[:50], late]) == []
    assert conn.execute("SELECT count(*) FROM readings WHERE station_id = %s", (station.id,)).fetchone() == (277,)
    # The hole's hour was materialised empty; the writer's path refreshed it (the reading is older than
    # the aggregate's watermark, which real-time aggregation does not cover): it equals a GROUP BY over raw.
    hour = bucket_series(conn, station.id, ["COD"], "1h", COMPRESSED_DAY + timedelta(hours=2), COMPRESSED_DAY + timedelta(hours=3))
    assert [(h["count"], h["avg"]) for h in hour] == [(1, 500.0)]
    assert rollup_rows(conn, station.id) == approx(group_by_raw(conn, station.id))


def test_history_queries_on_the_hypertable_and_its_aggregates(
        stack: Settings, timescale_db: psycopg.Connection, station: Station) -> None:
    conn = timescale_db
    day_start = COMPRESSED_DAY + timedelta(days=3)
    write(stack, day_of_readings(station, day_start))
    refresh_aggregates(conn, until=day_start + timedelta(days=2))
    days = bucket_series(conn, station.id, ["COD"], "1d", day_start - timedelta(days=1), day_start + timedelta(days=2))
    assert [(d["bucket"], d["count"], d["missing"]) for d in days] == [
        (day_start - timedelta(days=1), 0, True), (day_start, 276, False), (day_start + timedelta(days=1), 0, True)]
    [gap] = raw_gaps(conn, station.id, ["COD"], day_start, day_start + timedelta(hours=6), timedelta(minutes=10))
    assert (gap["gap_from"], gap["gap_to"]) == (day_start + timedelta(hours=1, minutes=55), day_start + timedelta(hours=3))
    report = compliance(conn, station, date(2026, 9, 13), ZoneInfo("Asia/Ho_Chi_Minh"))
    cod = next(p for p in report.parameters if p.parameter == "COD")
    assert cod.hours_over_count == 2 and (cod.valid_readings, cod.expected_readings) == (275, 288)


def test_retention_drops_old_chunks_in_the_pass_and_leaves_no_job_of_the_extensions_own(
        stack: Settings, timescale_db: psycopg.Connection, station: Station) -> None:
    """The pass drops the chunks itself; a policy an earlier version installed is removed (its job would
    drop on its own schedule with the registry as it was, see apply_retention)."""
    conn = timescale_db
    old = [Reading(station_id=station.id, parameter="COD", value=1.0, unit="mg/L", ts=OLD_DAY + timedelta(hours=h)) for h in range(3)]
    recent = [Reading(station_id=station.id, parameter="COD", value=2.0, unit="mg/L",
                      ts=datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=1))]
    write(stack, [*old, *recent])
    keep_days = (datetime.now(timezone.utc) - OLD_DAY).days - 30  # well after the old day, well before the recent one
    conn.execute("SELECT add_retention_policy('readings', drop_after => %s, if_not_exists => true)", (timedelta(days=keep_days + 100),))
    apply_retention(conn, keep_days + 100)
    assert chunks_of_day(conn, OLD_DAY)
    result = apply_retention(conn, keep_days)
    kept = [r[0] for r in conn.execute("SELECT ts FROM readings WHERE station_id = %s ORDER BY ts", (station.id,))]
    assert kept == [r.ts for r in recent]
    assert not chunks_of_day(conn, OLD_DAY) and result.dropped_partitions
    assert conn.execute("SELECT count(*) FROM timescaledb_information.jobs WHERE proc_name = 'policy_retention'").fetchone()[0] == 0


def test_a_late_reading_is_in_its_buckets_once_committed_without_waiting_for_a_refresh(
        stack: Settings, timescale_db: psycopg.Connection, station: Station) -> None:
    """Materialised buckets are not recomputed at query time: without the writer's refresh a late reading
    would show only at the next policy run or maintenance pass. With it, as on native PostgreSQL, at once."""
    conn = timescale_db
    day_start = COMPRESSED_DAY + timedelta(days=5)
    readings = day_of_readings(station, day_start)
    asyncio.run(_store_without_refresh(stack.pg_dsn, readings))
    refresh_aggregates(conn, until=day_start + timedelta(days=2))
    late = Reading(station_id=station.id, parameter="COD", value=500.0, unit="mg/L", ts=day_start + timedelta(hours=2, minutes=30))
    asyncio.run(_store_without_refresh(stack.pg_dsn, [late]))
    assert rollup_rows(conn, station.id) != approx(group_by_raw(conn, station.id))  # what a bare insert leaves

    on_time = Reading(station_id=station.id, parameter="COD", value=1.0, unit="mg/L", ts=datetime.now(timezone.utc).replace(microsecond=0))
    async def through_the_worker_path() -> tuple[list[str], list[str]]:
        async with await psycopg.AsyncConnection.connect(stack.pg_dsn) as aconn:
            return await LateRefresh().run(aconn, [on_time]), await LateRefresh().run(aconn, [late])

    assert asyncio.run(through_the_worker_path()) == ([], list(ROLLUPS.values()))
    assert rollup_rows(conn, station.id) == approx(group_by_raw(conn, station.id))


def test_a_store_never_refreshed_needs_no_late_refresh(stack: Settings) -> None:
    """A new TimescaleDB store (every aggregate's watermark at the lowest timestamp) takes readings of any
    age through the worker's path without a refresh and without a warning."""
    from structlog.testing import capture_logs

    from quantrac.db import migrate

    name = f"{stack.pg_database}_fresh_cagg"
    fresh = stack.model_copy(update={"pg_database": name})
    with scratch_database(stack, name):
        with connect(fresh.pg_dsn) as conn:
            migrate(conn)
            station = make_station()
            save_stations(conn, {station.id: station})
        with capture_logs() as logs:
            new = write(fresh, day_of_readings(station, COMPRESSED_DAY)[:10])
        assert len(new) == 10 and not [e for e in logs if e["log_level"] in ("warning", "error")], logs
        with connect(fresh.pg_dsn) as conn:
            assert rollup_rows(conn, station.id) == approx(group_by_raw(conn, station.id))  # real-time aggregation


async def _store_without_refresh(dsn: str, readings: Sequence[Reading]) -> None:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        async with conn.transaction():
            await ReadingWriter().write(conn, readings)


def test_the_worker_leaves_rollups_to_the_continuous_aggregates(stack: Settings, station: Station) -> None:
    async def upsert() -> int:
        async with await psycopg.AsyncConnection.connect(stack.pg_dsn, autocommit=True) as aconn:
            return await update_rollups(aconn, day_of_readings(station, COMPRESSED_DAY)[:5])

    assert asyncio.run(upsert()) == 0
    assert set(ROLLUPS.values()) == {"readings_5m", "readings_1h", "readings_1d"}





@contextmanager
def fresh_store(stack: Settings, name: str) -> Iterator[tuple[Settings, Station]]:
    """A scratch TimescaleDB database migrated as in production, with one station: the aggregates' watermarks
    and refresh registrations are this test's alone."""
    from quantrac.db import migrate

    fresh = stack.model_copy(update={"pg_database": f"{stack.pg_database}_{name}"})
    with scratch_database(stack, fresh.pg_database):
        with connect(fresh.pg_dsn) as conn:
            migrate(conn)
            station = make_station()
            save_stations(conn, {station.id: station})
        yield fresh, station


def cod(station: Station, ts: datetime, value: float) -> Reading:
    return Reading(station_id=station.id, parameter="COD", value=value, unit="mg/L", ts=ts)


def test_late_readings_at_the_very_start_of_a_bucket_are_materialised_by_every_refresh(stack: Settings) -> None:
    """Invalidations that end exactly where a bucket starts, in refreshes long enough to run in batches (TimescaleDB
    2.28 refreshes ten buckets at a time, and timescaledb#10221 lost such a bucket in some refreshes of 2.28.2):
    the writer's refresh and the maintenance pass's both materialise them."""
    day0 = datetime(2018, 5, 3, 17, 0, tzinfo=timezone.utc)  # 2018-05-04 00:00 in Hanoi
    with fresh_store(stack, "bucket_start") as (fresh, station):
        assert len(write(fresh, [cod(station, day0 + timedelta(days=d, hours=5), float(d)) for d in range(40)])) == 40
        with connect(fresh.pg_dsn) as conn:
            refresh_aggregates(conn)

        # The writer's refresh: one batch of late readings spanning exactly twenty days.
        assert len(write(fresh, [cod(station, day0 + timedelta(hours=6), 500.0), cod(station, day0 + timedelta(days=20), 900.0)])) == 2
        with connect(fresh.pg_dsn) as conn:
            assert rollup_rows(conn, station.id)[("1d", "COD", day0 + timedelta(days=20))] == (460.0, 20.0, 900.0, 2, 2)
            assert rollup_rows(conn, station.id) == approx(group_by_raw(conn, station.id))

        # The maintenance pass: late readings whose own refresh did not run, one at local midnight between two others.
        for ts in (day0 + timedelta(days=2, hours=7), day0 + timedelta(days=30), day0 + timedelta(days=35, hours=7)):
            asyncio.run(_store_without_refresh(fresh.pg_dsn, [cod(station, ts, 700.0)]))
        with connect(fresh.pg_dsn) as conn:
            refresh_aggregates(conn)
            assert rollup_rows(conn, station.id)[("1d", "COD", day0 + timedelta(days=30))] == (365.0, 30.0, 700.0, 2, 2)
            assert rollup_rows(conn, station.id) == approx(group_by_raw(conn, station.id))


@contextmanager
def refresh_in_progress(dsn: str) -> Iterator[Callable[[], None]]:
    """What TimescaleDB records while a refresh of every aggregate over all time runs in another session (its
    window in `continuous_aggs_jobs_refresh_ranges`, with that session's live backend): any other refresh of an
    aggregate is refused with `LockNotAvailable` until it ends. Yields the function that ends it."""
    with connect(dsn) as holder:
        holder.execute("INSERT INTO _timescaledb_catalog.continuous_aggs_jobs_refresh_ranges "
                       "SELECT mat_hypertable_id, -9223372036854775808, 9223372036854775807, pg_backend_pid(), 0, now() "
                       "FROM _timescaledb_catalog.continuous_agg")

        def end() -> None:
            with connect(dsn) as other:
                other.execute("DELETE FROM _timescaledb_catalog.continuous_aggs_jobs_refresh_ranges")
        try:
            yield end
        finally:
            end()


@contextmanager
def quantrac_refresh_in_progress(dsn: str) -> Iterator[Callable[[], None]]:
    """Another quantrac process refreshing every aggregate: it holds their refresh locks (`REFRESH_LOCK`). Yields
    the function that ends it."""
    with connect(dsn) as holder:
        for view in ROLLUPS.values():
            assert holder.execute(REFRESH_LOCK, (view,)).fetchone() == (True,)

        def end() -> None:
            holder.execute("SELECT pg_advisory_unlock_all()")
        try:
            yield end
        finally:
            end()


@pytest.mark.parametrize("other", [refresh_in_progress, quantrac_refresh_in_progress], ids=["timescaledb", "quantrac"])
def test_a_refresh_refused_by_a_concurrent_one_is_tried_again(stack: Settings, other: Callable[[str], Any]) -> None:
    """TimescaleDB refuses a refresh that overlaps one in progress on the same aggregate (a policy job), and
    quantrac's own refreshes of an aggregate take turns (two concurrent ones could strand a change,
    timescaledb#10219). The writer's refresh keeps a refused window and refreshes it with the next batch, even
    one with nothing late in it; the maintenance pass waits until the other refresh is over."""
    from structlog.testing import capture_logs

    day0 = datetime(2018, 5, 3, 17, 0, tzinfo=timezone.utc)
    with fresh_store(stack, f"refresh_busy_{other.__name__[:8]}") as (fresh, station):
        assert len(write(fresh, [cod(station, day0 + timedelta(hours=h), 10.0) for h in range(48)])) == 48
        with connect(fresh.pg_dsn) as conn:
            refresh_aggregates(conn)
        late = cod(station, day0 + timedelta(hours=5, minutes=30), 900.0)
        asyncio.run(_store_without_refresh(fresh.pg_dsn, [late]))

        async def two_batches(refresh: LateRefresh) -> tuple[list[str], dict[str, tuple[datetime, datetime]], bool, list[str]]:
            async with await psycopg.AsyncConnection.connect(fresh.pg_dsn) as aconn:
                with other(fresh.pg_dsn):
                    refused = await refresh.run(aconn, [late])
                    pending = dict(refresh.pending)
                    with connect(fresh.pg_dsn) as conn:
                        stale = rollup_rows(conn, station.id) != approx(group_by_raw(conn, station.id))
                return refused, pending, stale, await refresh.run(aconn, [])

        refresh = LateRefresh()
        with capture_logs() as logs:
            refused, pending, stale, next_batch = asyncio.run(two_batches(refresh))
        assert refused == [] and stale and set(pending) == set(ROLLUPS.values())
        if other is refresh_in_progress:  # TimescaleDB refused it: a warning
            said = [e for e in logs if e["event"] == "rollups.late_refresh_failed" and e["log_level"] == "warning"]
            assert all("due to a concurrent refresh" in e["error"] for e in said), said
        else:  # a quantrac process holds the lock: expected while another refreshes, so no warning
            said = [e for e in logs if e["event"] == "rollups.late_refresh_deferred" and e["log_level"] == "info"]
            assert not [e for e in logs if e["log_level"] == "warning"], logs
        assert {e["aggregate"] for e in said} == set(ROLLUPS.values())
        assert next_batch == list(ROLLUPS.values()) and refresh.pending == {}
        with connect(fresh.pg_dsn) as conn:
            assert rollup_rows(conn, station.id) == approx(group_by_raw(conn, station.id))

        # The maintenance pass, with another late reading, while a refresh is in progress until it has been refused once.
        asyncio.run(_store_without_refresh(fresh.pg_dsn, [cod(station, day0 + timedelta(hours=30, minutes=30), 800.0)]))
        with capture_logs() as logs, other(fresh.pg_dsn) as end:
            def end_once_refused() -> None:
                wait_for(lambda: any(e["event"] == "store.refresh_busy" for e in logs), timeout=30,
                         what="the maintenance refresh to be refused once")
                end()
            ender = threading.Thread(target=end_once_refused)
            ender.start()
            with connect(fresh.pg_dsn) as conn:
                assert refresh_aggregates(conn) == list(ROLLUPS.values())
            ender.join()
        with connect(fresh.pg_dsn) as conn:
            assert rollup_rows(conn, station.id) == approx(group_by_raw(conn, station.id))


def test_a_late_window_that_fails_for_itself_is_dropped_after_its_attempts(stack: Settings) -> None:
    """A pending window is tried with the next batches, but one that fails for itself (here a window TimescaleDB
    refuses as empty) is given up after `RECORD_ATTEMPTS` batches, with an error naming the fix: never retried for
    ever."""
    from structlog.testing import capture_logs

    from quantrac.failures import RECORD_ATTEMPTS

    day0 = datetime(2018, 5, 3, 17, 0, tzinfo=timezone.utc)
    with fresh_store(stack, "late_dropped") as (fresh, _station):
        async def batches(refresh: LateRefresh) -> list[bool]:
            kept = []
            async with await psycopg.AsyncConnection.connect(fresh.pg_dsn) as aconn:
                for _ in range(RECORD_ATTEMPTS):
                    assert await refresh.run(aconn, []) == []
                    kept.append("readings_1d" in refresh.pending)
            return kept

        refresh = LateRefresh()
        refresh.pending["readings_1d"] = (day0 + timedelta(days=1), day0)  # end before start: refused every time
        with capture_logs() as logs:
            kept = asyncio.run(batches(refresh))
    assert kept == [True] * (RECORD_ATTEMPTS - 1) + [False] and refresh.failures == {}
    assert [e["aggregate"] for e in logs if e["event"] == "rollups.late_refresh_dropped" and e["log_level"] == "error"] == ["readings_1d"]
