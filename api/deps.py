"""Dependencies shared by the routes: settings, a pooled database connection, display time zone."""

from __future__ import annotations

from datetime import date, datetime, timezone
from typing import Annotated, Any, Iterator
from zoneinfo import ZoneInfo

import psycopg
from fastapi import Depends, Request
from psycopg_pool import ConnectionPool
from pydantic import AfterValidator, AwareDatetime

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


EARLIEST = datetime(1900, 1, 1, tzinfo=timezone.utc)
LATEST = datetime(9998, 12, 31, tzinfo=timezone.utc)
"""The instants a request may name. Python's calendar ends with year 9999, so an instant at its edge cannot be shown
in a time zone east of UTC or rounded to its day ("to=9999-12-31T23:59:59Z" answered 500)."""


def _in_calendar(ts: datetime) -> datetime:
    try:
        utc = ts.astimezone(timezone.utc)
    except OverflowError:
        utc = None
    if utc is None or not EARLIEST <= utc <= LATEST:
        raise ValueError(f"{ts.isoformat()} is outside the instants this API handles: {EARLIEST:%Y-%m-%d} to "
                         f"{LATEST:%Y-%m-%d} (UTC)")
    return ts


Instant = Annotated[AwareDatetime, AfterValidator(_in_calendar)]
"""A timezone-aware instant a request names (query or body), within `EARLIEST` to `LATEST`."""


def _day_in_calendar(day: date) -> date:
    if not EARLIEST.date() <= day <= LATEST.date():
        raise ValueError(f"{day.isoformat()} is outside the days this API handles: {EARLIEST:%Y-%m-%d} to {LATEST:%Y-%m-%d}")
    return day


Day = Annotated[date, AfterValidator(_day_in_calendar)]
"""A local day a request names (YYYY-MM-DD), within the days of `EARLIEST` to `LATEST`."""


def local_time(ts: datetime | None, settings: Settings) -> datetime | None:
    """The instant shown in the display time zone (Asia/Ho_Chi_Minh by default); in UTC when that zone's calendar
    cannot hold it (a row written before requests were bounded, at the calendar's edge)."""
    if ts is None:
        return None
    try:
        return ts.astimezone(ZoneInfo(settings.display_timezone))
    except OverflowError:
        return ts.astimezone(timezone.utc)
