"""The readings writer: one batch, one transaction, one binary COPY; idempotent.

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

from datetime import date, timezone
from typing import Any, Sequence

import psycopg

from quantrac.domain import Reading

_COLUMNS = "station_id, parameter, ts, value, unit, status"
_TYPES = ["text", "text", "timestamptz", "float8", "text", "text"]
_DIRECT = f"COPY readings ({_COLUMNS}) FROM STDIN (FORMAT BINARY)"
STAGE = ("CREATE TEMP TABLE IF NOT EXISTS readings_stage "
         "(station_id text, parameter text, ts timestamptz, value double precision, unit text, status text) "
         "ON COMMIT DELETE ROWS")
"""The session's staging table of the idempotent way (public for bench/store_writes.py, which EXPLAINs it)."""
STAGE_COPY = f"COPY readings_stage ({_COLUMNS}) FROM STDIN (FORMAT BINARY)"
"""Binary COPY of a batch into the staging table."""
STAGED_INSERT = (f"INSERT INTO readings ({_COLUMNS}) SELECT {_COLUMNS} FROM readings_stage "
                 "ON CONFLICT (station_id, parameter, ts) DO NOTHING RETURNING station_id, parameter, ts")
"""The staged readings whose key is not stored yet, inserted; returns their keys."""


_CONFLICTS = ("SELECT s.station_id, s.parameter, s.ts, r.value, r.status FROM readings_stage s "
              "JOIN readings r ON r.station_id = s.station_id AND r.parameter = s.parameter AND r.ts = s.ts "
              "WHERE r.value IS DISTINCT FROM s.value OR r.status IS DISTINCT FROM s.status")


def first_of_each_key(readings: Sequence[Reading]) -> dict[tuple[str, str, object], Reading]:
    """The first reading of each (station, parameter, time), in batch order."""
    first: dict[tuple[str, str, object], Reading] = {}
    for r in readings:
        first.setdefault((r.station_id, r.parameter, r.ts), r)
    return first


def _differs(r: Reading, value: float | None, status: str) -> bool:
    return r.value != value or r.status.value != status


async def copy_rows(cur: psycopg.AsyncCursor[Any], statement: str, readings: Sequence[Reading]) -> None:
    """One binary COPY of the readings (`statement` names the table)."""
    async with cur.copy(statement) as copy:
        copy.set_types(_TYPES)
        for r in readings:
            await copy.write_row((r.station_id, r.parameter, r.ts, r.value, r.unit, r.status.value))


class ReadingWriter:
    """Writes batches of readings on one connection; remembers which day partitions exist."""

    def __init__(self) -> None:
        self._days_ready: set[date] = set()
        self._direct = True
        """Try the direct COPY first: the last batch had no stored key."""
        self._staged = False
        """The last batch went through the staging table (so `conflicts` must look there)."""

    async def _ensure_partitions(self, conn: psycopg.AsyncConnection[Any], readings: Sequence[Reading]) -> None:
        """Create the partitions of exactly the days present (a late reading must not create every day since)."""
        days = sorted({r.ts.astimezone(timezone.utc).date() for r in readings} - self._days_ready)
        if days:
            await conn.execute("SELECT quantrac_ensure_partitions(d, d) FROM unnest(%s::date[]) AS d", (days,))
            self._days_ready |= set(days)

    async def write(self, conn: psycopg.AsyncConnection[Any], readings: Sequence[Reading]) -> list[Reading]:
        """Store the readings in the caller's transaction; returns those not stored before.

        Of several readings with one key in the batch, the first is written (as the store keeps
        the first of a key across batches); `conflicts` tells which of the others differ.
        """
        readings = list(first_of_each_key(readings).values())
        self._staged = False
        if not readings:
            return []
        await self._ensure_partitions(conn, readings)
        if self._direct:
            try:
                async with conn.transaction(), conn.cursor() as cur:
                    await copy_rows(cur, _DIRECT, readings)
                return readings
            except psycopg.errors.UniqueViolation:
                self._direct = False  # some are stored already: this batch and the next go the idempotent way
        self._staged = True
        await conn.execute(STAGE)
        async with conn.cursor() as cur:
            await copy_rows(cur, STAGE_COPY, readings)
            await cur.execute(STAGED_INSERT)
            inserted = {(row[0], row[1], row[2]) for row in await cur.fetchall()}
        self._direct = len(inserted) == len(readings)
        return [r for r in readings if (r.station_id, r.parameter, r.ts) in inserted]

    async def conflicts(self, conn: psycopg.AsyncConnection[Any], readings: Sequence[Reading],
                        new: Sequence[Reading]) -> list[tuple[Reading, float | None, str]]:
        """The readings of the batch that contradict what is stored: (reading, stored value, stored status).

        Called after `write` in the same transaction. A reading that repeats a stored key with the
        same value and status is a harmless duplicate (a redelivery); with another value or status
        it is a conflict: the store keeps the first, the caller dead-letters the other.
        """
        if len(new) == len(readings):
            return []
        first = first_of_each_key(readings)
        found: list[tuple[Reading, float | None, str]] = []
        for r in readings:  # repeats within the batch, against the first of their key
            kept = first[(r.station_id, r.parameter, r.ts)]
            if r is not kept and _differs(r, kept.value, kept.status.value):
                found.append((r, kept.value, kept.status.value))
        if not self._staged:  # written straight: every first reading of a key was new
            return found
        async with conn.cursor() as cur:  # the batch's first readings, against readings stored by earlier batches
            await cur.execute(_CONFLICTS)
            stored = {(row[0], row[1], row[2]): (row[3], row[4]) for row in await cur.fetchall()}
        for key, kept in first.items():
            if key in stored:
                found.append((kept, *stored[key]))
        return found

    def forget_partitions(self) -> None:
        """Forget the partition cache, e.g. after retention dropped some or the connection was replaced."""
        self._days_ready.clear()
