"""`quantrac db`: the database schema (migrations) and retention."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from cli.common import setup
from quantrac.settings import get_settings

db_app = typer.Typer(help="Database schema and registry.", no_args_is_help=True)


@db_app.command("migrate")
def db_migrate(seed: Annotated[bool, typer.Option(help="Also load the station registry seed.")] = True) -> None:
    """Apply pending migrations and load the station registry seed."""
    setup("db")
    from quantrac.db import connect, migrate, save_stations, schema_version, store_kind
    from quantrac.registry import load_registry
    s = get_settings()
    with connect(s.pg_dsn) as conn:
        applied = migrate(conn)
        if seed:
            save_stations(conn, load_registry(s.registry_file, s.limits_dir))
        typer.echo(f"schema version {schema_version(conn)} ({store_kind(conn)}); applied now: {applied or 'none'}")


@db_app.command("retention")
def db_retention(
    days: Annotated[Optional[int], typer.Option(min=1, help="Keep this many days; default QUANTRAC_RETENTION_DAYS.")] = None,
) -> None:
    """Drop readings (whole day partitions) and rollups older than the retention; on TimescaleDB install the policies."""
    setup("db")
    from processors.partitions import apply_retention, ensure_partitions_ahead
    from quantrac.db import connect, store_kind
    s = get_settings()
    with connect(s.pg_dsn) as conn:
        if store_kind(conn) == "postgresql":
            ensure_partitions_ahead(conn, s.partitions_ahead_days)
        result = apply_retention(conn, days if days is not None else s.retention_days)
    typer.echo(f"{result.store}: cutoff {result.cutoff.isoformat()}; dropped partitions: "
               f"{result.dropped_partitions or 'none'}; rollup rows deleted: {result.deleted_rollup_rows}")
