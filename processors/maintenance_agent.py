"""Store maintenance inside the worker: at start and then periodically (leader only).

Creates day partitions ahead, applies retention and refreshes TimescaleDB's continuous
aggregates for late rows; the work is `processors.partitions.run_maintenance`, run in a thread
so the event loop keeps consuming. A failed pass is logged and retried at the next tick.
"""

from __future__ import annotations

import asyncio

import structlog

from processors.app import app, settings
from processors.partitions import run_maintenance
from quantrac.failures import store_fix

log = structlog.get_logger(__name__)


async def _maintain() -> None:
    try:
        await asyncio.to_thread(run_maintenance, settings.pg_dsn, settings.retention_days, settings.partitions_ahead_days)
    except Exception as exc:  # a maintenance failure must not stop the worker
        log.error("store.maintenance_failed", error=str(exc),
                  fix=store_fix(exc, "check PostgreSQL (quantrac stack status) and `quantrac db retention`; "
                                     "retried at the next tick"))


@app.task(on_leader=True)
async def maintain_at_start() -> None:
    """Drop expired partitions and refresh aggregates once when the worker starts."""
    await _maintain()


@app.timer(interval=settings.maintenance_interval_s, on_leader=True)
async def maintain_periodically() -> None:
    """The same maintenance on the configured interval."""
    await _maintain()
