"""The TimescaleDB path on a real TimescaleDB build: PGlite (PostgreSQL 17 in WebAssembly) with the
timescaledb extension, served over the wire protocol by tests/timescale/server.mjs.

The production migrations run unchanged (`migrate(conn, use_timescale=True)`); readings go in with
plain INSERTs (PGlite's socket has no COPY and no pipelined executemany); continuous aggregates
are refreshed with the same call the worker's maintenance makes; and the history queries are the
very functions the API calls. PGlite serves one connection at a time, so each test opens and
closes its own.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from datetime import date, datetime, timedelta, timezone
from typing import Iterator, Sequence
from zoneinfo import ZoneInfo

import psycopg
import pytest

from api.routes.history import bucket_series, compliance, raw_gaps, stream_raw_csv
from processors.partitions import apply_retention, refresh_aggregates
from processors.rollups import ROLLUPS, update_rollups
from quantrac.db import migrate, plan_migrations, save_stations, schema_version, store_kind
from quantrac.domain import Reading, Status
from quantrac.settings import REPO_ROOT
from tests.test_store_rollups import expected_rollups
from tests.utils.builders import make_station
from tests.utils.poll import wait_for

HARNESS = REPO_ROOT / "tests" / "timescale"
PORT = int(os.environ.get("QUANTRAC_TEST_PGLITE_PORT", "21011"))
DSN = f"host=127.0.0.1 port={PORT} user=postgres password=pglite dbname=postgres sslmode=disable"
STATION = make_station("TS-STATION-1", cod_limit=100.0, expected_interval_s=300)
DAY_START = datetime(2026, 11, 17, 17, 0, tzinfo=timezone.utc)  # 2026-11-18 00:00 in Hanoi


def _install_harness() -> None:
    if (HARNESS / "node_modules" / "@unni-craftsman" / "pglite").is_dir():
        return
    npm = shutil.which("npm")
    assert npm, "npm is needed for the TimescaleDB harness: apt-get install nodejs npm (or run `make timescale-harness`)"
    subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=HARNESS, check=True, timeout=300)


def connect() -> psycopg.Connection:
    """A connection to PGlite. Its one backend outlives client connections, so psycopg's automatic
    prepared statements (named `_pg3_N` per connection) would collide: they are turned off."""
    return psycopg.connect(DSN, autocommit=True, connect_timeout=5, prepare_threshold=None)


@pytest.fixture(scope="module")
def timescale() -> Iterator[str]:
    """PGlite + TimescaleDB on its own port, migrated and seeded; stopped at the end of the module."""
    _install_harness()
    log_path = REPO_ROOT / ".run" / "test-logs" / os.environ.get("QUANTRAC_TEST_NAMESPACE", "test") / "pglite.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        proc = subprocess.Popen(["node", "server.mjs"], cwd=HARNESS, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "PGLITE_PORT": str(PORT)})

    def answers() -> bool:
        assert proc.poll() is None, f"the PGlite server exited with {proc.returncode}:\n{log_path.read_text()[-2000:]}"
        try:
            with connect() as conn:
                return conn.execute("SELECT 1").fetchone() == (1,)
        except psycopg.OperationalError:
            return False

    try:
        wait_for(answers, timeout=120, interval=0.5, what=f"PGlite with TimescaleDB to answer on port {PORT}")
        with connect() as conn:
            migrate(conn, use_timescale=True)
            save_stations(conn, {STATION.id: STATION})
        yield DSN
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def insert(conn: psycopg.Connection, readings: Sequence[Reading]) -> None:
    """Plain INSERT of arrays (one statement: no COPY, no pipeline on PGlite), idempotent like the writer."""
    conn.execute(
        "INSERT INTO readings (station_id, parameter, ts, value, unit, status) "
        "SELECT * FROM unnest(%s::text[], %s::text[], %s::timestamptz[], %s::float8[], %s::text[], %s::text[]) "
        "ON CONFLICT (station_id, parameter, ts) DO NOTHING",
        [list(c) for c in zip(*[(r.station_id, r.parameter, r.ts, r.value, r.unit, r.status.value) for r in readings])])


def day_of_readings() -> list[Reading]:
    """Every 5 minutes over the local day, a hole 02:00–03:00, COD over 100 from 10:00 to 12:00, one fault."""
    readings = []
    for n in range(288):
        ts = DAY_START + timedelta(minutes=5 * n)
        if DAY_START + timedelta(hours=2) <= ts < DAY_START + timedelta(hours=3):
            continue
        cod = 150.0 if DAY_START + timedelta(hours=10) <= ts < DAY_START + timedelta(hours=12) else 50.0 + n % 3
        status = Status.FAULT if n == 200 else Status.MEASURING
        readings.append(Reading(station_id=STATION.id, parameter="COD", value=cod, unit="mg/L", ts=ts, status=status))
    return readings


def materialized(conn: psycopg.Connection) -> dict[tuple[str, str, datetime], tuple[object, ...]]:
    rows = {}
    for bucket, view in ROLLUPS.items():
        for r in conn.execute(f"SELECT parameter, bucket, avg, min, max, count, count_valid FROM {view} WHERE station_id = %s",
                              (STATION.id,)):
            rows[(bucket, r[0], r[1])] = tuple(r[2:])
    return rows


def approx(rows: dict) -> dict:  # type: ignore[type-arg]
    return {k: tuple(pytest.approx(v) if isinstance(v, float) else v for v in row) for k, row in rows.items()}


def test_the_timescale_migrations_build_hypertable_aggregates_compression(timescale: str) -> None:
    with connect() as conn:
        assert store_kind(conn) == "timescaledb"
        assert schema_version(conn) == plan_migrations(use_timescale=True)[-1].version
        assert conn.execute("SELECT hypertable_name FROM timescaledb_information.hypertables").fetchall() == [("readings",)]
        views = {r[0]: r[1] for r in conn.execute(
            "SELECT view_name, materialized_only FROM timescaledb_information.continuous_aggregates")}
        assert views == {"readings_5m": False, "readings_1h": False, "readings_1d": False}
        segmentby = conn.execute("SELECT attname FROM timescaledb_information.compression_settings "
                                 "WHERE hypertable_name = 'readings' AND segmentby_column_index IS NOT NULL "
                                 "ORDER BY segmentby_column_index").fetchall()
        assert segmentby == [("station_id",), ("parameter",)]
        jobs = {r[0] for r in conn.execute("SELECT proc_name FROM timescaledb_information.jobs")}
        assert {"policy_refresh_continuous_aggregate", "policy_compression"} <= jobs


def test_aggregates_and_the_api_bucket_query_on_timescale(timescale: str) -> None:
    readings = day_of_readings()
    with connect() as conn:
        insert(conn, readings)
        refresh_aggregates(conn, until=DAY_START + timedelta(days=2))
        assert materialized(conn) == approx(expected_rollups(readings))

        hours = bucket_series(conn, STATION.id, ["COD"], "1h", DAY_START, DAY_START + timedelta(days=1))
        assert len(hours) == 24 and [h["bucket"] for h in hours if h["missing"]] == [DAY_START + timedelta(hours=2)]
        assert hours[10]["avg"] == 150.0 and hours[10]["count"] == 12
        days = bucket_series(conn, STATION.id, ["COD"], "1d", DAY_START - timedelta(days=1), DAY_START + timedelta(days=2))
        assert [(d["bucket"], d["count"], d["missing"]) for d in days] == [
            (DAY_START - timedelta(days=1), 0, True), (DAY_START, 276, False), (DAY_START + timedelta(days=1), 0, True)]

        [gap] = raw_gaps(conn, STATION.id, ["COD"], DAY_START, DAY_START + timedelta(hours=6), timedelta(minutes=10))
        assert (gap["gap_from"], gap["gap_to"]) == (DAY_START + timedelta(hours=1, minutes=55), DAY_START + timedelta(hours=3))

        report = compliance(conn, STATION, date(2026, 11, 18), ZoneInfo("Asia/Ho_Chi_Minh"))
        cod = next(p for p in report.parameters if p.parameter == "COD")
        assert cod.hours_over_count == 2 and (cod.valid_readings, cod.expected_readings) == (275, 288)

        lines = list(stream_raw_csv(conn, STATION.id, ["COD"], DAY_START, DAY_START + timedelta(minutes=10), "Asia/Ho_Chi_Minh"))
        assert "".join(lines).splitlines()[1] == f"{STATION.id},COD,2026-11-18T00:00:00+07:00,50.0,mg/L,00"


def test_a_late_reading_corrects_exactly_its_buckets_on_timescale(timescale: str) -> None:
    late_day = DAY_START + timedelta(days=3)
    on_time = [Reading(station_id=STATION.id, parameter="pH", value=7.0 + (m % 3) / 10, unit="-", ts=late_day + timedelta(minutes=m))
               for m in range(0, 180, 5)]
    with connect() as conn:
        insert(conn, on_time)
        refresh_aggregates(conn, until=late_day + timedelta(days=2))
        before = materialized(conn)
        late = Reading(station_id=STATION.id, parameter="pH", value=3.0, unit="-", ts=late_day + timedelta(minutes=62))
        insert(conn, [late])
        refresh_aggregates(conn, until=late_day + timedelta(days=2))
        after = materialized(conn)
    changed = {k for k in after if after[k] != before.get(k)}
    assert changed == {("5m", "pH", late_day + timedelta(minutes=60)), ("1h", "pH", late_day + timedelta(hours=1)),
                       ("1d", "pH", late_day)}
    assert {k: v for k, v in after.items() if k[1] == "pH"} == approx(expected_rollups([*on_time, late]))


def test_retention_installs_policies_from_the_setting_and_the_worker_skips_rollups(timescale: str) -> None:
    with connect() as conn:
        apply_retention(conn, 400)
        apply_retention(conn, 365)
        policies = conn.execute("SELECT hypertable_name, config->>'drop_after' FROM timescaledb_information.jobs "
                                "WHERE proc_name = 'policy_retention' ORDER BY 1").fetchall()
    assert len(policies) == 4 and {p[1] for p in policies} == {"365 days"}

    async def upsert() -> int:
        async with await psycopg.AsyncConnection.connect(DSN, autocommit=True, prepare_threshold=None) as aconn:
            return await update_rollups(aconn, day_of_readings()[:5])

    assert asyncio.run(upsert()) == 0


def test_compressed_chunks_still_answer_the_history_query(timescale: str) -> None:
    with connect() as conn:
        insert(conn, day_of_readings())
        refresh_aggregates(conn, until=DAY_START + timedelta(days=2))
        before = bucket_series(conn, STATION.id, ["COD"], "5m", DAY_START, DAY_START + timedelta(hours=1))
        compressed = conn.execute("SELECT compress_chunk(c, if_not_compressed => true) FROM show_chunks('readings') AS c").fetchall()
        assert compressed
        raw = conn.execute("SELECT count(*) FROM readings WHERE station_id = %s AND parameter = 'COD'", (STATION.id,)).fetchone()
        assert raw == (276,)
        assert bucket_series(conn, STATION.id, ["COD"], "5m", DAY_START, DAY_START + timedelta(hours=1)) == before
