"""Partitions ahead and retention on native PostgreSQL (a real server): old day partitions and rollups
go, recent ones stay; the tables beside the readings age alike on both store paths. TimescaleDB's
chunk retention and compression are in tests/test_store_timescale.py."""

from __future__ import annotations

import asyncio
from datetime import date, datetime, timedelta, timezone

import psycopg
import pytest

from processors.partitions import apply_retention, day_partitions, ensure_partitions_ahead, refresh_aggregates
from processors.rollups import ROLLUPS
from quantrac.db import save_stations
from quantrac.domain import Reading
from quantrac.settings import Settings
from tests.test_store_rollups import _store
from tests.utils.builders import make_station

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)
OLD_DAYS = [date(2019, 3, 1), date(2019, 3, 2)]


def test_partitions_are_created_ahead(native_db: psycopg.Connection) -> None:
    db = native_db
    today = datetime.now(timezone.utc).date()
    ensure_partitions_ahead(db, 7)
    days = set(day_partitions(db).values())
    assert {today + timedelta(days=n) for n in range(8)} <= days
    assert ensure_partitions_ahead(db, 7) == 0


def test_retention_drops_old_partitions_and_rollups_and_keeps_recent_ones(
        native_server: Settings, native_db: psycopg.Connection) -> None:
    db = native_db
    station = make_station()
    save_stations(db, {station.id: station})
    old = [datetime.combine(d, datetime.min.time(), timezone.utc) + timedelta(hours=h) for d in OLD_DAYS for h in (1, 13)]
    recent = [NOW - timedelta(days=2), NOW - timedelta(hours=1)]
    readings = [Reading(station_id=station.id, parameter="COD", value=5.0, unit="mg/L", ts=ts) for ts in old + recent]
    asyncio.run(_store(native_server.pg_dsn, readings))
    names = {f"readings_{d:%Y%m%d}" for d in OLD_DAYS}
    assert names <= set(day_partitions(db))

    retention_days = (NOW.date() - date(2019, 3, 2)).days - 1  # the cutoff falls after both old days end
    result = apply_retention(db, retention_days, now=NOW)

    assert names <= set(result.dropped_partitions)
    assert not names & set(day_partitions(db))
    kept = db.execute("SELECT ts FROM readings WHERE station_id = %s ORDER BY ts", (station.id,)).fetchall()
    assert [row[0] for row in kept] == recent
    for table in ROLLUPS.values():
        buckets = [r[0] for r in db.execute(f"SELECT bucket FROM {table} WHERE station_id = %s", (station.id,))]
        assert buckets and min(buckets) >= result.cutoff - timedelta(days=1), table
    assert result.deleted_rollup_rows >= 6  # 2 old days x (5m, 1h, 1d) at least


def test_retention_keeps_a_partition_that_ends_after_the_cutoff(native_db: psycopg.Connection) -> None:
    db = native_db
    day = date(2019, 6, 10)
    db.execute("SELECT quantrac_ensure_partitions(%s, %s)", (day, day))
    cutoff_inside_the_day = datetime.combine(day, datetime.min.time(), timezone.utc) + timedelta(hours=12)
    retention_days = 100
    result = apply_retention(db, retention_days, now=cutoff_inside_the_day + timedelta(days=retention_days))
    assert f"readings_{day:%Y%m%d}" not in result.dropped_partitions
    assert f"readings_{day:%Y%m%d}" in day_partitions(db)
    apply_retention(db, retention_days, now=cutoff_inside_the_day + timedelta(days=retention_days, hours=12))
    assert f"readings_{day:%Y%m%d}" not in day_partitions(db)


def test_retention_refuses_a_non_positive_setting(store_db: psycopg.Connection) -> None:
    with pytest.raises(ValueError, match="QUANTRAC_RETENTION_DAYS"):
        apply_retention(store_db, 0)


def test_aggregate_refresh_is_a_no_op_on_native_postgresql(native_db: psycopg.Connection) -> None:
    assert refresh_aggregates(native_db) == []


