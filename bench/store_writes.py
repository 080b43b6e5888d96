"""Store benchmark, on both store paths in the same run: TimescaleDB (the stack's PostgreSQL, which
preloads the extension) and native PostgreSQL (a second local server without it, `native_pg_port`).

For each path, in a database of its own (quantrac_bench, dropped and re-created at each run):

1. Write rate. The same number of readings, in the worker's transaction size, written three ways
   into the same `readings` table (each on its own stations, so no write conflicts with another):
   the store writer as the worker runs it (binary COPY into a staging table, `INSERT ... ON
   CONFLICT DO NOTHING RETURNING`, then the rollup upsert of the touched buckets on native
   PostgreSQL; on TimescaleDB the continuous aggregates only record the invalidation), the writer
   without the rollups, and a raw binary COPY straight into `readings` (the ceiling: no
   idempotence, no rollups). Readings are built before timing.
2. Query latency. DAYS x STATIONS x 8 parameters at a 1-minute cadence, loaded server-side and
   rolled up (native: `rebuild_rollups`; TimescaleDB: `refresh_continuous_aggregate`, what the
   worker's maintenance calls); then the API's 5-minute bucket query (`bucket_series`, all 8
   parameters) for random station-days, p50/p95, beside the same buckets computed from the raw
   readings (`date_bin ... GROUP BY`) on the same station-days.
3. Size. The readings' on-disk size (table, indexes, TOAST); on TimescaleDB compressed too (every
   chunk, as the compression policy does after 7 days), with the ratio and the two queries again.

The issue's full size is 30 days x 100 stations (34.6 M readings); the default is the QUICK size,
3 days x 20 stations (0.69 M), which fits the shared 2-core machine: pass `--days 30 --stations 100`
for the full one. Starts the two PostgreSQL servers when they are not running (and stops those it started).

Usage::

    .venv/bin/python bench/store_writes.py [--days 3] [--stations 20] [--write-rows 200000] [--batch 4000] [--queries 200]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import psycopg
from psycopg import sql

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from api.routes.history import bucket_series  # noqa: E402
from bench.common import percentiles, write_result  # noqa: E402
from processors.partitions import refresh_aggregates  # noqa: E402
from processors.reading_writer import ReadingWriter  # noqa: E402
from processors.rollups import bucket_sql, rebuild_rollups, update_rollups  # noqa: E402
from quantrac.db import STORE_POSTGRESQL, STORE_TIMESCALEDB, describe_store, migrate  # noqa: E402
from quantrac.domain import Reading  # noqa: E402
from quantrac.settings import Settings  # noqa: E402
from stack import services as local_stack  # noqa: E402
from stack.postgres import native_postgres_settings  # noqa: E402

PARAMETERS = ("COD", "BOD5", "TSS", "NH4", "pH", "Temp", "Flow", "Color")
DATABASE = "quantrac_bench"
START = datetime(2026, 9, 1, tzinfo=timezone.utc)


def fresh_database(settings: Settings, kind: str) -> str:
    """quantrac_bench on this server, dropped, re-created and migrated as a `kind` store."""
    admin = settings.model_copy(update={"pg_database": "postgres"}).pg_dsn
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DATABASE)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
    dsn = settings.model_copy(update={"pg_database": DATABASE}).pg_dsn
    with psycopg.connect(dsn, autocommit=True) as conn:
        migrate(conn, use_timescale=kind == STORE_TIMESCALEDB)
    return dsn


def drop_database(settings: Settings) -> None:
    admin = settings.model_copy(update={"pg_database": "postgres"}).pg_dsn
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DATABASE)))


def readings(prefix: str, rows: int, stations: int) -> list[Reading]:
    """`rows` readings over `stations` stations x 8 parameters at 1-minute cadence, in time order."""
    out = []
    per_time = stations * len(PARAMETERS)
    for n in range(rows):
        minute, rest = divmod(n, per_time)
        station, parameter = divmod(rest, len(PARAMETERS))
        out.append(Reading(station_id=f"{prefix}-{station:03d}", parameter=PARAMETERS[parameter], value=50.0 + n % 17,
                           unit="mg/L", ts=START + timedelta(minutes=minute)))
    return out


def batches(items: list[Reading], size: int) -> Iterator[list[Reading]]:
    for first in range(0, len(items), size):
        yield items[first:first + size]


async def write_with_store(dsn: str, items: list[Reading], size: int, rollups: bool) -> float:
    writer = ReadingWriter()
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        began = time.perf_counter()
        for batch in batches(items, size):
            async with conn.transaction():
                new = await writer.write(conn, batch)
                if rollups:
                    await update_rollups(conn, new)
        return time.perf_counter() - began


def write_with_raw_copy(dsn: str, items: list[Reading], size: int) -> float:
    with psycopg.connect(dsn) as conn:
        days = sorted({r.ts.date() for r in items})
        conn.execute("SELECT quantrac_ensure_partitions(%s, %s)", (days[0], days[-1]))
        conn.commit()
        began = time.perf_counter()
        for batch in batches(items, size):
            with conn.transaction(), conn.cursor() as cur:
                with cur.copy("COPY readings (station_id, parameter, ts, value, unit, status) FROM STDIN (FORMAT BINARY)") as copy:
                    copy.set_types(["text", "text", "timestamptz", "float8", "text", "text"])
                    for r in batch:
                        copy.write_row((r.station_id, r.parameter, r.ts, r.value, r.unit, r.status.value))
        return time.perf_counter() - began


def load_history(dsn: str, days: int, stations: int) -> tuple[int, float]:
    """DAYS x STATIONS x 8 parameters at 1-minute cadence, generated server-side and rolled up in SQL."""
    end = START + timedelta(days=days)
    began = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT quantrac_ensure_partitions(%s, %s)", (START.date(), end.date()))
        conn.execute(
            "INSERT INTO readings (station_id, parameter, ts, value, unit, status) "
            "SELECT format('Q-%%s', lpad(s::text, 3, '0')), p, t, 50 + random() * 20, 'mg/L', '00' "
            "FROM generate_series(0, %s - 1) AS s, unnest(%s::text[]) AS p, "
            "generate_series(%s::timestamptz, %s::timestamptz - interval '1 minute', interval '1 minute') AS t",
            (stations, list(PARAMETERS), START, end))
        if describe_store(conn).kind == STORE_TIMESCALEDB:
            refresh_aggregates(conn, until=end + timedelta(days=1))
        else:
            rebuild_rollups(conn, START, end)
            conn.execute("VACUUM ANALYZE readings_5m")
        conn.execute("VACUUM ANALYZE readings")
        rows = conn.execute("SELECT count(*) FROM readings WHERE station_id LIKE 'Q-%%'").fetchone()
    return int(rows[0]) if rows else 0, time.perf_counter() - began


def query_latencies(dsn: str, days: int, stations: int, queries: int) -> dict[str, Any]:
    rng = random.Random(7)
    picks = [(f"Q-{rng.randrange(stations):03d}", START + timedelta(days=rng.randrange(days))) for _ in range(queries)]
    on_the_fly = (f"SELECT parameter, {bucket_sql('5m')} AS bucket, avg(value), min(value), max(value), count(*) "
                  "FROM readings WHERE station_id = %s AND parameter = ANY(%s) AND ts >= %s AND ts < %s GROUP BY 1, 2 ORDER BY 1, 2")
    rollup_ms, raw_ms = [], []
    with psycopg.connect(dsn, autocommit=True) as conn:
        for station, day in picks[:5]:  # warm the caches of both paths alike
            bucket_series(conn, station, PARAMETERS, "5m", day, day + timedelta(days=1))
            conn.execute(on_the_fly, (station, list(PARAMETERS), day, day + timedelta(days=1))).fetchall()
        for station, day in picks:
            began = time.perf_counter()
            points = bucket_series(conn, station, PARAMETERS, "5m", day, day + timedelta(days=1))
            rollup_ms.append((time.perf_counter() - began) * 1000)
            began = time.perf_counter()
            rows = conn.execute(on_the_fly, (station, list(PARAMETERS), day, day + timedelta(days=1))).fetchall()
            raw_ms.append((time.perf_counter() - began) * 1000)
            assert len(points) == len(rows) == 288 * len(PARAMETERS), (len(points), len(rows))
    return {"api_bucket_query_ms": percentiles(rollup_ms, (50, 95)),
            "baseline_group_by_raw_ms": percentiles(raw_ms, (50, 95)),
            "points_per_query": 288 * len(PARAMETERS)}


def readings_bytes(conn: psycopg.Connection) -> int:
    """On-disk size of the readings (heap, indexes, TOAST), over every partition or chunk."""
    if describe_store(conn).kind == STORE_TIMESCALEDB:
        row = conn.execute("SELECT hypertable_size('readings')").fetchone()
    else:
        row = conn.execute("SELECT sum(pg_total_relation_size(inhrelid)) FROM pg_inherits WHERE inhparent = 'readings'::regclass").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def compress_all(dsn: str) -> dict[str, Any]:
    """Compress every chunk (what the policy does after 7 days); sizes before and after, and the time it took."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        began = time.perf_counter()
        chunks = conn.execute("SELECT count(compress_chunk(c, if_not_compressed => true)) FROM show_chunks('readings') AS c").fetchone()
        seconds = time.perf_counter() - began
        conn.execute("VACUUM ANALYZE readings")
        row = conn.execute("SELECT sum(before_compression_total_bytes), sum(after_compression_total_bytes) "
                           "FROM chunk_compression_stats('readings')").fetchone()
    before, after = (int(row[0]), int(row[1])) if row and row[0] else (0, 0)
    return {"chunks": int(chunks[0]) if chunks else 0, "compress_s": round(seconds, 1), "before_bytes": before,
            "after_bytes": after, "ratio": round(before / after, 2) if after else None}


