"""The FastAPI application for the supervision centre and analysts."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator

from fastapi import FastAPI
from psycopg_pool import ConnectionPool

from api.routes import alerts, health, stations
from quantrac import __version__
from quantrac.settings import Settings, get_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = ConnectionPool(settings.pg_dsn, min_size=1, max_size=8, kwargs={"autocommit": True}, open=False)
        pool.open(wait=False)
        app.state.pool = pool
        try:
            yield
        finally:
            pool.close()

    app = FastAPI(title="quantrac", version=__version__, lifespan=lifespan,
                  description="Live alerts and time-series history of industrial discharge monitoring stations.")
    app.state.settings = settings
    for module in (health, stations, alerts):
        app.include_router(module.router)
    return app
