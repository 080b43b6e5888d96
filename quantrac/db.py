"""PostgreSQL access shared by the worker, the API and the command line: migrations, the registry and series ids.

Migrations are the SQL files in `quantrac/migrations/`, applied in order of their number and
recorded in `schema_version`. A file named `NNNN_x.timescale.sql` or `NNNN_x.postgres.sql` is
one of two variants of the same step; a new store is TimescaleDB when `CREATE EXTENSION timescaledb`
works on the server (see `decide_store`), and keeps that kind for good.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Mapping

import orjson
import psycopg
import structlog
from psycopg.rows import dict_row

from quantrac.domain import Station
from quantrac.registry import RegistryCache, RegistrySnapshot

if TYPE_CHECKING:
    from quantrac.settings import Settings

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_MIGRATION_NAME = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+?)(?:\.(?P<variant>timescale|postgres))?\.sql$")

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Migration:
    """One numbered SQL migration file."""
    version: int
    name: str
    path: Path


STORE_TIMESCALEDB = "timescaledb"
STORE_POSTGRESQL = "postgresql"

_PRELOAD_FIX = ("add shared_preload_libraries = 'timescaledb' to postgresql.conf and restart PostgreSQL "
                "(the local stack does when the extension is installed: make timescaledb)")


class StoreError(Exception):
    """The store cannot be migrated as asked; the message says why and how to fix it."""


@dataclass(frozen=True)
class Fallback:
    """Why TimescaleDB could not be used on a new store, and what would make it work."""

    cause: str
    fix: str


def timescaledb_installed(conn: psycopg.Connection) -> bool:
    """Whether the server lists the extension as installed. Not proof it works: without the preload
    line `pg_available_extensions` lists it and `CREATE EXTENSION` still fails."""
    row = conn.execute("SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'").fetchone()
    return bool(row and row[0])


def timescaledb_version(conn: psycopg.Connection) -> str | None:
    """The version of the extension created in this database, None when it is not created."""
    row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
    return str(row[0]) if row else None


def explain_extension_failure(error: psycopg.Error) -> Fallback:
    """The cause and the fix of a failed `CREATE EXTENSION timescaledb`, from the server's error."""
    first = (str(error).strip().splitlines() or ["no message"])[0]
    if "preload" in first:
        return Fallback("TimescaleDB is installed but not preloaded", _PRELOAD_FIX)
    if isinstance(error, psycopg.errors.InsufficientPrivilege):
        return Fallback(f"the role may not create the extension ({first})",
                        "run CREATE EXTENSION timescaledb once in this database as a superuser, then migrate again")
    return Fallback(f"CREATE EXTENSION timescaledb failed: {first}",
                    "see the server log and docs/timescaledb.md (the library and the SQL files must be of one release)")


def _try_create_extension(conn: psycopg.Connection) -> Fallback | None:
    """Create the extension if it works on this server: None when it did, else why not.

    Tried first on a throwaway connection and rolled back there: without the preload line the
    server ends the session with FATAL, which no savepoint survives. When the trial works, the
    extension is created in a savepoint of the caller's transaction, so a failure there is an
    ordinary ERROR that rolls back alone.
    """
    params = {**conn.info.get_parameters(), "connect_timeout": "10"}
    if conn.info.password:
        params["password"] = conn.info.password
    try:
        with psycopg.connect(**params) as trial:  # type: ignore[arg-type]  # psycopg's stubs give connect()'s named options (autocommit, row_factory...) their own types, so a **dict[str, str] of conninfo parameters matches none of them
            trial.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            trial.rollback()
        with conn.transaction():
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    except psycopg.Error as exc:
        return explain_extension_failure(exc)
    return None


def _preloaded(conn: psycopg.Connection) -> bool:
    row = conn.execute("SHOW shared_preload_libraries").fetchone()
    return bool(row and "timescaledb" in str(row[0]))


def _recorded_store(conn: psycopg.Connection) -> str | None:
    row = conn.execute("SELECT store FROM schema_version ORDER BY version LIMIT 1").fetchone()
    return str(row[0]) if row else None


