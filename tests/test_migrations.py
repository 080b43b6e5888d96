"""Migrations on the real PostgreSQL: on an empty database, and on one at an earlier version
(its data kept, the rollups backfilled from the readings it already held)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Iterator

import psycopg
import pytest
from psycopg import sql

from quantrac.db import connect, migrate, plan_migrations, save_stations, schema_version, store_kind
from quantrac.settings import Settings
from tests.utils.builders import make_station

pytestmark = pytest.mark.integration

LATEST = plan_migrations(use_timescale=False)[-1].version
BEFORE_ROLLUPS = 3


@pytest.fixture()
def scratch(stack: Settings) -> Iterator[psycopg.Connection]:
    """A new empty database of its own, dropped afterwards."""
    name = f"{stack.pg_database}_mig"
    admin_dsn = stack.pg_dsn.replace(f"dbname={stack.pg_database}", "dbname=postgres")
    with connect(admin_dsn) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            with connect(stack.pg_dsn.replace(f"dbname={stack.pg_database}", f"dbname={name}")) as conn:
                yield conn
        finally:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def tables(conn: psycopg.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}


def test_migrations_build_an_empty_database_to_the_latest_version(scratch: psycopg.Connection) -> None:
    applied = migrate(scratch, use_timescale=False)
    assert applied == [m.version for m in plan_migrations(use_timescale=False)]
    assert schema_version(scratch) == LATEST and store_kind(scratch) == "postgresql"
    assert {"stations", "readings", "readings_5m", "readings_1h", "readings_1d"} <= tables(scratch)
    assert migrate(scratch, use_timescale=False) == []


def test_migrate_stops_at_the_target_version(scratch: psycopg.Connection) -> None:
    assert migrate(scratch, use_timescale=False, target=BEFORE_ROLLUPS) == [1, 2, 3]
    assert schema_version(scratch) == BEFORE_ROLLUPS and "readings_5m" not in tables(scratch)


@pytest.mark.parametrize("previous", sorted({BEFORE_ROLLUPS, plan_migrations(use_timescale=False)[-2].version}))
def test_a_database_at_an_earlier_version_upgrades_in_place(scratch: psycopg.Connection, previous: int) -> None:
    migrate(scratch, use_timescale=False, target=previous)
    assert schema_version(scratch) == previous
    station = make_station()
    save_stations(scratch, {station.id: station})
    t0 = datetime(2026, 11, 28, 1, 0, tzinfo=timezone.utc)
    scratch.execute("SELECT quantrac_ensure_partitions(%s, %s)", (t0.date(), t0.date()))
    rows = [(station.id, "COD", t0 + timedelta(minutes=m), float(m), "mg/L", "00") for m in range(12)]
    with scratch.cursor() as cur:
        cur.executemany("INSERT INTO readings (station_id, parameter, ts, value, unit, status) VALUES (%s, %s, %s, %s, %s, %s)", rows)

    applied = migrate(scratch, use_timescale=False)

    assert applied and applied[0] > previous and schema_version(scratch) == LATEST
    stored = scratch.execute("SELECT ts, value FROM readings WHERE station_id = %s ORDER BY ts", (station.id,)).fetchall()
    assert stored == [(r[2], r[3]) for r in rows]
    assert scratch.execute("SELECT id FROM stations").fetchall() == [(station.id,)]
    if previous < 4:  # the rollup migration backfills from the readings already there
        assert scratch.execute("SELECT bucket, avg, min, max, count, count_valid FROM readings_5m ORDER BY bucket").fetchall() == [
            (t0, 2.0, 0.0, 4.0, 5, 5), (t0 + timedelta(minutes=5), 7.0, 5.0, 9.0, 5, 5), (t0 + timedelta(minutes=10), 10.5, 10.0, 11.0, 2, 2)]
        assert scratch.execute("SELECT bucket, avg, count FROM readings_1h").fetchall() == [(t0, 5.5, 12)]
        assert scratch.execute("SELECT bucket, count FROM readings_1d").fetchall() == [(datetime(2026, 11, 27, 17, tzinfo=timezone.utc), 12)]


def test_a_service_started_with_migrate_on_start_brings_an_empty_database_to_the_latest_version(
        stack: Settings, scratch: psycopg.Connection) -> None:
    """`QUANTRAC_DB_MIGRATE_ON_START=true`: the API (here; the bridge, worker and notifier alike)
    migrates before it serves, so a deployment needs no separate migration step."""
    import socket

    from tests.conftest import Process, _ns
    from tests.utils.poll import wait_for

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    name = scratch.info.dbname
    api = Process("migrate-on-start-api", ["api"], stack.run_dir / "test-logs" / _ns,
                  {"QUANTRAC_PG_DATABASE": name, "QUANTRAC_DB_MIGRATE_ON_START": "true", "QUANTRAC_API_PORT": str(port)})
    try:
        wait_for(lambda: api.alive() and "schema_version" in tables(scratch) and schema_version(scratch) == LATEST,
                 timeout=60, interval=0.5, what=f"the API to migrate {name} (log: {api.log_path})")
        assert "db.migrated_on_start" in api.log_path.read_text()
    finally:
        api.stop()
