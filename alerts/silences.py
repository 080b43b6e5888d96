"""Silences: a station (optionally one parameter) is quiet for a time window, with a reason.

A silenced alert is still recorded and shown; only its notifications are suppressed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable

import psycopg
from psycopg.rows import dict_row

REASONS = ("calibration", "maintenance", "device_fault", "other")


@dataclass(frozen=True)
class Silence:
    """A maintenance window during which a station's (or one parameter's) alerts are not notified."""
    id: int
    station_id: str
    parameter: str | None
    starts_at: datetime
    ends_at: datetime
    reason: str


def matches(silence: Silence, station_id: str, parameter: str, at: datetime) -> bool:
    """True when the silence covers this station and parameter at this instant (window is [starts, ends))."""
    return (silence.station_id == station_id and silence.parameter in (None, parameter)
            and silence.starts_at <= at < silence.ends_at)


def first_match(silences: Iterable[Silence], station_id: str, parameter: str, at: datetime) -> Silence | None:
    """The first silence covering this station and parameter at `at`, if any."""
    return next((s for s in silences if matches(s, station_id, parameter, at)), None)


def for_station(conn: psycopg.Connection[Any], station_id: str) -> list[Silence]:
    """The station's silences that are not deleted (expired ones included: `matches` checks the window)."""
    rows = conn.execute("SELECT id, station_id, parameter, starts_at, ends_at, reason FROM silences "
                        "WHERE station_id = %s AND deleted_at IS NULL ORDER BY id", (station_id,)).fetchall()
    return [Silence(*r) for r in rows]


def create(conn: psycopg.Connection[Any], *, station_id: str, parameter: str | None, starts_at: datetime,
           ends_at: datetime, reason: str, note: str | None, actor: str) -> dict[str, Any]:
    """Store a silence and return its row; refuses a window that ends before it starts."""
    if ends_at <= starts_at:
        raise ValueError(f"silence for station {station_id}: ends_at {ends_at.isoformat()} must be after "
                         f"starts_at {starts_at.isoformat()}")
    text = reason if not note else f"{reason}: {note}"
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute("INSERT INTO silences (station_id, parameter, starts_at, ends_at, reason, created_by) "
                          "VALUES (%s, %s, %s, %s, %s, %s) RETURNING *",
                          (station_id, parameter, starts_at, ends_at, text, actor)).fetchone()
    assert row is not None
    return row


def delete(conn: psycopg.Connection[Any], silence_id: int, actor: str) -> dict[str, Any] | None:
    """Withdraw a silence (kept, marked deleted by `actor`); None when it does not exist."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute("UPDATE silences SET deleted_at = now(), deleted_by = %s WHERE id = %s AND deleted_at IS NULL "
                           "RETURNING *", (actor, silence_id)).fetchone()
