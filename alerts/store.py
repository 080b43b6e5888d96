"""Alert persistence: a condition opens an alert or updates the one already active.

The partial unique index `alerts_one_active` guarantees one active alert per station +
parameter + rule, so a repeat (or a redelivered batch) updates count, last and peak value
instead of opening another.
"""

from __future__ import annotations

from typing import Any, Iterable

import psycopg
from psycopg.rows import dict_row

from alerts.rules import Condition

_UPSERT = """
INSERT INTO alerts AS a (station_id, parameter, rule, basis, severity, status, opened_at, updated_at, first_ts, last_ts,
                         last_value, peak_value, limit_value, limit_source, count, message)
VALUES (%(station_id)s, %(parameter)s, %(rule)s, %(basis)s, %(severity)s, 'open', now(), now(), %(ts)s, %(ts)s,
        %(value)s, %(value)s, %(limit)s, %(limit_source)s, 1, %(message)s)
ON CONFLICT (station_id, parameter, rule) WHERE status <> 'resolved' DO UPDATE SET
    count = a.count + 1,
    updated_at = now(),
    last_ts = greatest(a.last_ts, EXCLUDED.last_ts),
    last_value = CASE WHEN EXCLUDED.last_ts >= a.last_ts THEN EXCLUDED.last_value ELSE a.last_value END,
    peak_value = CASE WHEN a.rule = 'below_minimum' THEN least(a.peak_value, EXCLUDED.peak_value)
                      ELSE greatest(a.peak_value, EXCLUDED.peak_value) END,
    limit_value = EXCLUDED.limit_value,
    limit_source = EXCLUDED.limit_source,
    message = EXCLUDED.message
RETURNING a.*, (xmax = 0) AS opened
"""


async def apply_conditions(conn: psycopg.AsyncConnection[Any], conditions: Iterable[Condition]) -> list[dict[str, Any]]:
    """Open or update one alert per condition, in the caller's transaction; returns the alert rows."""
    rows: list[dict[str, Any]] = []
    async with conn.cursor(row_factory=dict_row) as cur:
        for c in conditions:
            if not c.active:
                continue
            await cur.execute(_UPSERT, {
                "station_id": c.station_id, "parameter": c.parameter, "rule": c.rule, "basis": c.basis,
                "severity": c.severity.value, "ts": c.ts, "value": c.value, "limit": c.limit,
                "limit_source": c.limit_source, "message": c.message,
            })
            row = await cur.fetchone()
            if row is not None:
                rows.append(row)
    return rows
