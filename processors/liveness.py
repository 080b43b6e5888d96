"""Silent stations: who missed their expected slot plus a grace, judged on what *arrived*.

Key-based event-time windows never close for a station that stops sending, so silence is
judged by a timer against what the worker last received from each station: the event time of
its newest reading and the bridge's receive time. The deadline is
`received_at + expected_interval_s + grace` (receive time, not event time: a datalogger that
resends a backlog after an outage is alive, and a wrong station clock does not make it silent).

The deadline is compared with the arrival *frontier*, not the wall clock (`frontier`): the time up
to which the worker has seen everything that arrived in Kafka. A readings partition the worker has
caught up with is known up to now; one it is behind on only up to the Kafka timestamp of the last
record it processed (a station's messages arrive in order on its partition, so one that kept
sending has a record before that point). The frontier is the oldest of the assigned partitions';
while it is unknown (just started, nothing processed yet on a partition with a backlog) nobody is
judged. So a paused or slow worker, or an import's backlog, never makes a station look silent.

Only live readings make an entry: imported (historical) records don't (`pipeline.last_seen`), so
a station that never had a live reading is never reported offline, nor is one the registry marks
`history_only`.

An entry is a JSON dict `{"event_ts", "received_at", "offline"}` (with `"back_since"` while a station back from
silence clears its alert, `"clock"` while its clock is watched: `processors.station_clock`) kept in the store by station
(`station_liveness`, `processors.worker_state`), so a restarted worker neither forgets who is silent nor reports it twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, Mapping

from alerts.inhibition import OFFLINE_RULE
from alerts.lifecycle import holding_clear
from alerts.rules import CLOCK_RULE, Condition, OpenKeys, judge_offline
from processors import station_clock
from quantrac.domain import Station

Entry = dict[str, Any]


def deadline(station: Station, received_at: datetime, default_grace_s: float) -> datetime:
    """When a station that delivered at `received_at` becomes overdue: its interval plus its grace."""
    grace = station.offline_grace_s if station.offline_grace_s is not None else default_grace_s
    return received_at + timedelta(seconds=station.expected_interval_s + grace)


def seen(entry: Entry | None, station: Station, event_ts: datetime, received_at: datetime, clock_lag_s: float,
         clear_hold_s: float) -> tuple[Entry, list[Condition]]:
    """The entry after a message from the station, and the conditions it gives: `station_offline` cleared at every
    delivery from its return until the alerts' clear hold has passed (so the alert resolves as any other, and a
    station that drops out again within the hold keeps it open); `station_clock` raised or cleared
    (`processors.station_clock`)."""
    entry = entry or {"event_ts": event_ts.isoformat(), "received_at": received_at.isoformat()}
    newest_event = max(datetime.fromisoformat(entry["event_ts"]), event_ts)
    newest_receipt = max(datetime.fromisoformat(entry["received_at"]), received_at)
    updated: Entry = {"event_ts": newest_event.isoformat(), "received_at": newest_receipt.isoformat(), "offline": False}
    found: list[Condition] = []
    back_since = newest_receipt.isoformat() if entry.get("offline") else entry.get("back_since")
    if back_since is not None:
        found.append(judge_offline(station, newest_receipt, newest_receipt, newest_receipt, offline=False))
        if (still := holding_clear(back_since, newest_receipt, clear_hold_s)) is not None:
            updated["back_since"] = still
    clock, clock_condition = station_clock.watch(entry.get("clock"), station, newest_event, newest_receipt, clock_lag_s,
                                                 clear_hold_s, latest_ts=event_ts)
    if clock is not None:
        updated["clock"] = clock
    if clock_condition is not None:
        found.append(clock_condition)
    return updated, found


def resume(entries: Mapping[str, Entry], open_keys: OpenKeys, now: datetime) -> dict[str, Entry]:
    """The entries read back from the store (a start, a rebalance), with what they do not keep taken from the alerts
    that are open: a station reporting again with its `station_offline` alert still open clears it from `now` on, and
    one with its `station_clock` alert open clears that once its lag is back under the bound. The store keeps an
    entry's holds and watch (`processors.worker_state.WATCHES`); these fill in for an entry written before it did."""
    out: dict[str, Entry] = {}
    for station_id, entry in entries.items():
        entry = dict(entry)
        if (station_id, "*", OFFLINE_RULE) in open_keys and not entry.get("offline") and "back_since" not in entry:
            entry["back_since"] = now.isoformat()
        if (station_id, "*", CLOCK_RULE) in open_keys and "clock" not in entry:
            entry["clock"] = {"alerted": True}
        out[station_id] = entry
    return out


@dataclass(frozen=True)
class PartitionView:
    """What the worker knows of one readings partition it owns."""

    highwater: int | None
    """Offset the next record appended will get (None or negative: not fetched yet)."""
    processed_offset: int | None = None
    """Offset of the last record this worker processed (stored and acknowledged) since it started."""
    processed_ts: datetime | None = None
    """Kafka timestamp of that record (the bridge's or importer's send time)."""
    committed: int | None = None
    """The consumer group's committed offset (where this worker started)."""


def partition_frontier(view: PartitionView, now: datetime) -> datetime | None:
    """Up to when this partition's arrivals have been seen: now when caught up, else the last processed record's time."""
    if view.highwater is None or view.highwater < 0:
        return None
    if view.highwater == 0:  # nothing ever arrived on it
        return now
    position = view.processed_offset + 1 if view.processed_offset is not None else view.committed
    if position is not None and position >= view.highwater:
        return now
    return view.processed_ts


def frontier(views: Iterable[PartitionView], now: datetime) -> datetime | None:
    """The oldest partition frontier, capped at now; None when any is unknown or the worker owns no partition."""
    found: list[datetime] = []
    for view in views:
        at = partition_frontier(view, now)
        if at is None:
            return None
        found.append(min(at, now))
    return min(found) if found else None


def kafka_time(timestamp_s: float | None) -> datetime | None:
    """A Kafka record timestamp as an aware datetime (None when the broker gave none)."""
    return None if timestamp_s is None or timestamp_s <= 0 else datetime.fromtimestamp(timestamp_s, timezone.utc)


def overdue(entries: Iterable[tuple[str, Entry]], stations: Mapping[str, Station], now: datetime,
            default_grace_s: float) -> list[tuple[str, Entry, Condition]]:
    """Stations past their deadline and not yet reported offline: (id, new entry, active condition).

    `now` is the arrival frontier (`frontier`), the wall clock only when the worker is caught up."""
    found = []
    for station_id, entry in entries:
        station = stations.get(station_id)
        if station is None or entry.get("offline") or station.history_only:
            continue
        received = datetime.fromisoformat(entry["received_at"])
        due = deadline(station, received, default_grace_s)
        if now > due:
            found.append((station_id, {**entry, "offline": True}, judge_offline(station, received, due, now, offline=True)))
    return found
