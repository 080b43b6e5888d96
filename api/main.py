"""The FastAPI application for the supervision centre and analysts."""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator

import psycopg
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from psycopg_pool import ConnectionPool

from api.auth import authenticated, require
from api.routes import alerts, completeness, health, history, keys, metrics, silences, stations, stream, summary
from api.routes import deadletters, delivery
from quantrac import __version__
from quantrac.settings import Settings, get_settings

DASHBOARD = Path(__file__).resolve().parent / "dashboard"
PUBLIC = (health,)
"""Routers that answer without a credential; every other one needs an API key."""
NEEDS = {history: "history"}
"""Routers that need a permission beyond a valid key (see api/auth.py for the roles)."""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        """Open the connection pool, unless an outer run of the lifespan already did (an in-process
        client such as schemathesis's runs it again inside the server's); only its opener closes it."""
        current: ConnectionPool | None = getattr(app.state, "pool", None)
        owned = current is None or current.closed
        if owned:
            current = ConnectionPool(settings.pg_dsn, min_size=1, max_size=8, kwargs={"autocommit": True}, open=False)
            current.open(wait=False)
            app.state.pool = current
        try:
            yield
        finally:
            if owned and current is not None:
                current.close()

    app = FastAPI(title="quantrac", version=__version__, lifespan=lifespan,
                  description="Live alerts and time-series history of industrial discharge monitoring stations.")
    app.state.settings = settings
    for module in (health, stations, history, stream, alerts, silences, summary, keys, metrics, completeness, deadletters, delivery):
        deps = [] if module in PUBLIC else [Depends(authenticated)]
        if module in NEEDS:
            deps.append(Depends(require(NEEDS[module])))
        app.include_router(module.router, dependencies=deps)

    @app.exception_handler(psycopg.errors.DataError)
    async def unstorable_value(request: Request, exc: psycopg.errors.DataError) -> JSONResponse:
        # Same shape as FastAPI's own 422, so clients handle one error format.
        return JSONResponse({"detail": [{"type": "value_error", "loc": ["request"], "input": None,
                                         "msg": f"a value in the request cannot be used by the database ({exc}); "
                                                "remove control characters such as NUL"}]}, 422)

    app.mount("/", StaticFiles(directory=DASHBOARD, html=True), name="dashboard")
    return app