def test_retention_also_prunes_the_tables_kept_beside_the_readings(store_db: psycopg.Connection) -> None:
    """TT10 originals, completeness and dead letters age like the readings (both store kinds)."""
    db = store_db
    station = make_station()
    old, recent = datetime(2019, 3, 1, 6, tzinfo=timezone.utc), NOW - timedelta(hours=3)
    for ts in (old, recent):
        db.execute("INSERT INTO tt10_values (station_id, parameter, ts, value_text, file_name, line_no) "
                   "VALUES (%s, 'COD', %s, '1.0', 'f.txt', 1)", (station.id, ts))
        db.execute("INSERT INTO completeness (station_id, period, bucket, expected) VALUES (%s, 'hour', %s, 12)",
                   (station.id, ts))
        db.execute("INSERT INTO deadletters (topic_partition, topic_offset, kafka_topic, source, topic, reason, message, "
                   "received_at, station_id, payload) VALUES (0, %s, %s, 'mqtt', 't', 'bad_json', 'm', %s, %s, '\\x00')",
                   (int(ts.timestamp()), f"retention-test-{station.id}", ts, station.id))  # unique: the database outlives a session

    result = apply_retention(store_db, (NOW.date() - date(2019, 3, 2)).days, now=NOW)

    assert all(result.deleted_side_rows[t] >= 1 for t in ("tt10_values", "completeness", "deadletters")), result
    for table, column in (("tt10_values", "ts"), ("completeness", "bucket"), ("deadletters", "received_at")):
        left = [r[0] for r in db.execute(f"SELECT {column} FROM {table} WHERE station_id = %s", (station.id,))]
        assert left == [recent], table


# ---- per-station retention (issue 19): both store kinds, each in a scratch database ----------------

from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from typing import Iterator  # noqa: E402

from processors.partitions import Cutoffs, RetentionResult, cutoffs  # noqa: E402
from quantrac.db import connect, migrate  # noqa: E402
from tests.utils.databases import scratch_database  # noqa: E402
from tests.utils.poll import wait_for  # noqa: E402


@pytest.fixture(params=["postgresql", "timescaledb"])
def scratch_store(request: pytest.FixtureRequest, stack: Settings) -> Iterator[tuple[str, str]]:
    """A new database migrated as the given store kind (the stack installs TimescaleDB); dropped afterwards."""
    with scratch_database(stack, f"{stack.pg_database}_ret_{request.param[:2]}") as dsn:
        with connect(dsn) as conn:
            migrate(conn, use_timescale=request.param == "timescaledb")
        yield request.param, dsn


def test_a_stations_own_retention_keeps_its_archive_and_a_shorter_one_drops_more(scratch_store: tuple[str, str]) -> None:
    kind, dsn = scratch_store
    archive = make_station().model_copy(update={"retention_days": 4000})
    short = make_station().model_copy(update={"retention_days": 10})
    default = make_station()
    old, month, hour = datetime(2019, 3, 1, 10, tzinfo=timezone.utc), NOW - timedelta(days=20), NOW - timedelta(hours=1)
    with connect(dsn) as conn:
        save_stations(conn, {s.id: s for s in (archive, short, default)})
    readings = [Reading(station_id=s.id, parameter="COD", value=5.0, unit="mg/L", ts=ts)
                for s in (archive, short, default) for ts in (old, month, hour)]
    asyncio.run(_store(dsn, readings))

    with psycopg.connect(dsn, autocommit=True) as conn:
        if kind == "timescaledb":  # old chunks are compressed in production: the row deletes must work on them
            compressed = conn.execute("SELECT count(compress_chunk(c, if_not_compressed => true)) "
                                      "FROM show_chunks('readings', older_than => %s) c", (NOW - timedelta(days=5),)).fetchone()[0]
            assert compressed >= 2
        result = apply_retention(conn, 730, now=NOW)
        left = {sid: sorted(r[0] for r in conn.execute("SELECT ts FROM readings WHERE station_id = %s", (sid,)))
                for sid in (archive.id, short.id, default.id)}
        assert result.store == kind and result.own_retention == {archive.id: 4000, short.id: 10}
        assert left == {archive.id: [old, month, hour], short.id: [hour], default.id: [month, hour]}
        assert result.dropped_partitions == []  # whole days or chunks go only after the longest retention
        refresh_aggregates(conn, until=NOW)
        hours = {sid: conn.execute("SELECT count(*) FROM readings_1h WHERE station_id = %s", (sid,)).fetchone()[0]
                 for sid in (archive.id, short.id, default.id)}
        assert hours == {archive.id: 3, short.id: 1, default.id: 2}
        # without the archive's own retention the day of 2019 goes whole, as before
        conn.execute("UPDATE stations SET spec = spec - 'retention_days' WHERE id = %s", (archive.id,))
        again = apply_retention(conn, 730, now=NOW)
        assert len(again.dropped_partitions) >= 1 and (kind == "timescaledb" or "readings_20190301" in again.dropped_partitions)
        assert conn.execute("SELECT count(*) FROM readings WHERE ts < %s", (NOW - timedelta(days=730),)).fetchone()[0] == 0


