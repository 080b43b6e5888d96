"""Store lifecycle: day partitions created ahead, retention, and catching up late rollups.

Native PostgreSQL: readings are partitioned by UTC day (`readings_YYYYMMDD`, created by
`quantrac_ensure_partitions`); retention drops whole day partitions that end before the cutoff
and deletes rollup rows of buckets before it. TimescaleDB: chunks and compression are the
extension's; retention drops chunks from the maintenance pass (no policy job of the extension's own),
and continuous aggregates are refreshed over their whole range so late rows are not missed.

Per-station retention (`Station.retention_days`): whole partitions or chunks go only before the
longest retention any station has; rows of stations with a shorter one are deleted one by one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone

import psycopg
import structlog
from tenacity import RetryCallState, Retrying, stop_after_delay, wait_exponential

from processors.rollups import REFUSED_AS_BUSY, ROLLUPS, refresh_locked
from quantrac.db import store_kind

log = structlog.get_logger(__name__)

_PARTITION = re.compile(r"^readings_(\d{8})$")


@dataclass
class RetentionResult:
    """What one retention pass dropped from a store."""
    store: str
    cutoff: datetime
    dropped_partitions: list[str] = field(default_factory=list)
    deleted_rollup_rows: int = 0
    deleted_side_rows: dict[str, int] = field(default_factory=dict)
    own_retention: dict[str, int] = field(default_factory=dict)
    """Stations with their own `retention_days` (registry), which the pass honoured."""
    deleted_rows: int = 0
    """Raw readings deleted row by row: those of stations whose retention ends before the oldest kept day."""


SIDE_TABLES = {"tt10_values": "ts", "completeness": "bucket", "deadletters": "received_at"}
"""Tables kept beside the readings, and the time column that ages them: same retention, both store kinds."""

PER_STATION_SIDE_TABLES = ("tt10_values", "completeness")
"""Side tables aged per station like the readings (dead letters age on their receive time, globally)."""

WORKER_STATE_TABLES = ("detection_snapshots", "station_liveness")
"""The worker's per-station state (migration 0065): a row per station, kept until the station is gone from the
registry or was retired before its retention's cutoff (its history is gone then: nothing would resume from it)."""


def own_retentions(conn: psycopg.Connection) -> dict[str, int]:
    """`retention_days` of the stations that have their own (active or retired: a retired station's history stays)."""
    rows = conn.execute("SELECT id, (spec->>'retention_days')::int FROM stations "
                        "WHERE spec->>'retention_days' IS NOT NULL").fetchall()
    return {station_id: int(days) for station_id, days in rows if days}


@dataclass(frozen=True)
class Cutoffs:
    """Where retention cuts, per station: the default cutoff, stations' own, and the oldest of all.

    Whole day partitions (or TimescaleDB chunks) go only before `oldest`, the cutoff of the longest
    retention; between `oldest` and each station's cutoff its rows are deleted one by one."""

    default: datetime
    own: dict[str, datetime]

    @property
    def oldest(self) -> datetime:
        """The oldest cut-off of any station: nothing older is kept anywhere."""
        return min([self.default, *self.own.values()])

    def delete_statements(self, table: str, column: str) -> list[tuple[str, tuple[object, ...]]]:
        """DELETEs that remove, from `table`, the rows each station's own or the default cutoff has passed."""
        statements: list[tuple[str, tuple[object, ...]]] = []
        if self.default > self.oldest:
            statements.append((f"DELETE FROM {table} WHERE {column} < %s AND {column} >= %s AND NOT (station_id = ANY(%s))",
                               (self.default, self.oldest, list(self.own))))
        for station_id, cutoff in sorted(self.own.items()):
            if cutoff > self.oldest:
                statements.append((f"DELETE FROM {table} WHERE station_id = %s AND {column} < %s AND {column} >= %s",
                                   (station_id, cutoff, self.oldest)))
        return statements


