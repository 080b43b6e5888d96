"""Store benchmark, on both store paths in the same run: TimescaleDB (the stack's PostgreSQL, which
preloads the extension) and native PostgreSQL (a second local server without it, `native_pg_port`).

For each path, in a database of its own (quantrac_bench, dropped and re-created at each run):

1. Write rate. The same number of readings, in the worker's transaction size, written four ways
   into the same `readings` table (each on its own stations, so no write conflicts with another):
   the store writer with the rollups as the worker runs it (one binary COPY straight into
   `readings`, falling back to a staging table and `INSERT ... ON CONFLICT DO NOTHING RETURNING`
   when a key is stored already; then on native PostgreSQL the batch's bucket sums merged into
   the rollup tables; on TimescaleDB the continuous aggregates only record the invalidation), the
   writer without the rollups, every store statement of the worker's batch (writer, conflicts,
   delivery counts, rollups, completeness; no rules), and a raw binary COPY straight into
   `readings` (the ceiling: no idempotence, no rollups; psycopg's `write_row` per reading, the
   baseline of every run since issue 15). Readings are built before timing, and so are the columns
   the store methods take (the worker decodes its batch into them: `processors.pipeline.decode_batch`).
   A fifth method COPYs a binary buffer built before timing (`copy_buffer`): the server's own
   cost of the rows, a floor no client reaches. The
   worker's path is also timed statement by statement (µs per reading, client side, commit
   included), and one more batch is EXPLAIN ANALYZEd (server-side ms per statement, rolled back),
   once as new readings and once redelivered (the staged insert).
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
from contextlib import ExitStack
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from api.routes.history import bucket_series  # noqa: E402
from bench.common import percentiles, write_result  # noqa: E402
from processors.copy_binary import PG_EPOCH_US, SIGNATURE, TRAILER, copy_buffer  # noqa: E402
from processors.partitions import refresh_aggregates  # noqa: E402
from processors.reading_writer import DIRECT_COPY, STAGE, STAGE_COPY, STAGED_INSERT, ReadingWriter, copy_rows  # noqa: E402
from processors.rollups import bucket_sql, bucket_sums, merge_sql, rebuild_rollups, update_rollups  # noqa: E402
from quantrac import completeness  # noqa: E402
from quantrac.batch_columns import BatchColumns, batch_columns  # noqa: E402
from quantrac.db import STORE_POSTGRESQL, STORE_TIMESCALEDB, describe_store, migrate, series_ids  # noqa: E402
from quantrac.delivery_accounting import record_store_counts  # noqa: E402
from quantrac.domain import ParameterSpec, Reading, Station, StationKind  # noqa: E402
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


STAGES = ("write", "conflicts", "delivery_counts", "rollups", "completeness", "commit")
METHODS = ("raw_copy", "store_with_rollups", "store_without_rollups", "worker_store_path", "raw_copy_prebuilt",
           "narrow_copy_prebuilt")
_TYPES = ["int4", "text", "text", "timestamptz", "float8", "text", "text"]


BENCH_SERIES_BASE = 1_000_000
"""The bench numbers the series of its own COPY rows from here: the methods that store through `ReadingWriter` write
the same `readings` with ids from the `series` table's sequence, from 1, and a (series id, time) key of both collided."""


def bench_series_id(series_ids: dict[tuple[str, str], int], key: tuple[str, str]) -> int:
    """The bench's id of a (station, parameter), numbered in `series_ids` the first time it is seen."""
    return series_ids.setdefault(key, BENCH_SERIES_BASE + len(series_ids))


def method_input(name: str, batch: list[Reading], series_ids: dict[tuple[str, str], int]
                 ) -> list[tuple[int, Reading]] | BatchColumns | bytes:
    """What each method is handed, built before timing: readings with their series ids, the decoded columns, or a
    ready buffer (series ids numbered in `series_ids`: the prebuilt rows go into a fresh database, which holds no
    series yet)."""
    if name == "raw_copy":
        return [(bench_series_id(series_ids, (r.station_id, r.parameter)), r) for r in batch]
    columns = batch_columns(batch)
    if name == "narrow_copy_prebuilt":
        return narrow_buffer(columns, series_ids)
    if name == "raw_copy_prebuilt":
        return copy_buffer(columns, [bench_series_id(series_ids, key) for key in columns.series_keys])
    return columns


