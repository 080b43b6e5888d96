"""Inhibition: while a station is offline, its parameter alerts are held back (recorded, not notified);
once it is back, those still open and unacknowledged are notified, once."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

OFFLINE_RULE = "station_offline"
HELD_BACK = "inhibited"
"""How the delivery log's detail of a held-back notification starts."""


def inhibited(rule: str, station_offline: bool) -> bool:
    """A parameter alert of an offline station is inhibited; the offline alert itself never is."""
    return station_offline and rule != OFFLINE_RULE


def offline_alert(conn: psycopg.Connection[Any], station_id: str) -> int | None:
    """Id of the station's active `station_offline` alert, if any."""
    row = conn.execute("SELECT id FROM alerts WHERE station_id = %s AND rule = %s AND status <> 'resolved' LIMIT 1",
                       (station_id, OFFLINE_RULE)).fetchone()
    return int(row[0]) if row else None


def held_back(conn: psycopg.Connection[Any], station_id: str) -> list[dict[str, Any]]:
    """The station's open, unacknowledged parameter alerts whose `opened` notification was held back
    (inhibited) and has gone out on no channel since, each with its `opened` event, oldest first.

    Called when the station's offline alert resolves; sending them makes them leave this list, so a
    held-back alert is notified once however often the station comes and goes."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT e.id AS event_id, e.kind, e.actor, e.at, e.note, a.* FROM alerts a "
            "JOIN alert_events e ON e.alert_id = a.id AND e.kind = 'opened' "
            "WHERE a.station_id = %s AND a.status = 'open' AND a.rule <> %s "
            "AND EXISTS (SELECT 1 FROM notification_deliveries d WHERE d.event_id = e.id "
            "            AND d.outcome = 'suppressed' AND d.detail LIKE %s) "
            "AND NOT EXISTS (SELECT 1 FROM notification_deliveries d WHERE d.event_id = e.id AND d.outcome <> 'suppressed') "
            "ORDER BY e.id", (station_id, OFFLINE_RULE, HELD_BACK + ":%")).fetchall()
