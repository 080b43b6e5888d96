"""A scratch database of a test's own on a session server: created empty, dropped afterwards."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from psycopg import sql

from quantrac.db import connect
from quantrac.settings import Settings


@contextmanager
def scratch_database(server: Settings, name: str) -> Iterator[str]:
    """The DSN of a new empty database `name` on the server of `server` (dropped first if left by a run, and after)."""
    admin_dsn = server.pg_dsn.replace(f"dbname={server.pg_database}", "dbname=postgres")
    with connect(admin_dsn) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield server.pg_dsn.replace(f"dbname={server.pg_database}", f"dbname={name}")
        finally:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