NARROW_TABLE = """CREATE TABLE readings_narrow (
    series_id integer NOT NULL, ts timestamptz NOT NULL, value double precision,
    status smallint NOT NULL CHECK (status IN (0, 1, 2)), received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (series_id, ts)){partitioned}"""
"""The readings row issue 15 point 5 asks about: an integer series id for (station, parameter), a smallint
status and no unit (both would come from the registry). Only the bench creates it: `readings` is unchanged."""
NARROW_COPY = "COPY readings_narrow (series_id, ts, value, status) FROM STDIN (FORMAT BINARY)"
_NARROW_ROW = np.dtype([("fields", ">i2"), ("series_len", ">i4"), ("series", ">i4"), ("ts_len", ">i4"), ("ts", ">i8"),
                        ("value_len", ">i4"), ("value", ">f8"), ("status_len", ">i4"), ("status", ">i2")])


def narrow_buffer(batch: BatchColumns, series_ids: dict[tuple[str, str], int]) -> bytes:
    """`batch` as binary COPY rows of `readings_narrow`, each (station, parameter) numbered in `series_ids` the first
    time it is seen (no NULL values: the bench's readings all have one)."""
    ids = np.array([bench_series_id(series_ids, key) for key in batch.series_keys], np.int64)
    rows = np.zeros(len(batch), _NARROW_ROW)
    rows["fields"], rows["series_len"], rows["ts_len"], rows["value_len"], rows["status_len"] = 4, 4, 8, 8, 2
    rows["series"], rows["ts"] = ids[batch.series], batch.ts_us - PG_EPOCH_US
    rows["value"], rows["status"] = batch.values, batch.status
    return SIGNATURE + rows.tobytes() + TRAILER


def create_narrow_table(conn: psycopg.Connection, kind: str, days: list[date]) -> None:
    """`readings_narrow` partitioned as `readings` is on this store: day chunks (TimescaleDB) or day partitions."""
    if kind == STORE_TIMESCALEDB:
        conn.execute(NARROW_TABLE.format(partitioned=""))
        conn.execute("SELECT create_hypertable('readings_narrow', 'ts', chunk_time_interval => INTERVAL '1 day')")
        return
    conn.execute(NARROW_TABLE.format(partitioned=" PARTITION BY RANGE (ts)"))
    for day in days:
        conn.execute(sql.SQL("CREATE TABLE {} PARTITION OF readings_narrow FOR VALUES FROM ({}) TO ({})").format(
            sql.Identifier(f"readings_narrow_{day:%Y%m%d}"), sql.Literal(day), sql.Literal(day + timedelta(days=1))))


class WriteMethod:
    """One way of writing batches, on its own connection, stations and clock."""

    def __init__(self, name: str, conn: psycopg.AsyncConnection[Any], stations: dict[str, Station]) -> None:
        self.name, self.conn, self.stations = name, conn, stations
        self.writer = ReadingWriter()
        self.seconds = 0.0
        self.stages = dict.fromkeys(STAGES, 0.0)

    async def write(self, batch: Any) -> None:
        """Write one batch (`method_input`) in one transaction, adding the time it took."""
        began = time.perf_counter()
        if self.name == "raw_copy":
            async with self.conn.transaction(), self.conn.cursor() as cur, cur.copy(DIRECT_COPY) as copy:
                copy.set_types(_TYPES)
                for series_id, r in batch:
                    await copy.write_row((series_id, r.station_id, r.parameter, r.ts, r.value, r.unit, r.status.value))
        elif self.name in ("raw_copy_prebuilt", "narrow_copy_prebuilt"):
            statement = DIRECT_COPY if self.name == "raw_copy_prebuilt" else NARROW_COPY
            async with self.conn.transaction(), self.conn.cursor() as cur, cur.copy(statement) as copy:
                await copy.write(batch)
        elif self.name == "worker_store_path":
            await self._worker_batch(batch)
        else:
            async with self.conn.transaction():
                new = await self.writer.write(self.conn, batch)
                if self.name == "store_with_rollups":
                    await update_rollups(self.conn, new)
        self.seconds += time.perf_counter() - began

    async def _worker_batch(self, batch: BatchColumns) -> None:
        """Every store statement of the worker's batch (no rules), each stage timed."""
        tick = time.perf_counter()

        def lap(stage: str) -> None:
            nonlocal tick
            now = time.perf_counter()
            self.stages[stage] += now - tick
            tick = now

        async with self.conn.transaction():
            new = await self.writer.write(self.conn, batch)
            lap("write")
            conflicts = await self.writer.conflicts(self.conn, batch, new)
            lap("conflicts")
            await record_store_counts(self.conn, batch, new, [r for r, *_ in conflicts])
            lap("delivery_counts")
            await update_rollups(self.conn, new)
            lap("rollups")
            await completeness.record(self.conn, completeness.tally(new), self.stations)
            lap("completeness")
        lap("commit")


