"""Migrations on real servers, on both store paths (TimescaleDB and native PostgreSQL): on an empty
database, and on one at an earlier version (its data kept, the rollups backfilled from the readings
it already held); the extension decided on what works, and a store never switched."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from typing import Iterator

import psycopg
import pytest
from structlog.testing import capture_logs

from quantrac.db import (
    STORE_POSTGRESQL,
    STORE_TIMESCALEDB,
    StoreError,
    connect,
    describe_store,
    migrate,
    plan_migrations,
    save_stations,
    schema_version,
    store_kind,
)
from quantrac.settings import Settings
from tests.utils.builders import make_station
from tests.utils.databases import scratch_database

pytestmark = pytest.mark.integration

LATEST = plan_migrations(use_timescale=False)[-1].version
BEFORE_ROLLUPS = 3
SERIES_KEY = 80


@pytest.fixture()
def scratch(store: Settings) -> Iterator[psycopg.Connection]:
    """A new empty database of its own on the server of the store path under test, dropped afterwards."""
    with scratch_database(store, f"{store.pg_database}_mig") as dsn, connect(dsn) as conn:
        yield conn


def kind_of(store: Settings) -> str:
    """The kind of store a new database becomes on this server: what `migrate` decides by itself."""
    return STORE_POSTGRESQL if store.pg_timescaledb is False else STORE_TIMESCALEDB


def tables(conn: psycopg.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}


def test_migrations_build_an_empty_database_to_the_latest_version(store: Settings, scratch: psycopg.Connection) -> None:
    kind = kind_of(store)
    applied = migrate(scratch)
    assert applied == [m.version for m in plan_migrations(use_timescale=kind == STORE_TIMESCALEDB)]
    assert schema_version(scratch) == LATEST and store_kind(scratch) == kind
    assert {"stations", "readings"} <= tables(scratch)
    views = {r[0] for r in scratch.execute("SELECT matviewname FROM pg_matviews WHERE schemaname = 'public'")}
    if kind == STORE_TIMESCALEDB:
        assert scratch.execute("SELECT hypertable_name FROM timescaledb_information.hypertables").fetchall() == [("readings",)]
        aggregates = {r[0] for r in scratch.execute("SELECT view_name FROM timescaledb_information.continuous_aggregates")}
        assert aggregates == {"readings_5m", "readings_1h", "readings_1d"} and not views
        assert describe_store(scratch).timescaledb_version == "2.28.3"
        indexes = dict(scratch.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'readings'").fetchall())
        assert set(indexes) == {"readings_pkey", "readings_ts_brin"} and "USING brin (ts)" in indexes["readings_ts_brin"]
    else:
        assert {"readings_5m", "readings_1h", "readings_1d"} <= tables(scratch) and not views
        assert describe_store(scratch).timescaledb_version is None
    assert migrate(scratch) == []


def test_migrate_stops_at_the_target_version(store: Settings, scratch: psycopg.Connection) -> None:
    assert migrate(scratch, target=BEFORE_ROLLUPS) == [1, 2, 3]
    assert schema_version(scratch) == BEFORE_ROLLUPS and store_kind(scratch) == kind_of(store)
    assert "readings_5m" not in tables(scratch)


@pytest.mark.parametrize("previous", sorted({BEFORE_ROLLUPS, plan_migrations(use_timescale=False)[-2].version}))
def test_a_database_at_an_earlier_version_upgrades_in_place(store: Settings, scratch: psycopg.Connection, previous: int) -> None:
    migrate(scratch, target=previous)
    assert schema_version(scratch) == previous
    station = make_station()
    save_stations(scratch, {station.id: station})
    t0 = datetime(2026, 11, 28, 1, 0, tzinfo=timezone.utc)
    scratch.execute("SELECT quantrac_ensure_partitions(%s, %s)", (t0.date(), t0.date()))
    rows = [(station.id, "COD", t0 + timedelta(minutes=m), float(m), "mg/L", "00") for m in range(12)]
    with scratch.cursor() as cur:
        cur.executemany("INSERT INTO readings (station_id, parameter, ts, value, unit, status) VALUES (%s, %s, %s, %s, %s, %s)", rows)

    applied = migrate(scratch)

    assert applied and applied[0] > previous and schema_version(scratch) == LATEST and store_kind(scratch) == kind_of(store)
    stored = scratch.execute("SELECT ts, value FROM readings WHERE station_id = %s ORDER BY ts", (station.id,)).fetchall()
    assert stored == [(r[2], r[3]) for r in rows]
    assert scratch.execute("SELECT id FROM stations").fetchall() == [(station.id,)]
    if previous < 4:  # the rollups (tables backfilled, or continuous aggregates) cover the readings already there
        assert scratch.execute("SELECT bucket, avg, min, max, count, count_valid FROM readings_5m ORDER BY bucket").fetchall() == [
            (t0, 2.0, 0.0, 4.0, 5, 5), (t0 + timedelta(minutes=5), 7.0, 5.0, 9.0, 5, 5), (t0 + timedelta(minutes=10), 10.5, 10.0, 11.0, 2, 2)]
        assert scratch.execute("SELECT bucket, avg, count FROM readings_1h").fetchall() == [(t0, 5.5, 12)]
        assert scratch.execute("SELECT bucket, count FROM readings_1d").fetchall() == [(datetime(2026, 11, 27, 17, tzinfo=timezone.utc), 12)]


def test_an_upgrade_keys_the_stored_readings_by_series(store: Settings, scratch: psycopg.Connection) -> None:
    """Migration 0080 on a store holding readings (on TimescaleDB, in compressed chunks): every reading keeps its row
    and gets its series' id, the key becomes (series_id, ts), and the chunks compress again."""
    migrate(scratch, target=SERIES_KEY - 1)
    stations = [make_station(), make_station()]
    save_stations(scratch, {s.id: s for s in stations})
    t0 = datetime(2026, 10, 1, tzinfo=timezone.utc)
    scratch.execute("SELECT quantrac_ensure_partitions(%s, %s)", (t0.date(), (t0 + timedelta(days=3)).date()))
    rows = [(s.id, p, t0 + timedelta(hours=h), float(h), "mg/L", "00") for s in stations for p in ("COD", "pH") for h in range(72)]
    with scratch.cursor() as cur:
        cur.executemany("INSERT INTO readings (station_id, parameter, ts, value, unit, status) VALUES (%s, %s, %s, %s, %s, %s)", rows)
    timescale = kind_of(store) == STORE_TIMESCALEDB
    if timescale:
        compressed = scratch.execute("SELECT count(compress_chunk(c)) FROM show_chunks('readings') AS c").fetchone()
        assert compressed is not None and compressed[0] >= 3
    scratch.commit()

    assert migrate(scratch) == [m.version for m in plan_migrations(timescale) if m.version >= SERIES_KEY]

    ids = {(station, parameter): id_ for id_, station, parameter in scratch.execute("SELECT id, station_id, parameter FROM series")}
    assert set(ids) == {(s.id, p) for s in stations for p in ("COD", "pH")} and len(set(ids.values())) == 4
    stored = scratch.execute("SELECT series_id, station_id, parameter, ts, value, unit, status FROM readings ORDER BY 2, 3, 4").fetchall()
    assert stored == [(ids[r[0], r[1]], *r) for r in sorted(rows)]
    key = scratch.execute("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'readings_pkey'").fetchone()
    assert key == ("PRIMARY KEY (series_id, ts)",)
    with pytest.raises(psycopg.errors.UniqueViolation):
        scratch.execute("INSERT INTO readings (series_id, station_id, parameter, ts, value, unit, status) "
                        "VALUES (%s, %s, 'COD', %s, 1, 'mg/L', '00')", (ids[stations[0].id, "COD"], stations[0].id, t0))
    scratch.rollback()
    if timescale:
        again = scratch.execute("SELECT count(compress_chunk(c, if_not_compressed => true)) FROM show_chunks('readings') AS c").fetchone()
        policies = scratch.execute("SELECT count(*) FROM timescaledb_information.jobs "
                                   "WHERE proc_name = 'policy_compression' AND hypertable_name = 'readings'").fetchone()
        assert again == compressed and policies == (1,)
        assert scratch.execute("SELECT count(*), sum(value) FROM readings").fetchone() == (len(rows), sum(r[3] for r in rows))