def cutoffs(retention_days: int, own: dict[str, int], now: datetime) -> Cutoffs:
    """The retention cutoff for everyone and for stations with their own retention."""
    return Cutoffs(now - timedelta(days=retention_days), {sid: now - timedelta(days=days) for sid, days in own.items()})


def _prune_side_tables(conn: psycopg.Connection, cuts: Cutoffs) -> dict[str, int]:
    with conn.transaction():
        deleted = {}
        for table, column in SIDE_TABLES.items():
            if table not in PER_STATION_SIDE_TABLES:
                deleted[table] = conn.execute(f"DELETE FROM {table} WHERE {column} < %s", (cuts.default,)).rowcount
                continue
            n = conn.execute(f"DELETE FROM {table} WHERE {column} < %s", (cuts.oldest,)).rowcount
            for sql, params in cuts.delete_statements(table, column):
                n += conn.execute(sql, params).rowcount
            deleted[table] = n
        for table in WORKER_STATE_TABLES:
            deleted[table] = conn.execute(
                f"DELETE FROM {table} t WHERE NOT EXISTS (SELECT 1 FROM stations s "
                "LEFT JOIN unnest(%s::text[], %s::timestamptz[]) AS own(id, cutoff) ON own.id = s.id "
                "WHERE s.id = t.station_id AND (s.retired_at IS NULL OR s.retired_at >= coalesce(own.cutoff, %s)))",
                (list(cuts.own), list(cuts.own.values()), cuts.default)).rowcount
        return deleted


def ensure_partitions_ahead(conn: psycopg.Connection, days_ahead: int, today: date | None = None) -> int:
    """Create the day partitions from today (UTC) to `days_ahead` days later; returns how many were new."""
    first = today or datetime.now(timezone.utc).date()
    row = conn.execute("SELECT quantrac_ensure_partitions(%s, %s)", (first, first + timedelta(days=days_ahead))).fetchone()
    created = int(row[0]) if row else 0
    if created:
        log.info("store.partitions_created", first=str(first), days_ahead=days_ahead, created=created)
    return created