def decide_store(conn: psycopg.Connection, use_timescale: bool | None) -> bool:
    """Whether this store is (or becomes) TimescaleDB, decided on what works, not on what is listed.

    A store keeps the kind its first migration recorded: it is never switched silently. A new one
    is TimescaleDB when `CREATE EXTENSION` succeeds (see `_try_create_extension`), else native PostgreSQL with one log line naming the cause and the fix. With
    `use_timescale` given, that kind is required: StoreError when it cannot be had.
    """
    recorded = _recorded_store(conn)
    if recorded is not None:
        wanted = STORE_TIMESCALEDB if use_timescale else STORE_POSTGRESQL
        if use_timescale is not None and wanted != recorded:
            raise StoreError(f"this database was created as a {recorded} store; it is never switched to {wanted}. "
                             f"Migrate into a new database to change the kind of store.")
        if recorded == STORE_POSTGRESQL and use_timescale is None and _preloaded(conn):
            log.info("db.store_kept", store=recorded, database=conn.info.dbname,
                     note="the server preloads TimescaleDB but this store was created native and stays so",
                     fix="to use TimescaleDB, migrate into a new database and copy the data (docs/timescaledb.md)")
        return recorded == STORE_TIMESCALEDB
    if use_timescale is False:
        return False
    if use_timescale is None and not timescaledb_installed(conn):
        log.info("db.store_chosen", store=STORE_POSTGRESQL, cause="TimescaleDB is not installed on this server",
                 fix="install it (docs/timescaledb.md) before the first migration to get a TimescaleDB store")
        return False
    failure = _try_create_extension(conn)
    if failure is None:
        return True
    if use_timescale:
        raise StoreError(f"a TimescaleDB store was asked for but {failure.cause}; fix: {failure.fix}")
    log.warning("db.store_fallback", store=STORE_POSTGRESQL, cause=failure.cause, fix=failure.fix)
    return False


@dataclass(frozen=True)
class StoreInfo:
    """Which store a database is, for /healthz and `quantrac stack status`."""

    kind: str  # timescaledb, postgresql, or none (not migrated yet)
    timescaledb_version: str | None  # of the extension created in this database
    server_version: str
    summary: str


def describe_store(conn: psycopg.Connection) -> StoreInfo:
    """The kind of store recorded by the migrations, with the extension's and the server's versions."""
    server = str(conn.execute("SHOW server_version").fetchone()[0]).split()[0]  # type: ignore[index]  # fetchone() is typed Optional; SHOW always returns one row
    has_table = conn.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()
    kind = (_recorded_store(conn) if has_table and has_table[0] else None) or "none"
    version = timescaledb_version(conn)
    if kind == STORE_TIMESCALEDB:
        summary = f"TimescaleDB {version} on PostgreSQL {server}"
    elif kind == STORE_POSTGRESQL:
        summary = f"native PostgreSQL {server}"
    else:
        state = "preloaded" if _preloaded(conn) else "installed, not preloaded" if timescaledb_installed(conn) else "not installed"
        summary = f"not migrated yet (PostgreSQL {server}, TimescaleDB {state})"
    return StoreInfo(kind, version, server, summary)


