"""Rollups at 5 minutes, 1 hour and 1 day, kept exact on native PostgreSQL.

After a batch is stored, `update_rollups` adds the batch's NEW readings to the buckets they fall
in, in the batch's transaction: it sums them per 5-minute bucket (count, valid count, sum, min, max;
numpy, `quantrac.batch_columns`) and merges those sums, and their sums per hour and local day, into
the rollup rows in one statement (`INSERT ... SELECT FROM unnest(...) ON CONFLICT DO UPDATE SET
count = count + excluded.count, ...`, once per width in data-modifying CTEs).
Only readings the writer actually stored are added, so a redelivered batch adds nothing, and a late
reading corrects its own buckets and no others. Nothing is re-read from the raw readings, so a
batch costs the same however full its buckets are. A batch holding a value of magnitude
`HUGE_VALUE` or more recomputes its buckets from the raw readings instead (`_recompute_sql`), so
that sums overflowing float8 fail the batch with PostgreSQL's own error.
Bucket boundaries come from `quantrac/timebuckets.py`; `bucket_sql` is the same rule in SQL.
On TimescaleDB the rollups are continuous aggregates and `update_rollups` does nothing; after the
batch commits, `LateRefresh` refreshes the buckets of readings older than an aggregate's last
refresh, which real-time aggregation does not cover (so a late reading corrects its buckets on both
stores, not only at the next policy run or maintenance pass).
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any, Sequence

import numpy as np
import psycopg
import structlog
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from quantrac.batch_columns import BatchColumns, Bools, Ints, as_columns, as_datetime, bucket_starts_us, epoch_us, group
from quantrac.db import SERIES_OF, STATION_SERIES
from quantrac.domain import Reading
from quantrac.failures import RECORD_ATTEMPTS, RateLimitedLog
from quantrac.timebuckets import BUCKET_WIDTHS, DAY_ZONE, ROLLUPS, bucket_end, bucket_start

log = structlog.get_logger(__name__)
_log = RateLimitedLog(log)


VALID_SQL = "status = '00' AND value IS NOT NULL AND value NOT IN ('NaN', 'Infinity', '-Infinity')"
"""A reading that counts towards means and limits (`Reading.is_valid_measurement` in SQL)."""

_AGGREGATES = (f"avg(r.value) FILTER (WHERE {VALID_SQL}), min(r.value) FILTER (WHERE {VALID_SQL}), "
               f"max(r.value) FILTER (WHERE {VALID_SQL}), count(*), count(*) FILTER (WHERE {VALID_SQL})")
_UPSERT = ("ON CONFLICT (station_id, parameter, bucket) DO UPDATE SET avg = EXCLUDED.avg, min = EXCLUDED.min, "
           "max = EXCLUDED.max, count = EXCLUDED.count, count_valid = EXCLUDED.count_valid")

# Per (host, port, database): the store kind recorded by the migrations, read once.
_store_kinds: dict[tuple[str, int, str], str] = {}


def bucket_sql(bucket: str, column: str = "ts") -> str:
    """SQL expression for the start of the `bucket` ("5m", "1h", "1d") holding `column`."""
    if bucket == "1d":
        zone = DAY_ZONE.key
        return f"(date_trunc('day', {column} AT TIME ZONE '{zone}') AT TIME ZONE '{zone}')"
    seconds = int(BUCKET_WIDTHS[bucket].total_seconds())
    return f"date_bin(INTERVAL '{seconds} seconds', {column}, TIMESTAMPTZ '1970-01-01 00:00:00+00')"


def touched_buckets(readings: BatchColumns | Sequence[Reading], bucket: str) -> list[tuple[str, str, datetime, datetime]]:
    """The distinct (station, parameter, bucket start, bucket end) the readings fall in, sorted."""
    batch = as_columns(readings)
    groups = group(batch.series, bucket_starts_us(batch.ts_us, bucket))
    keys = sorted((*batch.series_keys[k], as_datetime(start))
                  for k, start in zip(groups.keys.tolist(), groups.starts_us.tolist(), strict=True))
    return [(s, p, start, bucket_end(start, bucket)) for s, p, start in keys]


def _recompute_sql(bucket: str) -> str:
    """Recompute the given buckets: 5m from the raw readings, 1h from the 5m rows, 1d from the 1h rows.

    Each wider bucket is a union of whole narrower ones (the day zone's offset is whole hours), so
    the result is exact and a day costs 24 rows instead of every reading of the day. The outer
    time bounds let the planner prune the readings partitions.
    """
    table = ROLLUPS[bucket]
    keys = ("unnest(%(stations)s::text[], %(parameters)s::text[], %(starts)s::timestamptz[], %(ends)s::timestamptz[]) "
            "AS k(station_id, parameter, bucket, bucket_end)")
    if bucket == "5m":
        source, time_column, aggregates = "readings", "ts", _AGGREGATES
    else:
        source = ROLLUPS["5m" if bucket == "1h" else "1h"]
        time_column = "bucket"
        aggregates = ("sum(r.avg * r.count_valid) / nullif(sum(r.count_valid), 0), min(r.min), max(r.max), "
                      "sum(r.count), sum(r.count_valid)")
    return (f"INSERT INTO {table} (station_id, parameter, bucket, avg, min, max, count, count_valid) "
            f"SELECT k.station_id, k.parameter, k.bucket, {aggregates} FROM {keys} "
            f"JOIN {source} r ON r.station_id = k.station_id AND r.parameter = k.parameter "
            f"AND r.{time_column} >= k.bucket AND r.{time_column} < k.bucket_end "
            f"AND r.{time_column} >= %(first)s AND r.{time_column} < %(last)s "
            f"GROUP BY k.station_id, k.parameter, k.bucket {_UPSERT}")


async def _store_kind(conn: psycopg.AsyncConnection[Any]) -> str:
    info = conn.info
    key = (info.host, info.port, info.dbname)
    if key not in _store_kinds:
        cur = await conn.execute("SELECT store FROM schema_version ORDER BY version LIMIT 1")
        row = await cur.fetchone()
        _store_kinds[key] = str(row[0]) if row else "postgresql"
    return _store_kinds[key]


HUGE_VALUE = 1e150
"""No measurement comes near this; below it, sums of any real number of values cannot overflow float8."""


async def _check_aggregates_hold(conn: psycopg.AsyncConnection[Any], new: BatchColumns) -> None:
    """TimescaleDB: fail the batch, in its transaction, when a new value is so large that its buckets'
    sums overflow float8 (`NumericValueOutOfRange`), as the native rollups do.

    Stored anyway, such a reading would make every refresh of a window holding it fail (the policies
    and the late refresh, for every station) and the history queries of its buckets too. Failing
    here lets the worker store the batch record by record and quarantine that record, as on native
    PostgreSQL. Only values of magnitude `HUGE_VALUE` or more are checked, so a normal batch costs nothing.
    """
    huge_rows = np.flatnonzero(_huge(new))
    if not len(huge_rows):
        return
    huge = new.take(huge_rows)
    async with conn.cursor() as cur:
        for bucket in ROLLUPS:
            for station_id, parameter, start, end in touched_buckets(huge, bucket):
                await cur.execute(f"SELECT {_AGGREGATES} FROM readings r WHERE series_id IN ({SERIES_OF}) "
                                  "AND ts >= %s AND ts < %s", (station_id, [parameter], start, end))


_MERGE_KEYS = ("SELECT k.station_id, k.parameter, to_timestamp(k.start_s) AS bucket, k.total, k.min, k.max, k.count, "
               "k.count_valid FROM unnest(%(stations)b::text[], %(parameters)b::text[], %(starts)b::bigint[], "
               "%(totals)b::float8[], %(mins)b::float8[], %(maxs)b::float8[], %(counts)b::integer[], %(valids)b::integer[]) "
               "AS k(station_id, parameter, start_s, total, min, max, count, count_valid)")
_MERGE = ("ON CONFLICT (station_id, parameter, bucket) DO UPDATE SET "
          "avg = (coalesce(t.avg * t.count_valid, 0) + coalesce(EXCLUDED.avg * EXCLUDED.count_valid, 0)) "
          "/ nullif(t.count_valid + EXCLUDED.count_valid, 0), "
          "min = least(t.min, EXCLUDED.min), max = greatest(t.max, EXCLUDED.max), "
          "count = t.count + EXCLUDED.count, count_valid = t.count_valid + EXCLUDED.count_valid")


def _merge_into(bucket: str, source: str) -> str:
    """Add the sums of `source` (a CTE of per-bucket sums) to the rollup rows of `bucket`: the mean weighted
    by the valid counts, min and max over valid values only (NULL where a bucket has none)."""
    return (f"INSERT INTO {ROLLUPS[bucket]} AS t (station_id, parameter, bucket, avg, min, max, count, count_valid) "
            "SELECT station_id, parameter, bucket, total / nullif(count_valid, 0), CASE WHEN count_valid > 0 THEN min END, "
            f"CASE WHEN count_valid > 0 THEN max END, count, count_valid FROM {source} {_MERGE} RETURNING 1")


def _wider(bucket: str) -> str:
    """Sums per `bucket` from the 5-minute sums (each hour and local day is a union of whole 5-minute buckets)."""
    return (f"SELECT station_id, parameter, {bucket_sql(bucket, 'bucket')} AS bucket, sum(total) AS total, min(min) AS min, "
            "max(max) AS max, sum(count)::integer AS count, sum(count_valid)::integer AS count_valid FROM s5 GROUP BY 1, 2, 3")


@functools.cache
def merge_sql() -> str:
    """One statement: add the batch's 5-minute sums (`bucket_sums`) to the 5-minute rows, and their sums per
    hour and per local day to the hour and day rows; returns the rows written.

    Arrays go in binary (`%(name)b`): psycopg's text arrays cost about five times more to build.
    """
    return (f"WITH s5 AS ({_MERGE_KEYS}), s1h AS ({_wider('1h')}), s1d AS ({_wider('1d')}), "
            f"m5 AS ({_merge_into('5m', 's5')}), m1h AS ({_merge_into('1h', 's1h')}), m1d AS ({_merge_into('1d', 's1d')}) "
            "SELECT (SELECT count(*) FROM m5) + (SELECT count(*) FROM m1h) + (SELECT count(*) FROM m1d)")


def bucket_sums(columns: BatchColumns, bucket: str = "5m") -> dict[str, list[Any]]:
    """The readings' count, valid count, and sum, min and max of valid values per (series, bucket); of 5-minute
    buckets, the parameters of `merge_sql` (min and max are infinite where a bucket has no valid value)."""
    groups = group(columns.series, bucket_starts_us(columns.ts_us, bucket))
    valid_values = columns.values[columns.valid]
    values = np.zeros(len(columns.values))
    values[columns.valid] = valid_values
    lows, highs = np.full(len(values), np.inf), np.full(len(values), -np.inf)
    lows[columns.valid] = highs[columns.valid] = valid_values
    keys = [columns.series_keys[k] for k in groups.keys.tolist()]
    return {"stations": [k[0] for k in keys], "parameters": [k[1] for k in keys],
            "starts": (groups.starts_us // 1_000_000).tolist(), "totals": groups.sum(values).tolist(),
            "mins": groups.min(lows).tolist(), "maxs": groups.max(highs).tolist(),
            "counts": np.diff(np.append(groups.firsts, len(values))).tolist(),
            "valids": groups.sum(columns.valid.astype(np.int64)).tolist()}


async def _recompute(cur: psycopg.AsyncCursor[Any], new: BatchColumns) -> int:
    """Recompute the buckets of `new` from the raw readings (5m), then hours and days from those."""
    written = 0
    for bucket in ROLLUPS:  # narrowest first: each width is computed from the one before
        keys = touched_buckets(new, bucket)
        stations, parameters, starts, ends = (list(column) for column in zip(*keys, strict=True))
        await cur.execute(_recompute_sql(bucket), {"stations": stations, "parameters": parameters, "starts": starts,
                                                   "ends": ends, "first": min(starts), "last": max(ends)})
        written += cur.rowcount
    return written


def _huge(new: BatchColumns) -> Bools:
    """Rows whose value is finite and of magnitude `HUGE_VALUE` or more."""
    return np.isfinite(new.values) & (np.abs(new.values) >= HUGE_VALUE)


async def update_rollups(conn: psycopg.AsyncConnection[Any], readings: BatchColumns | Sequence[Reading]) -> int:
    """Add `new` (readings just stored) to their rollup buckets in the caller's transaction.

    Returns how many bucket rows were written; 0 on TimescaleDB, where continuous aggregates do it
    (there it only checks that the aggregates can still be computed, see `_check_aggregates_hold`).
    """
    new = as_columns(readings)
    if not len(new):
        return 0
    if await _store_kind(conn) == "timescaledb":
        await _check_aggregates_hold(conn, new)
        return 0
    async with conn.cursor() as cur:
        if _huge(new).any():
            return await _recompute(cur, new)
        await cur.execute(merge_sql(), bucket_sums(new))
        row = await cur.fetchone()
    return int(row[0]) if row else 0


def rebuild_rollups(conn: psycopg.Connection, start: datetime, end: datetime, station_id: str | None = None) -> int:
    """Recompute every rollup bucket of readings in [start, end) from the raw readings (sync).

    For repairs and backfills; buckets are computed in SQL with `bucket_sql`. Buckets that
    straddle `start` or `end` are recomputed from the readings inside the range only, so pass
    bucket-aligned (day-aligned for 1d) bounds.
    """
    written = 0
    station_filter = f" AND r.series_id IN ({STATION_SERIES})" if station_id else ""
    params: list[object] = [start, end] + ([station_id] if station_id else [])
    with conn.transaction():
        for bucket, table in ROLLUPS.items():
            expr = bucket_sql(bucket, "r.ts")
            cur = conn.execute(
                f"INSERT INTO {table} (station_id, parameter, bucket, avg, min, max, count, count_valid) "
                f"SELECT r.station_id, r.parameter, {expr}, {_AGGREGATES} FROM readings r "
                f"WHERE r.ts >= %s AND r.ts < %s{station_filter} GROUP BY 1, 2, 3 {_UPSERT}", params)
            written += cur.rowcount
    return written


# An aggregate never refreshed has the lowest timestamp as its watermark (4714 BC, which Python cannot
# hold): NULL then, as real-time aggregation covers all its buckets.
_WATERMARKS = ("SELECT view, CASE WHEN mark > TIMESTAMPTZ '0001-01-02 00:00+00' THEN mark END FROM ("
               "SELECT user_view_name AS view, _timescaledb_functions.to_timestamp(_timescaledb_functions.cagg_watermark(mat_hypertable_id)) AS mark "
               "FROM _timescaledb_catalog.continuous_agg WHERE user_view_schema = current_schema()) AS w")


class RefreshBusy(Exception):
    """Another quantrac process holds this aggregate's refresh lock (`REFRESH_LOCK`)."""


REFUSED_AS_BUSY = retry_if_exception_type((psycopg.errors.LockNotAvailable, RefreshBusy))
"""TimescaleDB refuses a refresh whose window overlaps one in progress on the same aggregate (a policy
job) with `LockNotAvailable` ("due to a concurrent refresh"); another quantrac process may hold the
aggregate's refresh lock: both are worth trying again once the other refresh is done."""

REFRESH_LOCK = "SELECT pg_try_advisory_lock(hashtext('quantrac.refresh'), hashtext(%s))"
"""quantrac's refreshes of one aggregate never run at once (the workers' late refreshes, the maintenance pass): in
TimescaleDB 2.28, two concurrent refreshes of an aggregate can both succeed and leave a change unmaterialised until
a later refresh (timescaledb#10219; a test here once lost a day's bucket that way). Session-level, so it holds
across the refresh's own transactions; `REFRESH_UNLOCK` releases it."""
REFRESH_UNLOCK = "SELECT pg_advisory_unlock(hashtext('quantrac.refresh'), hashtext(%s))"


def _late_refresh_attempts() -> AsyncRetrying:
    """Four tries within about a third of a second: short enough for the worker's batch loop."""
    return AsyncRetrying(stop=stop_after_attempt(4), wait=wait_exponential(multiplier=0.05, max=0.4),
                         retry=REFUSED_AS_BUSY, reraise=True)


class LateRefresh:
    """TimescaleDB: after each batch commits, refresh in each continuous aggregate the buckets of the new
    readings older than its watermark (the end of its last refresh).

    Readings newer than the watermark need nothing (real-time aggregation computes them at query
    time), so a live stream costs one catalog query per batch. Each refresh holds its aggregate's
    `REFRESH_LOCK`. A refresh that fails (the lock held by another quantrac process, or TimescaleDB refusing it
    for a concurrent refresh, after `_late_refresh_attempts`; or any other database error) is logged, and its
    window is kept and refreshed with the next batch, so a late reading reaches its buckets a batch or
    two later rather than at the next maintenance pass. The worker owns one; windows pending when it
    stops are covered by the maintenance pass at its next start. No-op on native PostgreSQL, whose
    rollups `update_rollups` kept in the batch's transaction.
    """

    def __init__(self) -> None:
        self.pending: dict[str, tuple[datetime, datetime]] = {}
        self.failures: dict[str, int] = {}
        """Per aggregate, the batches in a row whose refresh of its pending window failed other than for a concurrent
        refresh: after `RECORD_ATTEMPTS` the window is dropped (the maintenance pass refreshes the whole range)."""

    async def run(self, conn: psycopg.AsyncConnection[Any], new: BatchColumns | Sequence[Reading]) -> list[str]:
        """Refresh the late windows of `new` and any left by an earlier failure; returns the aggregates refreshed.

        Runs outside a transaction (the connection is switched to autocommit for it)."""
        if not len(new) and not self.pending:
            return []
        refreshed: list[str] = []
        autocommit = conn.autocommit
        try:
            await conn.set_autocommit(True)  # before any query: a first query would open a transaction
            if await _store_kind(conn) != "timescaledb":
                return []
            windows = self._windows(await _watermarks(conn), as_columns(new).ts_us)
            for view, (start, end) in windows.items():
                try:
                    async for attempt in _late_refresh_attempts():
                        with attempt:
                            await _refresh_locked(conn, view, start, end)
                except RefreshBusy:
                    self.pending[view] = (start, end)
                    _log("info", "rollups.late_refresh_deferred", key=view, aggregate=view,
                         reason="another quantrac process is refreshing it (a worker, the maintenance pass)",
                         action="refreshed with a later batch")
                except psycopg.Error as exc:
                    _log_failure(exc, view)
                    if conn.closed or conn.broken:
                        self.pending[view] = (start, end)
                        break
                    self._failed(view, (start, end), contention=isinstance(exc, psycopg.errors.LockNotAvailable))
                else:
                    self.pending.pop(view, None)
                    self.failures.pop(view, None)
                    refreshed.append(view)
        except psycopg.Error as exc:
            _log_failure(exc, "watermarks")
        finally:
            if not conn.closed and not conn.broken:
                await conn.set_autocommit(autocommit)
        if refreshed:
            log.debug("rollups.late_refreshed", aggregates=refreshed, readings=len(new))
        return refreshed

    def _failed(self, view: str, window: tuple[datetime, datetime], contention: bool) -> None:
        """Keep a failed window for the next batch, unless it failed for itself `RECORD_ATTEMPTS` batches in a row."""
        failures = 0 if contention else self.failures.get(view, 0) + 1
        if failures < RECORD_ATTEMPTS:
            self.pending[view], self.failures[view] = window, failures
            return
        self.pending.pop(view, None)
        self.failures.pop(view, None)
        log.error("rollups.late_refresh_dropped", aggregate=view, start=window[0].isoformat(), end=window[1].isoformat(),
                  attempts=failures, fix="the maintenance pass refreshes the whole range (QUANTRAC_MAINTENANCE_INTERVAL_S); "
                                         "if it fails too, see its error")

    def _windows(self, watermarks: dict[str, datetime | None], ts_us: Ints) -> dict[str, tuple[datetime, datetime]]:
        """Per aggregate: the whole buckets of the readings older than its watermark, widened to cover
        any window still pending."""
        windows = dict(self.pending)
        for bucket, view in ROLLUPS.items():
            mark = watermarks.get(view)
            late = ts_us[ts_us < epoch_us(mark)] if mark is not None else ts_us[:0]
            if len(late):
                start = bucket_start(as_datetime(late.min()), bucket)
                end = bucket_end(bucket_start(as_datetime(late.max()), bucket), bucket)
                if view in windows:
                    start, end = min(start, windows[view][0]), max(end, windows[view][1])
                windows[view] = (start, end)
        return windows


_REFRESH = "CALL refresh_continuous_aggregate(%s, %s::timestamptz, %s::timestamptz)"


def _claim(row: tuple[Any, ...] | None, view: str) -> None:
    """Raise `RefreshBusy` unless `REFRESH_LOCK` answered that the lock is ours."""
    if not (row and row[0]):
        raise RefreshBusy(f"another quantrac process is refreshing {view}")


async def _refresh_locked(conn: psycopg.AsyncConnection[Any], view: str, start: datetime, end: datetime) -> None:
    """Refresh `view` over [start, end) under its refresh lock; `RefreshBusy` when another process holds it."""
    cur = await conn.execute(REFRESH_LOCK, (view,))
    _claim(await cur.fetchone(), view)
    try:
        await conn.execute(_REFRESH, (view, start, end))
    finally:
        if not conn.closed and not conn.broken:
            await conn.execute(REFRESH_UNLOCK, (view,))


def refresh_locked(conn: psycopg.Connection, view: str, start: datetime | None, end: datetime) -> None:
    """`_refresh_locked` on a synchronous connection (the maintenance pass); `start` None: from the beginning."""
    _claim(conn.execute(REFRESH_LOCK, (view,)).fetchone(), view)
    try:
        conn.execute(_REFRESH, (view, start, end))
    finally:
        if not conn.closed and not conn.broken:
            conn.execute(REFRESH_UNLOCK, (view,))


async def _watermarks(conn: psycopg.AsyncConnection[Any]) -> dict[str, datetime | None]:
    cur = await conn.execute(_WATERMARKS)
    return {str(view): mark for view, mark in await cur.fetchall()}


def _log_failure(exc: psycopg.Error, view: str) -> None:
    _log("warning", "rollups.late_refresh_failed", key=(type(exc).__name__, view), aggregate=view,
         error=str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
         fix="none needed: retried with the next batch, and the maintenance pass refreshes the whole range")