async def write_rates(dsn: str, kind: str, rows: int, size: int) -> dict[str, WriteMethod]:
    """Each method writes `rows` readings of its own stations; batches are interleaved (batch 1 of every
    method, then batch 2, ...), so that every method meets the same table sizes, checkpoints and load
    from other work on the machine (written one method after the other, the last method's readings
    met a table four times larger and a raw COPY ran at half the rate it had first)."""
    items = {name: readings(prefix, rows, 50) for name, prefix in zip(METHODS, "CWNKBR", strict=True)}
    series_ids: dict[tuple[str, str], int] = {}
    inputs = {name: [method_input(name, batch[first:first + size], series_ids) for first in range(0, rows, size)]
              for name, batch in items.items()}
    days = sorted({r.ts.date() for batch in items.values() for r in batch})
    with psycopg.connect(dsn, autocommit=True) as setup:
        create_narrow_table(setup, kind, days)
    methods: dict[str, WriteMethod] = {}
    try:
        for name in METHODS:
            conn = await psycopg.AsyncConnection.connect(dsn)
            methods[name] = WriteMethod(name, conn, bench_stations(items[name]))
        await methods["raw_copy"].conn.execute("SELECT quantrac_ensure_partitions(%s, %s)", (days[0], days[-1]))
        await methods["raw_copy"].conn.commit()
        for batch in range(len(inputs["raw_copy"])):
            for name, method in methods.items():
                await method.write(inputs[name][batch])
    finally:
        for method in methods.values():
            await method.conn.close()
    return methods


def table_bytes_per_row(dsn: str, table: str) -> float:
    """On-disk bytes (heap, indexes, TOAST; every partition or chunk) per row of `table`."""
    with psycopg.connect(dsn) as conn:
        size = conn.execute(sql.SQL("SELECT count(*), (SELECT sum(pg_total_relation_size(relid)) FROM "
                                    "pg_partition_tree(%s::regclass) WHERE isleaf) FROM {}").format(sql.Identifier(table)),
                            (table,)).fetchone()
        if size is not None and size[1] is None:  # a hypertable: chunks are not partitions
            size = (size[0], conn.execute("SELECT hypertable_size(%s::regclass)", (table,)).fetchone()[0])  # type: ignore[index]
    assert size is not None
    return round(float(size[1]) / max(size[0], 1), 1)


def bench_stations(items: list[Reading]) -> dict[str, Station]:
    """A registry entry for each station of the readings (completeness counts registered stations only)."""
    specs = {p: ParameterSpec(symbol=p, unit="mg/L") for p in PARAMETERS}
    return {s: Station(id=s, name=s, zone="bench", facility="bench", kind=StationKind.WASTEWATER, expected_interval_s=60,
                       parameters=specs) for s in {r.station_id for r in items}}


