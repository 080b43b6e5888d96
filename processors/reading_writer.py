"""The readings writer: one batch, one transaction, one binary COPY of the batch's columns; idempotent.

A live batch is new readings only, so the writer first COPYs it straight into `readings` (in a
savepoint): COPY inserts rows in bulk, where `INSERT ... SELECT ... ON CONFLICT` inserts them one by
one at about twice the cost (bench/store_writes.py times both). When a key is already stored (a
redelivered batch, a replay) the COPY fails on the primary key, the savepoint is rolled back and the
batch goes the idempotent way: COPY into a staging table, then `INSERT ... ON CONFLICT DO NOTHING
RETURNING`, which hands back only the readings that were new, so rules never count a redelivered
reading twice. After such a batch the next one starts on the idempotent way too, until a batch
turns out all new again.
"""

from __future__ import annotations

import asyncio
from datetime import date
from typing import Any, Sequence, overload

import numpy as np
import psycopg

from processors.copy_binary import copy_buffer
from quantrac.batch_columns import BatchColumns, Ints, as_datetime, batch_columns, epoch_us, group
from quantrac.db import KNOWN_SERIES, NEW_SERIES, SeriesKey, series_columns
from quantrac.domain import Reading
from quantrac.wire_columns import STATUSES

_DAY_US = 86_400_000_000

_COLUMNS = "series_id, station_id, parameter, ts, value, unit, status"
DIRECT_COPY = f"COPY readings ({_COLUMNS}) FROM STDIN (FORMAT BINARY)"
"""The binary COPY straight into `readings` (the benches' raw COPY baselines use it too)."""
STAGE = ("CREATE TEMP TABLE IF NOT EXISTS readings_stage "
         "(series_id integer, station_id text, parameter text, ts timestamptz, value double precision, unit text, "
         "status text) ON COMMIT DELETE ROWS")
"""The session's staging table of the idempotent way (public for bench/store_writes.py, which EXPLAINs it)."""
STAGE_COPY = f"COPY readings_stage ({_COLUMNS}) FROM STDIN (FORMAT BINARY)"
"""Binary COPY of a batch into the staging table."""
STAGED_INSERT = (f"INSERT INTO readings ({_COLUMNS}) SELECT {_COLUMNS} FROM readings_stage "
                 "ON CONFLICT (series_id, ts) DO NOTHING RETURNING station_id, parameter, ts")
"""The staged readings whose key is not stored yet, inserted; returns their keys."""


_CONFLICTS = ("SELECT s.station_id, s.parameter, s.ts, r.value, r.status FROM readings_stage s "
              "JOIN readings r ON r.series_id = s.series_id AND r.ts = s.ts "
              "WHERE r.value IS DISTINCT FROM s.value OR r.status IS DISTINCT FROM s.status")

Conflict = tuple[Reading, float | None, str]
"""A reading that contradicts a stored one: (reading, stored value, stored status)."""


def first_of_each_key(batch: BatchColumns) -> Ints:
    """The rows of the first reading of each (series, time), in batch order."""
    keys = group(batch.series, batch.ts_us)  # a stable sort: of equal keys, batch order
    return np.sort(keys.order[keys.firsts])


def _firsts(batch: BatchColumns) -> tuple[Ints, BatchColumns]:
    """`first_of_each_key`'s rows and the batch of those rows (the batch itself when every key is there once)."""
    firsts = first_of_each_key(batch)
    return firsts, batch if len(firsts) == len(batch) else batch.take(firsts)


async def copy_rows(cur: psycopg.AsyncCursor[Any], statement: str, batch: BatchColumns, series_ids: Sequence[int]) -> None:
    """One binary COPY of the batch's rows, written as one buffer (`statement` names the table; `series_ids`: the id of
    each of the batch's `series_keys`)."""
    async with cur.copy(statement) as copy:
        await copy.write(copy_buffer(batch, series_ids))


def _keys(batch: BatchColumns, rows: Ints) -> dict[tuple[str, str, int], int]:
    """(station, parameter, epoch µs) → row, for the given rows."""
    return {(*batch.series_keys[k], t): row for row, k, t in zip(
        rows.tolist(), batch.series[rows].tolist(), batch.ts_us[rows].tolist(), strict=True)}


