"""The FastAPI application for the supervision centre and analysts."""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

import fastapi_offline
import psycopg
from fastapi import Depends, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from psycopg_pool import ConnectionPool

from api.auth import browser_authenticated, require
from api.routes import (
    alerts,
    completeness,
    deadletters,
    delivery,
    health,
    history,
    keys,
    metrics,
    registry_admin,
    silences,
    stations,
    stream,
    summary,
)
from quantrac import __version__
from quantrac.settings import Settings, get_settings

DASHBOARD = Path(__file__).resolve().parent / "dashboard"
DOCS_ASSETS = Path(fastapi_offline.__file__).resolve().parent / "static"
PUBLIC = (health,)
"""Routers that answer without a credential; every other route needs an API key."""
NEEDS = {history: "history", metrics: "metrics"}
"""Routers that need another permission than "read" (see api/auth.py for the roles)."""
AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "No API key, or an unknown or revoked one",
          "content": {"application/json": {"example": {"detail": "an API key is required: send X-API-Key: <key>, ..."}}}},
    403: {"description": "The key's role does not allow this operation",
          "content": {"application/json": {"example": {"detail": "role analyst may not do this (alerts.write); "
                                                                 "it needs a key with role operator or admin"}}}},
}
"""Documented on every route that needs a key (a router's own description of them wins)."""
METRICS_EXAMPLE = '# HELP quantrac_alerts Alerts by status\n# TYPE quantrac_alerts gauge\nquantrac_alerts{status="open"} 3.0\n'
BROWSER = [Depends(require("read", browser_authenticated))]
"""Pages a person opens: a 401 there asks the browser for the key (HTTP Basic)."""


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API app: each router behind its permission, the docs and dashboard behind the key; settings from the environment."""
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

    app = FastAPI(title="quantrac", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None, description="Live alerts and time-series history of industrial discharge monitoring stations.")
    app.state.settings = settings
    for module in (health, stations, history, stream, alerts, silences, summary, keys, metrics, completeness, deadletters, delivery,
                   registry_admin):
        if module in PUBLIC:
            app.include_router(module.router)
            continue
        responses = dict(AUTH_ERRORS)
        if module is metrics:
            responses[200] = {"content": {"text/plain": {"example": METRICS_EXAMPLE}},
                              "description": "Prometheus text exposition format (scrape with a `metrics` key)"}
        app.include_router(module.router, dependencies=[Depends(require(NEEDS.get(module, "read")))], responses=responses)

    @app.exception_handler(psycopg.errors.DataError)
    async def unstorable_value(request: Request, exc: psycopg.errors.DataError) -> JSONResponse:
        # Same shape as FastAPI's own 422, so clients handle one error format.
        return JSONResponse({"detail": [{"type": "value_error", "loc": ["request"], "input": None,
                                         "msg": f"a value in the request cannot be used by the database ({exc}); "
                                                "remove control characters such as NUL"}]}, 422)

    _add_pages(app)
    return app


def _add_pages(app: FastAPI) -> None:
    """The API documentation and the dashboard, behind the same key as the API (added last: the
    dashboard's catch-all path must not shadow an API route)."""
    title = f"{app.title} {app.version}"

    @app.get("/openapi.json", include_in_schema=False, dependencies=BROWSER)
    def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=BROWSER)
    def swagger() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{title} – API",
                                   swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs-assets/swagger-ui.css",
                                   swagger_favicon_url="/docs-assets/favicon.png")

    @app.get("/redoc", include_in_schema=False, dependencies=BROWSER)
    def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url="/openapi.json", title=f"{title} – API",
                              redoc_js_url="/docs-assets/redoc.standalone.js", redoc_favicon_url="/docs-assets/favicon.png",
                              with_google_fonts=False)

    docs_assets = StaticFiles(directory=DOCS_ASSETS)

    @app.get("/docs-assets/{name}", include_in_schema=False, dependencies=BROWSER)
    async def docs_asset(name: str, request: Request) -> Response:
        """Swagger UI and ReDoc from the fastapi-offline package: the machine may have no internet."""
        return await docs_assets.get_response(name, request.scope)

    files = StaticFiles(directory=DASHBOARD, html=True)

    @app.api_route("/{path:path}", methods=["GET", "HEAD"], include_in_schema=False, dependencies=BROWSER)
    async def dashboard(path: str, request: Request) -> Response:
        """The dashboard's page and files (404 for anything else)."""
        return await files.get_response(path or ".", request.scope)
