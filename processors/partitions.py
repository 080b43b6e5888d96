"""Store lifecycle: day partitions created ahead, retention, and catching up late rollups.

Native PostgreSQL: readings are partitioned by UTC day (`readings_YYYYMMDD`, created by
`quantrac_ensure_partitions`); retention drops whole day partitions that end before the cutoff
and deletes rollup rows of buckets before it. TimescaleDB: chunks and compression are the
extension's; retention is a policy installed from the settings, and continuous aggregates are
refreshed over their whole range so late rows older than a policy window are not missed.

Per-station retention (`Station.retention_days`): whole partitions or chunks go only before the
longest retention any station has; rows of stations with a shorter one are deleted one by one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone

import psycopg
import structlog

from processors.rollups import ROLLUPS
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


def apply_retention(conn: psycopg.Connection, retention_days: int, now: datetime | None = None) -> RetentionResult:
    """Drop what is older than each station's retention: its own `retention_days` (registry), else `retention_days`.

    Native PostgreSQL drops whole day partitions before the oldest cutoff (the longest retention) and
    deletes, row by row, what is older than a shorter one. TimescaleDB gets retention policies at the
    longest retention (whole chunks) and the same row deletes; its continuous aggregates follow at the
    next refresh. With no station of its own retention both behave exactly as before.
    """
    if retention_days <= 0:
        raise ValueError(f"retention_days must be positive, got {retention_days}; fix QUANTRAC_RETENTION_DAYS")
    own = own_retentions(conn)
    cuts = cutoffs(retention_days, own, now or datetime.now(timezone.utc))
    kind = store_kind(conn)
    result = RetentionResult(store=kind, cutoff=cuts.default, deleted_side_rows=_prune_side_tables(conn, cuts),
                             own_retention=own)
    with conn.transaction():
        for sql, params in cuts.delete_statements("readings", "ts"):
            result.deleted_rows += conn.execute(sql, params).rowcount
    if kind == "timescaledb":
        _timescale_retention_policies(conn, max([retention_days, *own.values()]))
        return result
    with conn.transaction():
        for name, day in sorted(day_partitions(conn).items(), key=lambda item: item[1]):
            if datetime.combine(day + timedelta(days=1), datetime.min.time(), timezone.utc) <= cuts.oldest:
                conn.execute(f'DROP TABLE "{name}"')
                result.dropped_partitions.append(name)
        for table in ROLLUPS.values():
            result.deleted_rollup_rows += conn.execute(f"DELETE FROM {table} WHERE bucket < %s", (cuts.oldest,)).rowcount
            for sql, params in cuts.delete_statements(table, "bucket"):
                result.deleted_rollup_rows += conn.execute(sql, params).rowcount
    log.info("store.retention", store=kind, cutoff=cuts.default.isoformat(), oldest_cutoff=cuts.oldest.isoformat(),
             own_retention=own, dropped=result.dropped_partitions, deleted_rows=result.deleted_rows,
             deleted_rollup_rows=result.deleted_rollup_rows, deleted_side_rows=result.deleted_side_rows)
    return result


def _timescale_retention_policies(conn: psycopg.Connection, retention_days: int) -> None:
    """Replace the retention policies of the hypertable and the continuous aggregates (idempotent)."""
    drop_after = timedelta(days=retention_days)
    with conn.transaction():
        for relation in ("readings", *ROLLUPS.values()):
            conn.execute("SELECT remove_retention_policy(%s, if_exists => true)", (relation,))
            conn.execute("SELECT add_retention_policy(%s, drop_after => %s)", (relation, drop_after))
    log.info("store.retention_policies", retention_days=retention_days)


def refresh_aggregates(conn: psycopg.Connection, until: datetime | None = None) -> list[str]:
    """TimescaleDB: refresh every continuous aggregate up to `until` (default now); no-op elsewhere.

    Only invalidated buckets are recomputed, so this is cheap when nothing came late.
    `refresh_continuous_aggregate` cannot run in a transaction block: `conn` must be in autocommit.
    """
    if store_kind(conn) != "timescaledb":
        return []
    until = until or datetime.now(timezone.utc)
    for view in ROLLUPS.values():
        conn.execute("CALL refresh_continuous_aggregate(%s, NULL, %s)", (view, until))
    return list(ROLLUPS.values())


def run_maintenance(dsn: str, retention_days: int, partitions_ahead_days: int) -> None:
    """One maintenance pass: partitions ahead, retention, late-row refresh of the aggregates."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        ensure_partitions_ahead(conn, partitions_ahead_days)
        apply_retention(conn, retention_days)
        refresh_aggregates(conn)