def test_a_store_is_never_switched_to_the_other_kind(store: Settings, scratch: psycopg.Connection) -> None:
    """Created on one path, a store stays on it: asked for the other kind, migrate refuses and says why."""
    kind = kind_of(store)
    other = STORE_POSTGRESQL if kind == STORE_TIMESCALEDB else STORE_TIMESCALEDB
    migrate(scratch, target=BEFORE_ROLLUPS)
    with pytest.raises(StoreError, match=f"created as a {kind} store; it is never switched to {other}"):
        migrate(scratch, use_timescale=other == STORE_TIMESCALEDB)
    assert schema_version(scratch) == BEFORE_ROLLUPS
    assert migrate(scratch) and store_kind(scratch) == kind


def test_a_native_store_on_a_timescaledb_server_stays_native(stack: Settings) -> None:
    """A database created native (use_timescale=False) on a server that preloads TimescaleDB keeps the
    native migrations when later migrated with the automatic choice."""
    with scratch_database(stack, f"{stack.pg_database}_stay_native") as dsn, connect(dsn) as conn:
        migrate(conn, use_timescale=False, target=BEFORE_ROLLUPS)
        with capture_logs() as logs:
            assert migrate(conn) and store_kind(conn) == STORE_POSTGRESQL
        assert [e["event"] for e in logs if e["event"].startswith("db.store")] == ["db.store_kept"]
        assert describe_store(conn).timescaledb_version is None and "readings_5m" in tables(conn)


