"""Completeness per station per hour and per local day: expected vs received and valid readings.

Counted from the batch's NEW readings only, in the batch's transaction, so redelivery never
counts a reading twice. Status 01/02 readings count as received but not as valid.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any, Iterable, Mapping

import psycopg

from quantrac.domain import Reading, Station
from quantrac.timebuckets import bucket_end, bucket_start, expected_count

PERIODS: dict[str, str] = {"hour": "1h", "day": "1d"}
"""Completeness period → `quantrac.timebuckets` bucket."""

_UPSERT = """
INSERT INTO completeness AS c (station_id, period, bucket, expected, received, valid, late)
VALUES (%s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (station_id, period, bucket) DO UPDATE SET
    expected = EXCLUDED.expected, received = c.received + EXCLUDED.received, valid = c.valid + EXCLUDED.valid,
    late = c.late + EXCLUDED.late, updated_at = now()
"""


def expected_readings(station: Station, start: datetime, period: str) -> int:
    """Readings the station should send in the period starting at `start`: parameters x reporting slots."""
    bucket = PERIODS[period]
    return len(station.parameters) * expected_count(start, bucket_end(start, bucket), station.expected_interval_s)


def tally(readings: Iterable[Reading], late: Iterable[Reading] = ()) -> dict[tuple[str, str, datetime], list[int]]:
    """[received, valid, late] per (station, period, bucket start)."""
    late_keys = Counter((r.station_id, r.parameter, r.ts) for r in late)
    counts: dict[tuple[str, str, datetime], list[int]] = {}
    for r in readings:
        is_late = late_keys[(r.station_id, r.parameter, r.ts)] > 0
        for period, bucket in PERIODS.items():
            entry = counts.setdefault((r.station_id, period, bucket_start(r.ts, bucket)), [0, 0, 0])
            entry[0] += 1
            entry[1] += int(r.is_valid_measurement)
            entry[2] += int(is_late)
    return counts


async def record(conn: psycopg.AsyncConnection[Any], counts: Mapping[tuple[str, str, datetime], list[int]],
                 stations: Mapping[str, Station]) -> None:
    """Add the counts to the completeness table in the caller's transaction."""
    rows = []
    for (station_id, period, start), (received, valid, late) in sorted(counts.items()):
        station = stations.get(station_id)
        if station is not None:
            rows.append((station_id, period, start, expected_readings(station, start, period), received, valid, late))
    if rows:
        async with conn.cursor() as cur:
            await cur.executemany(_UPSERT, rows)
