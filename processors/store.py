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
        """Store the readings in the caller's transaction; returns those not stored before."""
        readings = list({(r.station_id, r.parameter, r.ts): r for r in readings}.values())
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

    def forget_partitions(self) -> None:
        """Forget the partition cache, e.g. after retention dropped some or the connection was replaced."""
        self._days_ready.clear()
