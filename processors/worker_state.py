"""The worker's per-station state in the store: detection snapshots and liveness entries.

A worker keeps both in memory for the stations of the readings partitions it owns, and writes them
here (snapshots every `QUANTRAC_WORKER_STATE_SNAPSHOT_S`, liveness entries with every batch, before
the batch is acknowledged). A worker that takes a partition over, or starts again, reads them back:
a station's detection state from its snapshot, brought up to date from the readings stored after it
(`processors.pipeline.BatchProcessor._replay`), and the liveness entries of every station of its
partitions, silent ones included, so that it neither forgets who is silent nor reports it twice.

This used to live in Faust tables. Their recovery was seen to hang for good after a rebalance ("No
event received for active tp … since recovery start"), with the worker processing nothing; with no
table, Faust has nothing to recover and resumes the readings from their committed offsets.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Iterable, Mapping

import psycopg
from kafka.partitioner.default import murmur2
from psycopg.types.json import Jsonb

Entry = dict[str, Any]
"""A liveness entry: `{"event_ts", "received_at", "offline"}` (ISO times), see `processors.liveness`."""


def partition_of(station_id: str, partitions: int) -> int:
    """The readings partition of a station: Kafka's default partitioner on its key, as the bridge's producer uses it."""
    return (murmur2(station_id.encode()) & 0x7FFFFFFF) % partitions


async def load_snapshots(conn: psycopg.AsyncConnection[Any], station_ids: Iterable[str]) -> dict[str, bytes]:
    """The stored detection snapshots of these stations (a station with none is left out); in binary, as they are
    written (`save_snapshots`): a third of the CPU of reading them as hex text."""
    async with conn.cursor(binary=True) as cur:
        await cur.execute("SELECT station_id, state FROM detection_snapshots WHERE station_id = ANY(%s)", (list(station_ids),))
        return {station_id: bytes(state) for station_id, state in await cur.fetchall()}


async def save_snapshots(conn: psycopg.AsyncConnection[Any], snapshots: Mapping[str, bytes]) -> None:
    """Write these stations' detection snapshots, replacing their previous ones.

    The states go as a binary array (`%b`): in text, each would be escaped into hex and quoted, which took 25 times
    the CPU in the worker (90 against 3.5 ms for 200 states of 18 KB) and 9 times the wall time."""
    if not snapshots:
        return
    async with conn.cursor() as cur:
        await cur.execute(
            "INSERT INTO detection_snapshots (station_id, state, written_at) SELECT s, st, now() "
            "FROM unnest(%s::text[], %b::bytea[]) AS u(s, st) "
            "ON CONFLICT (station_id) DO UPDATE SET state = excluded.state, written_at = excluded.written_at",
            (list(snapshots), list(snapshots.values())))


WATCHES = ("back_since", "clock")
"""The parts of a liveness entry that are held for a while: a station back from silence clearing its offline alert, and
its clock's watch (`processors.liveness`). Stored with the entry, so a restart neither starts a hold again nor delays a
`station_clock` alert by a new watch window."""


async def load_liveness(conn: psycopg.AsyncConnection[Any]) -> dict[str, Entry]:
    """Every stored liveness entry, by station."""
    async with conn.cursor() as cur:
        await cur.execute("SELECT station_id, event_ts, received_at, offline, watches FROM station_liveness")
        rows = await cur.fetchall()
    return {station_id: {"event_ts": event_ts.astimezone(timezone.utc).isoformat(),
                         "received_at": received_at.astimezone(timezone.utc).isoformat(), "offline": offline,
                         **(watches or {})}
            for station_id, event_ts, received_at, offline, watches in rows}


async def save_liveness(conn: psycopg.AsyncConnection[Any], entries: Mapping[str, Entry]) -> None:
    """Write these stations' liveness entries, replacing their previous ones."""
    if not entries:
        return
    ids = list(entries)
    watches = [{k: entries[i][k] for k in WATCHES if k in entries[i]} for i in ids]
    async with conn.cursor() as cur:
        await cur.execute(
            "INSERT INTO station_liveness (station_id, event_ts, received_at, offline, watches, updated_at) "
            "SELECT s, e, r, o, w, now() "
            "FROM unnest(%s::text[], %s::timestamptz[], %s::timestamptz[], %s::boolean[], %s::jsonb[]) AS u(s, e, r, o, w) "
            "ON CONFLICT (station_id) DO UPDATE SET event_ts = excluded.event_ts, received_at = excluded.received_at, "
            "offline = excluded.offline, watches = excluded.watches, updated_at = excluded.updated_at",
            (ids, [datetime.fromisoformat(entries[i]["event_ts"]) for i in ids],
             [datetime.fromisoformat(entries[i]["received_at"]) for i in ids], [bool(entries[i].get("offline")) for i in ids],
             [Jsonb(w) if w else None for w in watches]))
