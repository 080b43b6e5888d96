"""Completeness per station per hour and per local day: expected vs received and valid readings.

Counted from the batch's NEW readings only, in the batch's transaction, so redelivery never
counts a reading twice. Status 01/02 readings count as received but not as valid. The batch's
counts per bucket are summed in numpy (`quantrac.batch_columns`) and added to the table in one
statement (`INSERT ... SELECT FROM unnest(...) ON CONFLICT DO UPDATE SET received = received + ...`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import psycopg

from quantrac.batch_columns import BatchColumns, as_columns, as_datetime, bucket_starts_us, group
from quantrac.domain import Reading, Station
from quantrac.timebuckets import bucket_end, expected_count

PERIODS: dict[str, str] = {"hour": "1h", "day": "1d"}
"""Completeness period → `quantrac.timebuckets` bucket."""

_UPSERT = """
INSERT INTO completeness AS c (station_id, period, bucket, expected, received, valid, late)
SELECT * FROM unnest(%b::text[], %b::text[], %b::timestamptz[], %b::integer[], %b::integer[], %b::integer[], %b::integer[])
ON CONFLICT (station_id, period, bucket) DO UPDATE SET
    expected = EXCLUDED.expected, received = c.received + EXCLUDED.received, valid = c.valid + EXCLUDED.valid,
    late = c.late + EXCLUDED.late, updated_at = now()
"""


def expected_readings(station: Station, start: datetime, period: str) -> int:
    """Readings the station should send in the period starting at `start`: parameters x reporting slots."""
    bucket = PERIODS[period]
    return len(station.parameters) * expected_count(start, bucket_end(start, bucket), station.expected_interval_s)


def tally(readings: BatchColumns | Sequence[Reading], late: Iterable[Reading] = ()
          ) -> dict[tuple[str, str, datetime], list[int]]:
    """[received, valid, late] per (station, period, bucket start)."""
    columns = as_columns(readings)
    if not len(columns):
        return {}
    names, station_of = columns.stations()
    is_late = columns.rows_of(late)
    counts: dict[tuple[str, str, datetime], list[int]] = {}
    for period, bucket in PERIODS.items():
        groups = group(station_of, bucket_starts_us(columns.ts_us, bucket))
        received = np.diff(np.append(groups.firsts, len(columns)))
        for station, start, n, valid, n_late in zip(groups.keys.tolist(), groups.starts_us.tolist(), received.tolist(),
                                                     groups.sum(columns.valid.astype(np.int64)).tolist(),
                                                     groups.sum(is_late.astype(np.int64)).tolist(), strict=True):
            counts[(names[station], period, as_datetime(start))] = [n, valid, n_late]
    return counts


async def record(conn: psycopg.AsyncConnection[Any], counts: Mapping[tuple[str, str, datetime], list[int]],
                 stations: Mapping[str, Station]) -> None:
    """Add the counts to the completeness table in the caller's transaction (one statement)."""
    rows = []
    for (station_id, period, start), (received, valid, late) in sorted(counts.items()):
        station = stations.get(station_id)
        if station is not None:
            rows.append((station_id, period, start, expected_readings(station, start, period), received, valid, late))
    if rows:
        await conn.execute(_UPSERT, [list(column) for column in zip(*rows, strict=True)])