def bench_path(settings: Settings, kind: str, args: argparse.Namespace) -> dict[str, Any]:
    """Every figure of one store path, on a fresh quantrac_bench of that server."""
    dsn = fresh_database(settings, kind)
    store_items = readings("W", args.write_rows, 50)
    plain_items = readings("N", args.write_rows, 50)
    copy_items = readings("C", args.write_rows, 50)
    raw_copy_s = write_with_raw_copy(dsn, copy_items, args.batch)
    store_s = asyncio.run(write_with_store(dsn, store_items, args.batch, rollups=True))
    plain_s = asyncio.run(write_with_store(dsn, plain_items, args.batch, rollups=False))
    write = {
        "rows": args.write_rows, "rows_per_transaction": args.batch,
        "store_writer_with_rollups_rows_per_s": round(args.write_rows / store_s),
        "store_writer_without_rollups_rows_per_s": round(args.write_rows / plain_s),
        "baseline_raw_binary_copy_rows_per_s": round(args.write_rows / raw_copy_s),
        "ratio_store_with_rollups_to_raw_copy": round(raw_copy_s / store_s, 3),
        "ratio_store_without_rollups_to_raw_copy": round(raw_copy_s / plain_s, 3),
    }
    history_rows, load_s = load_history(dsn, args.days, args.stations)
    query = query_latencies(dsn, args.days, args.stations, args.queries)
    with psycopg.connect(dsn, autocommit=True) as conn:
        info = describe_store(conn)
        size = readings_bytes(conn)
    assert info.kind == kind, f"{settings.pg_host}:{settings.pg_port} gave a {info.summary} store, not {kind}"
    result: dict[str, Any] = {"store": info.summary, "postgresql": info.server_version, "timescaledb": info.timescaledb_version,
                              "write": write, "history": {"rows": history_rows, "load_and_rollup_s": round(load_s, 1), **query},
                              "readings_bytes": size}
    if kind == STORE_TIMESCALEDB:
        result["compression"] = compress_all(dsn)
        result["history_compressed"] = query_latencies(dsn, args.days, args.stations, args.queries)
    drop_database(settings)
    return result