def test_installed_but_not_preloaded_falls_back_with_one_clear_line_and_no_failed_migration(
        native_server: Settings, stack: Settings) -> None:
    """The trap of issue 17: on the native server TimescaleDB is installed (listed in
    pg_available_extensions) but not preloaded, so CREATE EXTENSION fails. `quantrac db migrate`
    builds a native store anyway and logs one line with the cause and the fix."""
    name = f"{native_server.pg_database}_fallback"
    with connect(native_server.pg_dsn.replace(f"dbname={native_server.pg_database}", "dbname=postgres")) as admin:
        listed = admin.execute("SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'").fetchone()
    assert listed == (1,), "the extension must be installed on this machine (make timescaledb) for this test"
    with scratch_database(native_server, name) as dsn:
        with connect(dsn) as conn:
            with pytest.raises(StoreError, match="not preloaded; fix: add shared_preload_libraries"):
                migrate(conn, use_timescale=True)  # asked for explicitly, TimescaleDB cannot fall back
            assert "schema_version" not in tables(conn)
        done = subprocess.run([sys.executable, "-m", "cli", "db", "migrate", "--no-seed"], capture_output=True, text=True,
                              timeout=120, env={**os.environ, "QUANTRAC_PG_PORT": str(native_server.pg_port),
                                                "QUANTRAC_PG_DATABASE": name, "QUANTRAC_LOG_FORMAT": "console"})
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip().endswith(f"schema version {LATEST} (postgresql); applied now: "
                                            f"{[m.version for m in plan_migrations(use_timescale=False)]}")
        fallback = [line for line in done.stderr.splitlines() if "db.store_fallback" in line]
        assert len(fallback) == 1, done.stderr
        assert "cause='TimescaleDB is installed but not preloaded'" in fallback[0]
        assert "shared_preload_libraries = 'timescaledb'" in fallback[0] and "[warning" in fallback[0]
        assert not [line for line in done.stderr.splitlines() if "[error" in line], done.stderr
        with connect(dsn) as conn:
            assert store_kind(conn) == STORE_POSTGRESQL and describe_store(conn).timescaledb_version is None


def test_a_service_started_with_migrate_on_start_brings_an_empty_database_to_the_latest_version(
        store: Settings, scratch: psycopg.Connection) -> None:
    """`QUANTRAC_DB_MIGRATE_ON_START=true`: the API (here; the bridge, worker and notifier alike)
    migrates before it serves, so a deployment needs no separate migration step."""
    import socket

    from tests.utils.poll import wait_for
    from tests.utils.processes import NAMESPACE, Process

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    name = scratch.info.dbname
    api = Process(f"migrate-on-start-api-{kind_of(store)}", ["api"], store.run_dir / "test-logs" / NAMESPACE,
                  {"QUANTRAC_PG_DATABASE": name, "QUANTRAC_PG_PORT": str(store.pg_port), "QUANTRAC_DB_MIGRATE_ON_START": "true",
                   "QUANTRAC_API_PORT": str(port)})
    try:
        # The last migration commits before the service logs that it has migrated: wait for both.
        wait_for(lambda: api.alive() and "db.migrated_on_start" in api.output(),
                 timeout=60, interval=0.5, what=f"the API to migrate {name} (log: {api.log_path})")
        assert schema_version(scratch) == LATEST and store_kind(scratch) == kind_of(store)
    finally:
        api.stop()
