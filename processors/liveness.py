"""Silent stations, on the wall clock: who missed their expected slot plus a grace.

Key-based event-time windows never close for a station that stops sending, so silence is
judged by a timer on the wall clock against what the worker last received from each station:
the event time of its newest reading and the bridge's receive time. The deadline is
`received_at + expected_interval_s + grace` (receive time, not event time: a datalogger that
resends a backlog after an outage is alive, and a wrong station clock does not make it silent).

An entry is a JSON dict `{"event_ts", "received_at", "offline"}` kept in a Faust table keyed by
station id, so a restarted worker neither forgets who is silent nor reports it twice.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Iterable, Mapping

from alerts.rules import Condition, judge_offline
from quantrac.domain import Station

Entry = dict[str, Any]


def deadline(station: Station, received_at: datetime, default_grace_s: float) -> datetime:
    grace = station.offline_grace_s if station.offline_grace_s is not None else default_grace_s
    return received_at + timedelta(seconds=station.expected_interval_s + grace)


def seen(entry: Entry | None, station: Station, event_ts: datetime, received_at: datetime) -> tuple[Entry, Condition | None]:
    """The entry after a message from the station; a clear `station_offline` condition when it was offline."""
    if entry is None:
        return {"event_ts": event_ts.isoformat(), "received_at": received_at.isoformat(), "offline": False}, None
    newest_event = max(datetime.fromisoformat(entry["event_ts"]), event_ts)
    newest_receipt = max(datetime.fromisoformat(entry["received_at"]), received_at)
    updated = {"event_ts": newest_event.isoformat(), "received_at": newest_receipt.isoformat(), "offline": False}
    recovered = None
    if entry.get("offline"):
        recovered = judge_offline(station, newest_receipt, newest_receipt, received_at, offline=False)
    return updated, recovered


def overdue(entries: Iterable[tuple[str, Entry]], stations: Mapping[str, Station], now: datetime,
            default_grace_s: float) -> list[tuple[str, Entry, Condition]]:
    """Stations past their deadline and not yet reported offline: (id, new entry, active condition)."""
    found = []
    for station_id, entry in entries:
        station = stations.get(station_id)
        if station is None or entry.get("offline"):
            continue
        received = datetime.fromisoformat(entry["received_at"])
        due = deadline(station, received, default_grace_s)
        if now > due:
            found.append((station_id, {**entry, "offline": True}, judge_offline(station, received, due, now, offline=True)))
    return found