def plan_migrations(use_timescale: bool, directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The migrations for this kind of store, in order, one file per version."""
    wanted = "timescale" if use_timescale else "postgres"
    chosen: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _MIGRATION_NAME.match(path.name)
        if match is None:
            raise ValueError(f"migration file {path.name} is not named NNNN_name[.timescale|.postgres].sql")
        if match["variant"] not in (None, wanted):
            continue
        version = int(match["version"])
        if version in chosen:
            raise ValueError(f"two migrations with version {version}: {chosen[version].path.name} and {path.name}")
        chosen[version] = Migration(version, match["name"], path)
    return [chosen[v] for v in sorted(chosen)]


def migrate(conn: psycopg.Connection, use_timescale: bool | None = None, target: int | None = None) -> list[int]:
    """Apply the migrations not yet applied, each in its own transaction; returns the versions applied.

    With `target`, stop after that version (to build a database at an earlier version).
    """
    with conn.transaction():
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version integer PRIMARY KEY, name text NOT NULL, "
                     "store text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())")
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('quantrac.migrate'))")
        done = {row[0] for row in conn.execute("SELECT version FROM schema_version")}
        use_timescale = decide_store(conn, use_timescale)
    applied = []
    for migration in plan_migrations(use_timescale):
        if migration.version in done:
            continue
        if target is not None and migration.version > target:
            break
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('quantrac.migrate'))")
            if conn.execute("SELECT 1 FROM schema_version WHERE version = %s", (migration.version,)).fetchone():
                continue
            conn.execute(migration.path.read_text(encoding="utf-8"))
            conn.execute("INSERT INTO schema_version (version, name, store) VALUES (%s, %s, %s)",
                         (migration.version, migration.name, STORE_TIMESCALEDB if use_timescale else STORE_POSTGRESQL))
        log.info("db.migrated", version=migration.version, name=migration.name, timescale=use_timescale)
        applied.append(migration.version)
    return applied


def migrate_on_start(settings: Settings) -> list[int]:
    """`quantrac db migrate` without the seed, for services started with `db_migrate_on_start`."""
    if not settings.db_migrate_on_start:
        return []
    with connect(settings.pg_dsn) as conn:
        applied = migrate(conn)
        log.info("db.migrated_on_start", applied=applied, version=schema_version(conn))
    return applied


def schema_version(conn: psycopg.Connection) -> int:
    """The highest migration applied to this database (0 when none)."""
    row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
    return int(row[0]) if row else 0


def store_kind(conn: psycopg.Connection) -> str:
    """'timescaledb' or 'postgresql', as recorded by the first migration."""
    row = conn.execute("SELECT store FROM schema_version ORDER BY version LIMIT 1").fetchone()
    return str(row[0]) if row else "none"


SeriesKey = tuple[str, str]
"""(station, parameter): a series of readings."""

KNOWN_SERIES = ("SELECT s.id, s.station_id, s.parameter FROM series s "
                "JOIN unnest(%s::text[], %s::text[]) AS k(station_id, parameter) USING (station_id, parameter)")
"""The ids of those of these series that exist (`readings` is keyed by series id and time: migration 0080)."""
NEW_SERIES = ("INSERT INTO series (station_id, parameter) SELECT * FROM unnest(%s::text[], %s::text[]) AS k "
              "ORDER BY 1, 2 ON CONFLICT DO NOTHING")
"""These series created (in key order, so that two sessions creating the same ones lock them in one order)."""
SERIES_OF = "SELECT id FROM series WHERE station_id = %s AND parameter = ANY(%s)"
"""A station's series ids among these parameters: `readings.series_id IN (...)` finds its readings by the key."""
STATION_SERIES = "SELECT id FROM series WHERE station_id = %s"
"""Every series id of a station."""


def series_columns(keys: Iterable[SeriesKey]) -> tuple[list[str], list[str]]:
    """The distinct series as the two arrays `KNOWN_SERIES` and `NEW_SERIES` take, in key order."""
    pairs = sorted(set(keys))
    return [k[0] for k in pairs], [k[1] for k in pairs]


def series_ids(conn: psycopg.Connection, keys: Iterable[SeriesKey]) -> dict[SeriesKey, int]:
    """The id of each of these series, created where missing (in the caller's transaction: a writer of readings
    that does not go through the worker's `ReadingWriter`, such as a test or a tool)."""
    columns = series_columns(keys)
    conn.execute(NEW_SERIES, columns)
    return {(station, parameter): id_ for id_, station, parameter in conn.execute(KNOWN_SERIES, columns).fetchall()}


def save_stations(conn: psycopg.Connection, stations: Mapping[str, Station]) -> int:
    """Insert or update the given stations; returns how many were written."""
    with conn.transaction():
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO stations (id, name, zone, facility, kind, expected_interval_s, spec) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s::jsonb) "
                "ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, zone = EXCLUDED.zone, facility = EXCLUDED.facility, "
                "kind = EXCLUDED.kind, expected_interval_s = EXCLUDED.expected_interval_s, spec = EXCLUDED.spec, "
                "retired_at = NULL, updated_at = now() WHERE stations.spec IS DISTINCT FROM EXCLUDED.spec "
                "OR stations.retired_at IS NOT NULL",
                [(s.id, s.name, s.zone, s.facility, s.kind.value, s.expected_interval_s,
                  orjson.dumps(s.model_dump(mode="json")).decode()) for s in stations.values()],
            )
    return len(stations)


def load_stations(conn: psycopg.Connection) -> dict[str, Station]:
    """The active stations of the registry, keyed by id."""
    rows = conn.execute("SELECT spec FROM stations WHERE retired_at IS NULL ORDER BY id").fetchall()
    stations = [Station.model_validate(row[0]) for row in rows]
    return {s.id: s for s in stations}


def load_station_record(conn: psycopg.Connection, station_id: str) -> tuple[Station, datetime | None] | None:
    """A station of the registry, active or retired, with its retirement time (None while active)."""
    row = conn.execute("SELECT spec, retired_at FROM stations WHERE id = %s", (station_id,)).fetchone()
    return None if row is None else (Station.model_validate(row[0]), row[1])


def load_registry_snapshot(conn: psycopg.Connection, changed_within_s: float | None = None,
                           parsed: dict[str, tuple[str, Station]] | None = None) -> RegistrySnapshot:
    """The active stations keyed by id and the ids of the retired ones; with `changed_within_s`, only those registered,
    changed or retired that many seconds ago or later (`updated_at`).

    With `parsed` (id → (hash of its record, Station), kept between calls), only the records whose hash moved are
    fetched and validated: a whole reload of 2,000 unchanged stations costs a list of hashes, not 2,000 JSON records
    made into models (about 0.3 s of the bridge's MQTT thread every `QUANTRAC_REGISTRY_REFRESH_S`)."""
    recent = changed_within_s is not None
    where = "WHERE updated_at > now() - make_interval(secs => %s) " if recent else ""
    params = (changed_within_s,) if recent else ()
    if parsed is None:
        rows = conn.execute(f"SELECT id, spec, retired_at IS NOT NULL FROM stations {where}ORDER BY id", params).fetchall()
        return RegistrySnapshot({sid: Station.model_validate(spec) for sid, spec, retired in rows if not retired},
                                frozenset(sid for sid, _, retired in rows if retired))
    hashes = conn.execute(f"SELECT id, md5(spec::text), retired_at IS NOT NULL FROM stations {where}ORDER BY id",
                          params).fetchall()
    moved = [sid for sid, digest, retired in hashes if not retired and parsed.get(sid, ("",))[0] != digest]
    if moved:
        for sid, digest, spec in conn.execute("SELECT id, md5(spec::text), spec FROM stations WHERE id = ANY(%s)", (moved,)):
            parsed[sid] = (digest, Station.model_validate(spec))
    if not recent:
        for sid in parsed.keys() - {sid for sid, _, retired in hashes if not retired}:
            del parsed[sid]
    return RegistrySnapshot({sid: parsed[sid][1] for sid, _, retired in hashes if not retired and sid in parsed},
                            frozenset(sid for sid, _, retired in hashes if retired))


