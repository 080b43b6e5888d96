"""Partitions ahead and retention on native PostgreSQL (a real server): old day partitions and rollups
go, recent ones stay; the tables beside the readings age alike on both store paths. TimescaleDB's
retention policies and compression are in tests/test_store_timescale.py."""

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