def test_a_station_saved_while_the_pass_waits_is_honoured_by_it(scratch_store: tuple[str, str]) -> None:
    """A long retention saved just before the pass drops is what the pass honours: it waits for the
    registry edit, then reads it. (A pass that read the registry first, or TimescaleDB's own retention
    job installed from an earlier read, dropped the archive that the edit was made for.)"""
    kind, dsn = scratch_store
    archive = make_station()
    old = datetime(2019, 3, 1, 10, tzinfo=timezone.utc)
    with connect(dsn) as conn:
        save_stations(conn, {archive.id: archive})
    asyncio.run(_store(dsn, [Reading(station_id=archive.id, parameter="COD", value=5.0, unit="mg/L", ts=t)
                             for t in (old, NOW - timedelta(hours=1))]))
    with psycopg.connect(dsn) as editor, psycopg.connect(dsn, autocommit=True) as watcher, \
            ThreadPoolExecutor(max_workers=1) as pool:
        editor.execute("UPDATE stations SET spec = jsonb_set(spec, '{retention_days}', '4000') WHERE id = %s", (archive.id,))

        def run_pass() -> RetentionResult:
            with psycopg.connect(dsn, autocommit=True) as conn:
                return apply_retention(conn, 730, now=NOW)

        pending = pool.submit(run_pass)
        wait_for(lambda: watcher.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                         "AND query LIKE 'LOCK TABLE stations%%'").fetchone()[0] == 1 or pending.done(),
                 timeout=30, what="the retention pass waiting for the registry edit")
        assert not pending.done(), pending.result()
        editor.commit()
        result = pending.result(timeout=60)
        assert result.own_retention == {archive.id: 4000} and result.dropped_partitions == []
        assert [r[0] for r in watcher.execute("SELECT ts FROM readings WHERE station_id = %s ORDER BY ts LIMIT 1",
                                              (archive.id,))] == [old]
        if kind == "timescaledb":
            assert watcher.execute("SELECT count(*) FROM timescaledb_information.jobs "
                                   "WHERE proc_name = 'policy_retention'").fetchone()[0] == 0


def test_cutoffs_delete_only_between_the_oldest_cutoff_and_each_stations_own() -> None:
    cuts = cutoffs(730, {"LONG": 4000, "SHORT": 10}, NOW)
    assert isinstance(cuts, Cutoffs) and cuts.oldest == NOW - timedelta(days=4000)
    statements = cuts.delete_statements("readings", "ts")
    assert [params[0] for _, params in statements] == [NOW - timedelta(days=730), "SHORT"]
    assert cutoffs(730, {}, NOW).delete_statements("readings", "ts") == []  # no own retention: partitions do it all


def test_retention_forgets_the_worker_state_of_stations_retired_before_their_cutoff(scratch_store: tuple[str, str]) -> None:
    """Detection snapshots and liveness entries of a station retired before its retention's cutoff, or gone from the
    registry, are deleted; an active station's, a recently retired one's and those of one whose own retention still
    covers its retirement stay."""
    _, dsn = scratch_store
    active, recent, long_ago, archive = (make_station() for _ in range(4))
    archive = archive.model_copy(update={"retention_days": 4000})
    unknown = f"{make_station().id}-gone"
    everyone = [active.id, recent.id, long_ago.id, archive.id, unknown]
    retired_long_ago = datetime(2019, 1, 1, tzinfo=timezone.utc)
    with connect(dsn) as conn:
        save_stations(conn, {s.id: s for s in (active, recent, long_ago, archive)})
        for station_id, retired in ((recent.id, NOW - timedelta(days=5)), (long_ago.id, retired_long_ago),
                                    (archive.id, retired_long_ago)):
            conn.execute("UPDATE stations SET retired_at = %s WHERE id = %s", (retired, station_id))
        for station_id in everyone:
            conn.execute("INSERT INTO detection_snapshots (station_id, state) VALUES (%s, '\\x7b7d')", (station_id,))
            conn.execute("INSERT INTO station_liveness (station_id, event_ts, received_at) VALUES (%s, %s, %s)",
                         (station_id, retired_long_ago, retired_long_ago))
        conn.commit()

        result = apply_retention(conn, (NOW.date() - date(2019, 3, 2)).days, now=NOW)

        for table in ("detection_snapshots", "station_liveness"):
            left = {r[0] for r in conn.execute(f"SELECT station_id FROM {table}")}
            assert left == {active.id, recent.id, archive.id}, table
            assert result.deleted_side_rows[table] == 2, result
