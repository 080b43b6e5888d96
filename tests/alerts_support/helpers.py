"""Helpers for the alert tests: conditions, applying them through the real store, a test station."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from typing import Any, Sequence

import psycopg

from alerts.alerts_table import apply_conditions
from alerts.lifecycle import Policy
from alerts.rules import Condition
from quantrac.db import save_stations
from quantrac.domain import Severity, Station
from tests.utils.builders import make_station

NOW = datetime.now(timezone.utc).replace(microsecond=0)


def condition(station_id: str, value: float, *, minutes: float = 0, rule: str = "exceedance", parameter: str = "COD",
              limit: float = 100.0, active: bool | None = None, severity: Severity = Severity.CRITICAL,
              score: float | None = None) -> Condition:
    """A condition; with `score`, an anomaly's: the score is judged against `limit`, `value` is the reading's."""
    judged = value if score is None else score
    if active is None:
        active = judged < limit if rule == "below_minimum" else judged > limit
    return Condition(station_id, parameter, rule, "instant", severity, value, limit, "test limit",
                     NOW + timedelta(minutes=minutes), f"station {station_id}, {parameter}: {judged:g} vs {limit:g}", active,
                     score=score)


def apply(dsn: str, conditions: Sequence[Condition], policy: Policy | None = None,
          clock: Any = None) -> list[dict[str, Any]]:
    """Run `apply_conditions` in one transaction on a fresh async connection, as the worker does."""
    async def run() -> list[dict[str, Any]]:
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            async with conn.transaction():
                kwargs: dict[str, Any] = {"policy": policy or Policy(0.1, timedelta(minutes=10))}
                if clock is not None:
                    kwargs["clock"] = clock
                return await apply_conditions(conn, conditions, **kwargs)
    return asyncio.run(run())


def new_station(conn: psycopg.Connection, zone: str = "KCN Test") -> Station:
    station = make_station(zone=zone)
    save_stations(conn, {station.id: station})
    return station


def events(conn: psycopg.Connection, alert_id: int) -> list[tuple[str, str, str]]:
    return [(r[0], r[1], r[2]) for r in conn.execute(
        "SELECT kind, actor, status FROM alert_events WHERE alert_id = %s ORDER BY id", (alert_id,))]


def store_readings(dsn: str, readings: Sequence[Any]) -> None:
    """Write readings with the worker's own writer (it creates the day partitions)."""
    from processors.reading_writer import ReadingWriter

    async def run() -> None:
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            async with conn.transaction():
                await ReadingWriter().write(conn, readings)
    asyncio.run(run())