def servers(settings: Settings) -> dict[str, Settings]:
    """The two local PostgreSQL servers, by store kind; started when not running (and stopped by `main` after)."""
    return {STORE_TIMESCALEDB: settings, STORE_POSTGRESQL: native_postgres_settings(settings)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=3, help="History days (issue: 30).")
    parser.add_argument("--stations", type=int, default=20, help="History stations (issue: 100).")
    parser.add_argument("--write-rows", type=int, default=200_000, help="Readings written by each write method.")
    parser.add_argument("--batch", type=int, default=4000, help="Readings per transaction (500 messages x 8 parameters).")
    parser.add_argument("--queries", type=int, default=200, help="Station-days queried.")
    args = parser.parse_args(argv)
    paths = servers(Settings())
    started = [kind for kind, s in paths.items() if not local_stack.status(s, only=["postgres"])["postgres"].healthy]
    try:
        for s in paths.values():
            local_stack.up(s, only=["postgres"])
        figures = {kind: bench_path(s, kind, args) for kind, s in paths.items()}
    finally:
        for kind in started:
            local_stack.down(paths[kind], only=["postgres"])
    result = {
        "size": "QUICK" if (args.days, args.stations) == (3, 20) else "custom",
        "parameters": {"days": args.days, "stations": args.stations, "parameters_per_station": len(PARAMETERS),
                       "cadence_s": 60, "queries": args.queries, "write_rows": args.write_rows,
                       "issue_full_size": "--days 30 --stations 100"},
        "load_average_at_end": os.getloadavg(),
        "paths": figures,
    }
    write_result("store", result)
    return result


if __name__ == "__main__":
    main()
