"""Dependencies shared by the routes: settings, a pooled database connection, display time zone."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Iterator
from zoneinfo import ZoneInfo

import psycopg
from fastapi import Depends, Request
from psycopg_pool import ConnectionPool

from quantrac.settings import Settings


def get_settings_dep(request: Request) -> Settings:
    """The settings the app was created with (not re-read from the environment per request)."""
    return request.app.state.settings


def get_conn(request: Request) -> Iterator[psycopg.Connection[Any]]:
    """A connection from the app's pool (autocommit), returned to the pool when the request ends."""
    pool: ConnectionPool = request.app.state.pool
    with pool.connection() as conn:
        yield conn


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
ERRORS: dict[int | str, dict[str, Any]] = {401: {"description": "No API key, or an unknown or revoked one"},
          403: {"description": "The key's role does not allow this operation"}}
"""Error responses every authenticated route can give (documented in OpenAPI)."""
ConnDep = Annotated[psycopg.Connection, Depends(get_conn)]


def local_time(ts: datetime | None, settings: Settings) -> datetime | None:
    """The instant shown in the display time zone (Asia/Ho_Chi_Minh by default)."""
    return None if ts is None else ts.astimezone(ZoneInfo(settings.display_timezone))