async def explain_batch(dsn: str, kind: str, batch: list[Reading]) -> dict[str, float]:
    """Server-side ms of each statement of one batch, from EXPLAIN ANALYZE; rolled back.

    The batch is written twice: new (the direct COPY, timed client side: COPY cannot be explained;
    then the rollup merge) and redelivered (the staged `INSERT ... ON CONFLICT DO NOTHING`)."""
    out: dict[str, float] = {}
    writer = ReadingWriter()
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        async with conn.cursor() as cur:
            await cur.execute("BEGIN")
            began = time.perf_counter()
            new = await writer.write(conn, batch)
            out["direct_copy_client_ms"] = round((time.perf_counter() - began) * 1000, 2)
            if kind == STORE_POSTGRESQL:
                out["rollup_merge_ms"] = await _execution_ms(cur, merge_sql(), bucket_sums(batch_columns(new)))
            await cur.execute(STAGE)
            columns = batch_columns(batch)
            await copy_rows(cur, STAGE_COPY, columns, await writer.series_ids(conn, columns))
            out["staged_insert_redelivered_ms"] = await _execution_ms(cur, STAGED_INSERT, None)
            await cur.execute("ROLLBACK")
    return out


async def _execution_ms(cur: psycopg.AsyncCursor[Any], statement: str, params: Any) -> float:
    await cur.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {statement}", params)
    row = await cur.fetchone()
    return round(float(row[0][0]["Execution Time"]), 2) if row else -1.0


def load_history(dsn: str, days: int, stations: int) -> tuple[int, float]:
    """DAYS x STATIONS x 8 parameters at 1-minute cadence, generated server-side and rolled up in SQL."""
    end = START + timedelta(days=days)
    began = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT quantrac_ensure_partitions(%s, %s)", (START.date(), end.date()))
        ids = series_ids(conn, ((f"Q-{s:03d}", p) for s in range(stations) for p in PARAMETERS))
        conn.execute(
            "INSERT INTO readings (series_id, station_id, parameter, ts, value, unit, status) "
            "SELECT k.id, k.station_id, k.parameter, t, 50 + random() * 20, 'mg/L', '00' "
            "FROM unnest(%s::integer[], %s::text[], %s::text[]) AS k(id, station_id, parameter), "
            "generate_series(%s::timestamptz, %s::timestamptz - interval '1 minute', interval '1 minute') AS t",
            (list(ids.values()), [k[0] for k in ids], [k[1] for k in ids], START, end))
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
    methods = asyncio.run(write_rates(dsn, kind, args.write_rows, args.batch))
    explained = asyncio.run(explain_batch(dsn, kind, readings("E", args.batch, 50)))
    raw_copy_s, store_s, plain_s, worker_s, prebuilt_s, narrow_s = (methods[name].seconds for name in METHODS)
    write = {
        "rows": args.write_rows, "rows_per_transaction": args.batch, "batches": "interleaved, one of each method in turn",
        "store_writer_with_rollups_rows_per_s": round(args.write_rows / store_s),
        "store_writer_without_rollups_rows_per_s": round(args.write_rows / plain_s),
        "baseline_raw_binary_copy_rows_per_s": round(args.write_rows / raw_copy_s),
        "ratio_store_with_rollups_to_raw_copy": round(raw_copy_s / store_s, 3),
        "ratio_store_without_rollups_to_raw_copy": round(raw_copy_s / plain_s, 3),
        "worker_store_path_rows_per_s": round(args.write_rows / worker_s),
        "ratio_worker_store_path_to_raw_copy": round(raw_copy_s / worker_s, 3),
        "worker_store_path_us_per_reading": {stage: round(t / args.write_rows * 1e6, 2)
                                             for stage, t in methods["worker_store_path"].stages.items()},
        "baseline_raw_binary_copy_us_per_reading": round(raw_copy_s / args.write_rows * 1e6, 2),
        "raw_copy_prebuilt_buffer_rows_per_s": round(args.write_rows / prebuilt_s),
        "ratio_store_with_rollups_to_raw_copy_prebuilt_buffer": round(prebuilt_s / store_s, 3),
        "narrow_row_copy_prebuilt_buffer_rows_per_s": round(args.write_rows / narrow_s),
        "ratio_narrow_row_to_raw_copy_prebuilt_buffer": round(prebuilt_s / narrow_s, 3),
        "bytes_per_reading": {"readings": table_bytes_per_row(dsn, "readings"),
                              "readings_narrow": table_bytes_per_row(dsn, "readings_narrow")},
        "explain_one_batch": explained,
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
    with ExitStack() as servers_up:
        for s in paths.values():
            servers_up.enter_context(local_stack.running(s, only=["postgres"]))
        figures = {kind: bench_path(s, kind, args) for kind, s in paths.items()}
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