def day_partitions(conn: psycopg.Connection) -> dict[str, date]:
    """The day partitions of `readings` (native PostgreSQL), name → UTC day."""
    rows = conn.execute("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                        "WHERE i.inhparent = 'readings'::regclass").fetchall()
    found = {}
    for (name,) in rows:
        match = _PARTITION.match(name)
        if match:
            found[name] = datetime.strptime(match[1], "%Y%m%d").date()
    return found


LOCK_TIMEOUT = "30s"
"""Longest wait of a retention pass for a lock (the registry's, or an old partition's)."""


def apply_retention(conn: psycopg.Connection, retention_days: int, now: datetime | None = None) -> RetentionResult:
    """Drop what is older than each station's retention: its own `retention_days` (registry), else `retention_days`.

    Whole day partitions (native PostgreSQL) or chunks (TimescaleDB, `drop_chunks` on the hypertable
    and its continuous aggregates) go before the oldest cutoff, the longest retention; what is older
    than a shorter one is deleted row by row. With no station of its own retention both behave
    exactly as before.

    One transaction, with the registry locked against changes (`SHARE`: reads go on, a station
    saved meanwhile waits for the pass to end), so what is dropped follows the retentions the registry
    holds when it is dropped. TimescaleDB's own retention policies are removed, not installed: their
    job ran on the extension's schedule with the registry as it was when the policy was set, and
    dropped, seconds later, the archive of a station registered meanwhile with a longer retention.
    A lock not granted within `LOCK_TIMEOUT` (a registry edit left open, a long query on an old
    partition) fails the pass, which the worker retries at its next tick, rather than queueing
    everything behind it.
    """
    if retention_days <= 0:
        raise ValueError(f"retention_days must be positive, got {retention_days}; fix QUANTRAC_RETENTION_DAYS")
    kind = store_kind(conn)
    with conn.transaction():
        conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        conn.execute("LOCK TABLE stations IN SHARE MODE")
        own = own_retentions(conn)
        cuts = cutoffs(retention_days, own, now or datetime.now(timezone.utc))
        result = RetentionResult(store=kind, cutoff=cuts.default, deleted_side_rows=_prune_side_tables(conn, cuts),
                                 own_retention=own)
        for sql, params in cuts.delete_statements("readings", "ts"):
            result.deleted_rows += conn.execute(sql, params).rowcount
        if kind == "timescaledb":
            result.dropped_partitions = _drop_chunks(conn, cuts.oldest)
        else:
            _drop_day_partitions(conn, cuts, result)
    log.info("store.retention", store=kind, cutoff=cuts.default.isoformat(), oldest_cutoff=cuts.oldest.isoformat(),
             own_retention=own, dropped=result.dropped_partitions, deleted_rows=result.deleted_rows,
             deleted_rollup_rows=result.deleted_rollup_rows, deleted_side_rows=result.deleted_side_rows)
    return result


def _drop_day_partitions(conn: psycopg.Connection, cuts: Cutoffs, result: RetentionResult) -> None:
    """Native PostgreSQL: the day partitions that end before the oldest cutoff, and the rollup rows aged out."""
    for name, day in sorted(day_partitions(conn).items(), key=lambda item: item[1]):
        if datetime.combine(day + timedelta(days=1), datetime.min.time(), timezone.utc) <= cuts.oldest:
            conn.execute(f'DROP TABLE "{name}"')
            result.dropped_partitions.append(name)
    for table in ROLLUPS.values():
        result.deleted_rollup_rows += conn.execute(f"DELETE FROM {table} WHERE bucket < %s", (cuts.oldest,)).rowcount
        for sql, params in cuts.delete_statements(table, "bucket"):
            result.deleted_rollup_rows += conn.execute(sql, params).rowcount


def _drop_chunks(conn: psycopg.Connection, older_than: datetime) -> list[str]:
    """TimescaleDB: the chunks of the hypertable and of the continuous aggregates that end before
    `older_than`; the retention policies an earlier version installed are removed first."""
    dropped: list[str] = []
    for relation in ("readings", *ROLLUPS.values()):
        conn.execute("SELECT remove_retention_policy(%s, if_exists => true)", (relation,))
        rows = conn.execute("SELECT drop_chunks(%s, older_than => %s)", (relation, older_than)).fetchall()
        dropped += [str(chunk) for (chunk,) in rows]
    return dropped


def refresh_aggregates(conn: psycopg.Connection, until: datetime | None = None) -> list[str]:
    """TimescaleDB: refresh every continuous aggregate up to `until` (default now); no-op elsewhere.

    Only invalidated buckets are recomputed, so this is cheap when nothing came late.
    `refresh_continuous_aggregate` cannot run in a transaction block: `conn` must be in autocommit.
    """
    if store_kind(conn) != "timescaledb":
        return []
    until = until or datetime.now(timezone.utc)
    for view in ROLLUPS.values():
        for attempt in _maintenance_refresh_attempts(view):
            with attempt:
                refresh_locked(conn, view, None, until)
    return list(ROLLUPS.values())


def _maintenance_refresh_attempts(view: str) -> Retrying:
    """A refresh refused while another one of the same aggregate runs is tried again for up to a minute
    (the pass runs in its own thread), so the pass does not wait an hour for its next tick."""
    def busy(state: RetryCallState) -> None:
        log.info("store.refresh_busy", aggregate=view, attempt=state.attempt_number,
                 fix="none needed: another refresh of this aggregate is running; tried again")
    return Retrying(stop=stop_after_delay(60), wait=wait_exponential(multiplier=0.1, max=5), retry=REFUSED_AS_BUSY,
                    reraise=True, before_sleep=busy)


def run_maintenance(dsn: str, retention_days: int, partitions_ahead_days: int) -> None:
    """One maintenance pass: partitions ahead, retention, late-row refresh of the aggregates."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        ensure_partitions_ahead(conn, partitions_ahead_days)
        apply_retention(conn, retention_days)
        refresh_aggregates(conn)