class ReadingWriter:
    """Writes batches of readings on one connection; remembers which day partitions exist.

    `write` and `conflicts` take a batch as columns (what the worker has) or as `Reading`s, and
    give back the same kind."""

    def __init__(self) -> None:
        self._days_ready: set[date] = set()
        self._direct = True
        """Try the direct COPY first: the last batch had no stored key."""
        self._staged = False
        """The last batch went through the staging table (so `conflicts` must look there)."""
        self._ensuring: psycopg.AsyncConnection[Any] | None = None
        """The connection whose open transaction last created day partitions or series: other connections see them once
        it commits (`committed`)."""
        self._series: dict[SeriesKey, int] = {}
        """The id of every series met so far that is committed (a series row is never deleted)."""
        self._series_pending: dict[SeriesKey, int] = {}
        """Series created by `_ensuring`'s open transaction: known once it commits, forgotten if it does not."""

    async def _ensure_partitions(self, conn: psycopg.AsyncConnection[Any], ts_us: Ints) -> None:
        """Create the partitions of exactly the days present (a late reading must not create every day since)."""
        days = sorted({as_datetime(d).date() for d in np.unique(ts_us // _DAY_US * _DAY_US).tolist()} - self._days_ready)
        if days:
            await conn.execute("SELECT quantrac_ensure_partitions(d, d) FROM unnest(%s::date[]) AS d", (days,))
            self._days_ready |= set(days)
            self._ensuring = conn

    async def series_ids(self, conn: psycopg.AsyncConnection[Any], batch: BatchColumns) -> list[int]:
        """The id of each of the batch's `series_keys` that a row uses (0 for the others: a record taken from a batch
        keeps the batch's keys); series not met before are looked up, and created where missing, in the caller's
        transaction, as `quantrac.db.series_ids` does: readings are keyed by series id and time."""
        known, pending = self._series, self._series_pending
        used = np.flatnonzero(np.bincount(batch.series, minlength=len(batch.series_keys))).tolist()
        missing = [key for key in (batch.series_keys[k] for k in used) if key not in known and key not in pending]
        if missing:
            columns = series_columns(missing)
            async with conn.cursor() as cur:
                await cur.execute(NEW_SERIES, columns)
                created = cur.rowcount > 0
                await cur.execute(KNOWN_SERIES, columns)
                found = {(station, parameter): id_ for id_, station, parameter in await cur.fetchall()}
            if created:  # known once this transaction commits (`committed`); a rollback takes the rows back
                pending.update(found)
                self._ensuring = conn
            else:
                known.update(found)
        ids = [0] * len(batch.series_keys)
        for k in used:
            key = batch.series_keys[k]
            ids[k] = known[key] if key in known else pending[key]
        return ids

    @property
    def created_pending(self) -> bool:
        """Whether a transaction that created day partitions or series is still open: a COPY on another connection
        would not find the partitions, and would store ids of series that a rollback takes back."""
        return self._ensuring is not None

    def committed(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """`conn`'s transaction committed: the partitions and series it created are every connection's."""
        if self._ensuring is conn:
            self._ensuring = None
            self._series.update(self._series_pending)
            self._series_pending.clear()

    @overload
    async def write(self, conn: psycopg.AsyncConnection[Any], readings: BatchColumns) -> BatchColumns: ...

    @overload
    async def write(self, conn: psycopg.AsyncConnection[Any], readings: Sequence[Reading]) -> list[Reading]: ...

    async def write(self, conn: psycopg.AsyncConnection[Any], readings: BatchColumns | Sequence[Reading]
                    ) -> BatchColumns | list[Reading]:
        """Store the readings in the caller's transaction; returns those not stored before.

        Of several readings with one key in the batch, the first is written (as the store keeps
        the first of a key across batches); `conflicts` tells which of the others differ.
        """
        if isinstance(readings, BatchColumns):
            return readings.take(await self.write_rows(conn, readings))
        return [readings[i] for i in (await self.write_rows(conn, batch_columns(readings))).tolist()]

    async def write_rows(self, conn: psycopg.AsyncConnection[Any], batch: BatchColumns) -> Ints:
        """`write` on columns: the rows of `batch` that were new, in batch order."""
        firsts, kept = _firsts(batch)
        self._staged = False
        if not len(firsts):
            return firsts
        await self._ensure_partitions(conn, kept.ts_us)
        if self._direct and await self._copy_direct(conn, kept):
            return firsts
        self._staged = True
        await conn.execute(STAGE)
        async with conn.cursor() as cur:
            await copy_rows(cur, STAGE_COPY, kept, await self.series_ids(conn, kept))
            await cur.execute(STAGED_INSERT)
            inserted = {(row[0], row[1], epoch_us(row[2])) for row in await cur.fetchall()}
        self._direct = len(inserted) == len(firsts)
        rows = _keys(batch, firsts)
        return np.array(sorted(rows[key] for key in inserted), np.int64)

    async def conflicts(self, conn: psycopg.AsyncConnection[Any], readings: BatchColumns | Sequence[Reading],
                        new: BatchColumns | Sequence[Reading]) -> list[Conflict]:
        """The readings of the batch that contradict what is stored: (reading, stored value, stored status).

        Called after `write` in the same transaction. A reading that repeats a stored key with the
        same value and status is a harmless duplicate (a redelivery); with another value or status
        it is a conflict: the store keeps the first, the caller dead-letters the other.
        """
        if len(new) == len(readings):
            return []
        if isinstance(readings, BatchColumns):
            return [(readings.reading(row), value, status) for row, value, status in await self._conflict_rows(conn, readings)]
        return [(readings[row], value, status)
                for row, value, status in await self._conflict_rows(conn, batch_columns(readings))]

    async def _conflict_rows(self, conn: psycopg.AsyncConnection[Any], batch: BatchColumns
                             ) -> list[tuple[int, float | None, str]]:
        firsts = first_of_each_key(batch)
        found = _repeats_that_differ(batch, firsts)
        if not self._staged:  # written straight: every first reading of a key was new
            return found
        async with conn.cursor() as cur:  # the batch's first readings, against readings stored by earlier batches
            await cur.execute(_CONFLICTS)
            stored = {(row[0], row[1], epoch_us(row[2])): (row[3], row[4]) for row in await cur.fetchall()}
        return found + [(row, *stored[key]) for key, row in _keys(batch, firsts).items() if key in stored]

    def presumed_new(self, batch: BatchColumns) -> BatchColumns | None:
        """While the direct way is on (the last batch had no stored key): the readings `write` would find new if none is
        stored yet (the first of each key), for `start_copy`; else None (`write` finds out which are new)."""
        if not self._direct or not len(batch):
            return None
        return _firsts(batch)[1]

    async def start_copy(self, conn: psycopg.AsyncConnection[Any], presumed: BatchColumns) -> asyncio.Task[bool]:
        """Start the direct COPY of `presumed` (from `presumed_new`), for PostgreSQL to store while the caller judges
        the rows (in a thread, so that the event loop goes on sending them: `processors.pipeline._judged_while`). The
        task gives True once they are stored, False when a key was stored already: then none is (the COPY is rolled
        back to its savepoint) and the next batches go the idempotent way. The connection is the task's until it is
        done.

        The batch may be the next one, begun while the one before it is still open on another connection
        (`BatchProcessor.begin_ahead`): `conflicts` is told which way the batch in hand went by `copied_directly`."""
        await self._ensure_partitions(conn, presumed.ts_us)
        return asyncio.create_task(self._copy_direct(conn, presumed))

    def copied_directly(self) -> None:
        """The batch in hand is stored by the direct COPY (`start_copy`): `conflicts` need not look in the store."""
        self._staged = False

    async def _copy_direct(self, conn: psycopg.AsyncConnection[Any], rows: BatchColumns) -> bool:
        """The direct COPY of rows taken as new, in a savepoint: True once stored; False (rolled back) when a key is
        stored already, and the idempotent way is on from this batch on."""
        series_ids = await self.series_ids(conn, rows)
        try:
            async with conn.transaction(), conn.cursor() as cur:
                await copy_rows(cur, DIRECT_COPY, rows, series_ids)
            return True
        except psycopg.errors.UniqueViolation:
            self._direct = False
            return False

    def forget_created(self) -> None:
        """Forget the partition cache (e.g. after retention dropped some or the connection was replaced), and the series
        created by a transaction that will not commit."""
        self._days_ready.clear()
        self._series_pending.clear()
        self._ensuring = None


def _repeats_that_differ(batch: BatchColumns, firsts: Ints) -> list[tuple[int, float | None, str]]:
    """Repeats of a key within the batch whose value or status differs from the first of their key, with the
    first's value and status (a NaN value differs from every value, as in Python)."""
    if len(firsts) == len(batch):
        return []
    first_of = _keys(batch, firsts)
    rows = np.setdiff1d(np.arange(len(batch)), firsts).tolist()
    kept = [first_of[(*batch.series_keys[int(batch.series[row])], int(batch.ts_us[row]))] for row in rows]
    values, missing, status = batch.values, batch.missing, batch.status
    found = []
    for row, first in zip(rows, kept, strict=True):
        if missing[row] != missing[first] or (not missing[row] and values[row] != values[first]) or status[row] != status[first]:
            found.append((row, None if missing[first] else float(values[first]), STATUSES[int(status[first])].value))
    return found