def live_registry(settings: Settings) -> RegistryCache:
    """The registry as the bridge, the TT10 watcher and the worker see it: active stations, reloaded
    from PostgreSQL (`registry_refresh_s`, or at once on an unknown id), plus the retired ids; a reload validates
    only the records that changed since the last."""
    parsed: dict[str, tuple[str, Station]] = {}

    def snapshot(changed_within_s: float | None = None) -> RegistrySnapshot:
        with connect(settings.pg_dsn) as conn:
            return load_registry_snapshot(conn, changed_within_s, parsed)

    # A change older than two refresh periods (and a minute for transactions still open then) is in the last full load.
    recent_s = 2 * settings.registry_refresh_s + 60
    return RegistryCache(snapshot, settings.registry_refresh_s, settings.registry_miss_reload_s,
                         changes=lambda: snapshot(recent_s))


def _json_of(station: Station | None) -> str | None:
    return None if station is None else orjson.dumps(station.model_dump(mode="json")).decode()


def _audit(conn: psycopg.Connection, station_id: str, action: str, actor: str, before: Station | None,
           after: Station | None) -> None:
    conn.execute("INSERT INTO station_audit (station_id, action, actor, before, after) VALUES (%s, %s, %s, %s::jsonb, %s::jsonb)",
                 (station_id, action, actor, _json_of(before), _json_of(after)))


def save_station_audited(conn: psycopg.Connection, station: Station, actor: str) -> str:
    """Create or update (and un-retire) one station, recording the change and its actor; returns
    `created`, `updated` or `unchanged` (an identical active record writes no audit row)."""
    with conn.transaction():
        row = conn.execute("SELECT spec, retired_at FROM stations WHERE id = %s FOR UPDATE", (station.id,)).fetchone()
        before = None if row is None else Station.model_validate(row[0])
        if before == station and row is not None and row[1] is None:
            return "unchanged"
        save_stations(conn, {station.id: station})
        action = "created" if before is None else "updated"
        _audit(conn, station.id, action, actor, before, station)
    log.info("registry.station_saved", station=station.id, action=action, actor=actor)
    return action


def retire_station(conn: psycopg.Connection, station_id: str, actor: str) -> bool:
    """Retire a station: its history stays, new readings are refused. False when it is unknown or already retired."""
    with conn.transaction():
        row = conn.execute("UPDATE stations SET retired_at = now(), updated_at = now() WHERE id = %s AND retired_at IS NULL "
                           "RETURNING spec", (station_id,)).fetchone()
        if row is None:
            return False
        before = Station.model_validate(row[0])
        _audit(conn, station_id, "retired", actor, before, None)
    log.info("registry.station_retired", station=station_id, actor=actor)
    return True


def station_audit(conn: psycopg.Connection, station_id: str) -> list[dict[str, object]]:
    """The registry changes of one station, oldest first."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute("SELECT id, station_id, action, actor, at, before, after FROM station_audit WHERE station_id = %s "
                           "ORDER BY id", (station_id,)).fetchall()


def connect(dsn: str, **kwargs: object) -> psycopg.Connection:
    """An autocommit connection; callers open transactions explicitly."""
    return psycopg.connect(dsn, autocommit=True, **kwargs)  # type: ignore[arg-type]  # psycopg's stubs give connect()'s named options their own types; the caller's **kwargs (object) are passed through unchecked


def where_clause(*filters: tuple[str, object]) -> tuple[str, list[object]]:
    """`WHERE ...` and its parameters from (SQL condition, value) pairs; a pair whose value is None
    is left out, and a condition without a `%s` adds no parameter. Empty string when none apply."""
    clauses: list[str] = []
    params: list[object] = []
    for condition, value in filters:
        if value is None:
            continue
        clauses.append(condition)
        if "%s" in condition:
            params.append(value)
    return (f"WHERE {' AND '.join(clauses)}" if clauses else ""), params
