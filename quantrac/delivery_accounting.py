"""Per-station delivery accounting: received, forwarded, dead-lettered by reason, late, stored, duplicates.

The bridge counts in memory (thread-safe) and every
`bridge_counts_flush_s` adds the deltas to `delivery_counts` (one row per hour, station,
counter and reason; rows only grow). A SIGKILLed bridge loses at most one flush interval of
*counts*, never data. The worker adds `stored` and `duplicate` in the same transaction as the
readings, so those two are exact.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal

import psycopg
import structlog

from quantrac.db import where_clause
from quantrac.domain import Reading
from quantrac.failures import describe, is_record_failure, store_fix
from quantrac.safe_text import safe_text

if TYPE_CHECKING:  # numpy is the worker's: the bridge, which counts here too, starts without it
    from quantrac.batch_columns import BatchColumns

log = structlog.get_logger(__name__)

CounterName = Literal["received", "forwarded", "deadlettered", "late", "stored", "duplicate", "conflict"]
CountKey = tuple[datetime, str, str, str]
"""(hour, station id, counter, reason); reason is '' except for dead letters."""

STATION_KEY_LIMIT = 200
"""Characters of a station id from a topic kept in counts (a topic can be 64 kB of anything)."""

UNKNOWN_STATION = "?"
"""Station id counted for a message whose topic names no station."""

_UPSERT = ("INSERT INTO delivery_counts (hour, station_id, counter, reason, n) "
           "SELECT * FROM unnest(%b::timestamptz[], %b::text[], %b::text[], %b::text[], %b::bigint[]) "
           "ON CONFLICT (station_id, hour, counter, reason) DO UPDATE SET n = delivery_counts.n + EXCLUDED.n")
"""All the counts in one statement: one array per column, rows in key order (so two writers lock rows alike)."""


def _upsert_params(counts: Mapping[CountKey, int]) -> list[list[Any]]:
    """The columns of `_UPSERT` for the counts."""
    rows = sorted((hour, station, counter, reason, n) for (hour, station, counter, reason), n in counts.items())
    return [list(column) for column in zip(*rows, strict=True)]


def hour_of(ts: datetime) -> datetime:
    """The UTC hour containing `ts`: the `hour` of the `delivery_counts` row it is counted in."""
    return ts.astimezone(timezone.utc).replace(minute=0, second=0, microsecond=0)


class DeliveryCounts:
    """What the bridge did with each message, per station; safe to call from any thread.

    Per-station series live here and in PostgreSQL, not in Prometheus (see quantrac/metrics.py).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: Counter[CountKey] = Counter()
        self.totals: Counter[tuple[str, str]] = Counter()
        """(counter, reason) → count since start, over all stations (bounded whatever station ids arrive)."""

    def add(self, station_id: str, counter: CounterName, n: int = 1, *, reason: str = "", at: datetime) -> None:
        """Count n events of the station in the hour of `at`."""
        if n <= 0:
            return
        with self._lock:
            self._pending[(hour_of(at), safe_text(station_id, STATION_KEY_LIMIT), counter, reason)] += n
            self.totals[(counter, reason)] += n

    def drain(self) -> Counter[CountKey]:
        """Take the counts not yet persisted."""
        with self._lock:
            pending, self._pending = self._pending, Counter()
        return pending

    def restore(self, pending: Mapping[CountKey, int]) -> None:
        """Put back counts whose flush failed."""
        with self._lock:
            self._pending.update(pending)

    def flush(self, dsn: str) -> int:
        """Add the pending counts to PostgreSQL; on failure they are kept for the next flush."""
        pending = self.drain()
        if not pending:
            return 0
        try:
            with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn, conn.transaction():
                write_counts(conn, pending)
        except psycopg.Error as exc:
            if is_record_failure(exc):  # kept, these counts would fail every flush after this one too
                log.error("accounting.counts_dropped", error=describe(exc), dropped=len(pending),
                          fix="a bug: station ids are made safe before counting; report this line")
                return 0
            self.restore(pending)
            log.warning("accounting.flush_failed", error=str(exc), kept=len(pending),
                        fix=store_fix(exc, "check PostgreSQL (quantrac stack status); counts are kept and retried"))
            return 0
        return len(pending)

    def snapshot(self) -> dict[str, int]:
        """Totals since start, keyed 'counter[:reason]' summed over stations (for logs)."""
        out: Counter[str] = Counter()
        for (counter, reason), n in self.totals.items():
            out[f"{counter}:{reason}" if reason else counter] += n
        return dict(out)


def write_counts(conn: psycopg.Connection[Any], counts: Mapping[CountKey, int]) -> None:
    """Add the counts to their `delivery_counts` rows (upsert; rows only grow), in the caller's transaction."""
    if counts:
        conn.execute(_UPSERT, _upsert_params(counts))


def store_counts(readings: BatchColumns | Sequence[Reading], new: BatchColumns | Sequence[Reading], at: datetime,
                 conflicts: Iterable[Reading] = ()) -> Counter[CountKey]:
    """`stored`, `conflict` and `duplicate` per station for one stored batch.

    new = readings not seen before; conflicts = readings whose key was stored with another value
    (dead-lettered); every other reading repeated a stored one exactly (a duplicate).
    """
    from quantrac.batch_columns import as_columns

    hour = hour_of(at)
    received = as_columns(readings).per_station()
    stored = Counter(as_columns(new).per_station())
    conflicting = Counter(r.station_id for r in conflicts)
    counts: Counter[CountKey] = Counter()
    for station, n in received.items():
        counts[(hour, station, "stored", "")] = stored[station]
        counts[(hour, station, "conflict", "")] = conflicting[station]
        counts[(hour, station, "duplicate", "")] = n - stored[station] - conflicting[station]
    return +counts


async def record_store_counts(conn: psycopg.AsyncConnection[Any], readings: BatchColumns | Sequence[Reading],
                              new: BatchColumns | Sequence[Reading],
                              conflicts: Sequence[Reading] = ()) -> None:
    """Worker side: add stored/conflict/duplicate counts in the caller's transaction (exact, like the readings)."""
    counts = store_counts(readings, new, datetime.now(timezone.utc), conflicts)
    if counts:
        await conn.execute(_UPSERT, _upsert_params(counts))


def delivery_summary(conn: psycopg.Connection[Any], station_id: str | None, since: datetime | None,
                     until: datetime | None) -> dict[str, dict[str, Any]]:
    """Counts per station over [since, until): {station: {received, forwarded, deadlettered: {reason: n}, ...}}."""
    where, params = where_clause(("station_id = %s", station_id or None),
                                 ("hour >= date_trunc('hour', %s::timestamptz)", since), ("hour < %s", until))
    rows = conn.execute(f"SELECT station_id, counter, reason, sum(n)::bigint FROM delivery_counts {where} "
                        f"GROUP BY station_id, counter, reason ORDER BY station_id", params).fetchall()
    out: dict[str, dict[str, Any]] = {}
    for station, counter, reason, n in rows:
        entry = out.setdefault(station, {"received": 0, "forwarded": 0, "deadlettered": {}, "late": 0, "stored": 0, "duplicate": 0,
                                         "conflict": 0})
        if counter == "deadlettered":
            entry["deadlettered"][reason] = int(n)
        else:
            entry[counter] = int(n)
    return out
