"""The readings writer: one batch, one transaction, COPY into a staging table, idempotent insert.

`INSERT ... ON CONFLICT DO NOTHING RETURNING` hands back only the readings that were new, so
rules never count a redelivered reading twice.
"""

from __future__ import annotations

from datetime import date, timezone
from typing import Any, Sequence

import psycopg

from quantrac.domain import Reading

_STAGE = ("CREATE TEMP TABLE IF NOT EXISTS readings_stage "
          "(station_id text, parameter text, ts timestamptz, value double precision, unit text, status text) "
          "ON COMMIT DELETE ROWS")
_COPY = "COPY readings_stage (station_id, parameter, ts, value, unit, status) FROM STDIN (FORMAT BINARY)"
_INSERT = ("INSERT INTO readings (station_id, parameter, ts, value, unit, status) "
           "SELECT station_id, parameter, ts, value, unit, status FROM readings_stage "
           "ON CONFLICT (station_id, parameter, ts) DO NOTHING RETURNING station_id, parameter, ts")


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


class ReadingWriter:
    """Writes batches of readings on one connection; remembers which day partitions exist."""

    def __init__(self) -> None:
        self._days_ready: set[date] = set()

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
        if not readings:
            return []
        await self._ensure_partitions(conn, readings)
        await conn.execute(_STAGE)
        async with conn.cursor() as cur:
            async with cur.copy(_COPY) as copy:
                copy.set_types(["text", "text", "timestamptz", "float8", "text", "text"])
                for r in readings:
                    await copy.write_row((r.station_id, r.parameter, r.ts, r.value, r.unit, r.status.value))
            await cur.execute(_INSERT)
            inserted = {(row[0], row[1], row[2]) for row in await cur.fetchall()}
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
