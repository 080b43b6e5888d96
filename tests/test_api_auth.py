"""Authentication and roles over the app's whole route table: every route but /healthz answers 401 without a
credential (pages with a Basic challenge for browsers), 403 for every forbidden role/operation pair."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any, Callable

import psycopg
import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from starlette.routing import BaseRoute

from api.auth import METRICS_FILE_KEY, PERMISSIONS, ROLES, create_key, lookup, metrics_key_principal
from api.main import create_app

pytestmark = pytest.mark.integration

PUBLIC_PATHS = {"/healthz"}
PAGES = {"/docs", "/redoc", "/openapi.json", "/docs-assets/{name}", "/{path:path}"}
"""Routes a person opens in a browser: their 401 asks for HTTP Basic."""


def permissions(route: Any) -> set[str]:
    """Every permission a route declares through `require(...)` anywhere in its dependency tree."""
    found: set[str] = set()
    stack = list(route.dependant.dependencies)
    while stack:
        dep = stack.pop()
        if getattr(dep.call, "required_permission", None):
            found.add(dep.call.required_permission)  # type: ignore[union-attr]
        stack.extend(dep.dependencies)
    return found


def served(routes: list[BaseRoute]) -> list[Any]:
    """Every operation as the app serves it, the dependencies of `include_router` included (FastAPI
    0.16x keeps an included router as one entry that expands to its effective routes)."""
    found: list[Any] = []
    for route in routes:
        if hasattr(route, "effective_route_contexts"):
            found.extend(route.effective_route_contexts())
        else:
            assert isinstance(route, APIRoute), f"{route!r} is not an APIRoute: a mount or plain route has no key check"
            found.append(route)
    return found


def route_table(routes: list[BaseRoute]) -> list[tuple[str, str, frozenset[str]]]:
    """(method, path, permissions) of every operation the app serves, pages and documentation included."""
    return [(method, route.path, frozenset(permissions(route)))
            for route in served(routes) for method in sorted(set(route.methods) - {"HEAD"})]


ROUTES = route_table(create_app().routes)


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)


def basic(key: str, user: str = "duty-officer") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{key}".encode()).decode()}


def wrong(key: str) -> str:
    """The key with its last character changed: a key ending in "xx" once made `key[:-2] + "xx"` the same key."""
    return key[:-1] + ("a" if key[-1] != "a" else "b")


def test_route_table_covers_the_api_the_pages_and_the_docs() -> None:
    paths = {p for _, p, _ in ROUTES}
    assert len(ROUTES) >= 20 and PAGES | PUBLIC_PATHS | {"/metrics"} <= paths
    assert set().union(*(p for _, _, p in ROUTES)) >= {"read", "metrics", "alerts.write", "silences.write", "keys",
                                                       "export", "history"}
    unguarded = {p for _, p, perms in ROUTES if not perms}
    assert unguarded == PUBLIC_PATHS


@pytest.mark.parametrize(("method", "path", "permission"), ROUTES, ids=lambda v: str(v))
def test_no_credential_is_401_except_healthz(api_as: Callable[[str | None], TestClient], method: str, path: str,
                                             permission: frozenset[str]) -> None:
    response = api_as(None).request(method, concrete(path), json={})
    if path in PUBLIC_PATHS:
        assert response.status_code in (200, 503), response.text
        return
    assert response.status_code == 401, response.text
    assert "X-API-Key" in response.json()["detail"]
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith('Basic realm="quantrac"') if path in PAGES else challenge == "Bearer"


@pytest.mark.parametrize("path", ["/", "/index.html", "/app.js", "/style.css", "/docs", "/redoc", "/openapi.json",
                                  "/docs-assets/swagger-ui-bundle.js", "/docs-assets/redoc.standalone.js", "/does-not-exist", "/metrics", "/api/v1/alerts"])
def test_pages_files_and_docs_need_a_key_and_open_with_basic(api_as: Callable[[str | None], TestClient],
                                                             db: psycopg.Connection, path: str) -> None:
    assert api_as(None).get(path).status_code == 401
    key, _ = create_key(db, "browser-user", "operator", "tests")
    response = api_as(None).get(path, headers=basic(key))
    assert response.status_code == (404 if path == "/does-not-exist" else 200), response.text
    assert api_as(None).get(path, headers=basic(wrong(key))).status_code == 401
    assert api_as(None).get(path, headers={"Authorization": "Basic !!not-base64"}).status_code == 401


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_docs_pages_load_nothing_from_another_host(api: TestClient, page: str) -> None:
    """The supervision centre may have no internet: every script and style the docs use is served here."""
    import re

    html = api.get(page).text
    sources = re.findall(r'(?:src|href)=["\']([^"\']+)["\']', html) + re.findall(r'url: ["\']([^"\']+)["\']', html)
    assert sources and all(s.startswith("/") and not s.startswith("//") for s in sources), sources
    for source in sources:
        assert api.get(source).status_code == 200, source


FORBIDDEN = [(role, m, p, perm) for (m, p, perms) in ROUTES for role in ROLES for perm in sorted(perms)
             if perm not in PERMISSIONS[role]]


@pytest.mark.parametrize(("role", "method", "path", "permission"), FORBIDDEN, ids=lambda v: str(v))
def test_forbidden_role_is_403(api_as: Callable[[str | None], TestClient], role: str, method: str, path: str,
                               permission: str) -> None:
    response = api_as(role).request(method, concrete(path), json={})
    assert response.status_code == 403, response.text
    assert f"role {role} may not" in response.json()["detail"]


def test_every_role_pair_is_covered() -> None:
    assert {r for r, *_ in FORBIDDEN} == {"operator", "analyst", "metrics"}
    metrics_only = {(m, p) for r, m, p, _ in FORBIDDEN if r == "metrics"}
    assert metrics_only == {(m, p) for m, p, perms in ROUTES if perms and "metrics" not in perms}


ALLOWED_GETS = [(role, p) for (m, p, perms) in ROUTES for role in ROLES
                if m == "GET" and "{" not in p and not p.endswith("/stream") and p not in PUBLIC_PATHS
                and perms <= PERMISSIONS[role]]


@pytest.mark.parametrize(("role", "path"), ALLOWED_GETS, ids=lambda v: str(v))
def test_allowed_role_gets_through(api_as: Callable[[str | None], TestClient], role: str, path: str) -> None:
    response = api_as(role).get(path)
    assert response.status_code not in (401, 403), response.text


def test_metrics_key_file_reads_only_metrics(stack: Any, tmp_path: Path) -> None:
    key_file = tmp_path / "metrics.key"
    key_file.write_text("prometheus-scrape-key-1\n")
    with TestClient(create_app(stack.model_copy(update={"api_metrics_key_file": key_file}))) as client:
        bearer = {"Authorization": "Bearer prometheus-scrape-key-1"}
        assert client.get("/metrics", headers=bearer).status_code == 200
        assert client.get("/api/v1/alerts", headers=bearer).status_code == 403
        assert client.get("/metrics", headers={"Authorization": "Bearer prometheus-scrape-key-2"}).status_code == 401
        key_file.write_text("prometheus-scrape-key-2")  # rotated: the next scrape uses the new key
        assert client.get("/metrics", headers=bearer).status_code == 401
        assert client.get("/metrics", headers={"Authorization": "Bearer prometheus-scrape-key-2"}).status_code == 200


def test_metrics_key_file_missing_or_empty_disables_only_that_key(tmp_path: Path) -> None:
    assert metrics_key_principal(None, "k") is None
    assert metrics_key_principal(tmp_path / "missing", "k") is None
    (tmp_path / "empty").write_text("\n")
    assert metrics_key_principal(tmp_path / "empty", "") is None
    (tmp_path / "k").write_text("k")
    assert metrics_key_principal(tmp_path / "k", "k") == METRICS_FILE_KEY


def test_healthz_needs_no_credential(api_as: Callable[[str | None], TestClient]) -> None:
    assert api_as(None).get("/healthz").status_code in (200, 503)


def test_bearer_header_and_unknown_or_revoked_keys(api: TestClient, api_as: Callable[[str | None], TestClient],
                                                   db: psycopg.Connection) -> None:
    key, key_id = create_key(db, "bearer-user", "analyst", "tests")
    anon = api_as(None)
    assert anon.get("/api/v1/alerts", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    assert anon.get("/api/v1/alerts", headers={"X-API-Key": wrong(key)}).status_code == 401
    assert anon.get("/api/v1/alerts", headers={"X-API-Key": "not-a-key"}).status_code == 401
    assert api.delete(f"/api/v1/keys/{key_id}").status_code == 200
    assert anon.get("/api/v1/alerts", headers={"X-API-Key": key}).status_code == 401


def test_keys_are_stored_hashed_and_created_through_the_api(api: TestClient, db: psycopg.Connection) -> None:
    response = api.post("/api/v1/keys", json={"name": "duty-1", "role": "operator"})
    assert response.status_code == 201
    body: dict[str, Any] = response.json()
    assert body["created_by"] == "test-admin (admin)" and body["key"].startswith("qk_")
    stored = db.execute("SELECT key_hash FROM api_keys WHERE id = %s", (body["id"],)).fetchone()
    assert stored is not None and body["key"] not in stored[0]
    principal = lookup(db, body["key"])
    assert principal is not None and principal.role == "operator"
    assert all("key" not in k for k in api.get("/api/v1/keys").json()["data"])


def test_a_browser_credential_reaches_the_data_and_the_stream_too(api_as: Callable[[str | None], TestClient],
                                                                   db: psycopg.Connection) -> None:
    key, _ = create_key(db, "browser-analyst", "analyst", "tests")
    anon = api_as(None)
    page = anon.get("/", headers=basic(key, user=""))
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert anon.get("/api/v1/summary/stations", headers=basic(key)).status_code == 200
    assert anon.get("/api/v1/alerts/export.csv", headers=basic(key)).status_code == 200
    assert anon.get("/api/v1/summary/stations").status_code == 401


def test_local_credentials_are_private_and_reused(db: psycopg.Connection, tmp_path: Any) -> None:
    from api.auth import ensure_local_credentials
    path = tmp_path / "run" / "credentials.json"
    first = ensure_local_credentials(db, path)
    assert set(first) == {"admin", "operator"} and path.stat().st_mode & 0o777 == 0o600
    assert ensure_local_credentials(db, path) == first
    assert lookup(db, first["operator"]).role == "operator"  # type: ignore[union-attr]
    db.execute("UPDATE api_keys SET revoked_at = now() WHERE prefix = %s", (first["admin"].split("_")[1],))
    again = ensure_local_credentials(db, path)
    assert again["admin"] != first["admin"] and again["operator"] == first["operator"]
