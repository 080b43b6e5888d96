"""Inhibition: while a station is offline, its parameter alerts are held back (recorded, not notified)."""

from __future__ import annotations

from typing import Any

import psycopg

OFFLINE_RULE = "station_offline"


def inhibited(rule: str, station_offline: bool) -> bool:
    """A parameter alert of an offline station is inhibited; the offline alert itself never is."""
    return station_offline and rule != OFFLINE_RULE


def offline_alert(conn: psycopg.Connection[Any], station_id: str) -> int | None:
    """Id of the station's active `station_offline` alert, if any."""
    row = conn.execute("SELECT id FROM alerts WHERE station_id = %s AND rule = %s AND status <> 'resolved' LIMIT 1",
                       (station_id, OFFLINE_RULE)).fetchone()
    return int(row[0]) if row else None
