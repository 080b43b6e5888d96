"""The keys of the open alerts of some stations, so that detection builds a clear condition only where it matters."""

from __future__ import annotations

from typing import Any, Iterable

import psycopg

from alerts.rules import OpenKeys

_OPEN_KEYS = "SELECT station_id, parameter, rule FROM alerts WHERE status <> 'resolved' AND station_id = ANY(%s)"


async def open_alert_keys(conn: psycopg.AsyncConnection[Any], station_ids: Iterable[str]) -> OpenKeys:
    """(station, parameter, rule) of every alert of these stations that is not resolved, as the table holds them now.

    Read in the batch's own transaction, so it mirrors the table whichever worker or person last
    changed an alert (another worker before a rebalance, an operator resolving by hand).
    """
    ids = sorted(set(station_ids))
    if not ids:
        return set()
    async with conn.cursor() as cur:
        await cur.execute(_OPEN_KEYS, (ids,))
        return {(str(s), str(p), str(r)) for s, p, r in await cur.fetchall()}
