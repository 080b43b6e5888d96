"""Authentication and roles over the whole route table: 401 without a key, 403 for every forbidden pair."""

from __future__ import annotations

import importlib
import pkgutil
import re
from typing import Any, Callable

import psycopg
import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from api.auth import PERMISSIONS, ROLES, create_key, lookup
import api.main
import api.routes
from api.main import create_app

pytestmark = pytest.mark.integration

PUBLIC_PATHS = {"/healthz"}


def required_permission(route: APIRoute) -> str | None:
    """The permission a route declares through `require(...)` anywhere in its dependency tree."""
    stack = list(route.dependant.dependencies)
    while stack:
        dep = stack.pop()
        found = getattr(dep.call, "required_permission", None)
        if found:
            return found
        stack.extend(dep.dependencies)
    return None


def route_table() -> list[tuple[str, str, str | None]]:
    """(method, path, permission) of every operation of every router in api/routes that the app includes."""
    app = create_app()
    served = set(app.openapi()["paths"])
    table = []
    for info in pkgutil.iter_modules(api.routes.__path__):
        module = importlib.import_module(f"api.routes.{info.name}")
        router = getattr(module, "router", None)
        if router is None or module in api.main.PUBLIC:
            continue
        for route in router.routes:
            if not isinstance(route, APIRoute):
                continue
            path = re.sub(r":\w+}", "}", route.path)
            assert path in served, f"{path} of api/routes/{info.name}.py is not served by the app"
            for method in sorted(route.methods - {"HEAD"}):
                table.append((method, path, api.main.NEEDS.get(module) or required_permission(route)))
    return table


ROUTES = route_table()


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)


def test_route_table_is_not_empty_and_has_guarded_operations() -> None:
    assert len(ROUTES) >= 15
    assert {p for _, _, p in ROUTES} >= {"alerts.write", "silences.write", "keys", "export", "history"}


@pytest.mark.parametrize(("method", "path", "permission"), ROUTES,
                         ids=lambda v: str(v))
def test_no_credential_is_401(api_as: Callable[[str | None], TestClient], method: str, path: str,
                              permission: str | None) -> None:
    response = api_as(None).request(method, concrete(path), json={})
    assert response.status_code == 401, response.text
    assert "X-API-Key" in response.json()["detail"]


FORBIDDEN = [(role, m, p, perm) for (m, p, perm) in ROUTES for role in ROLES
             if perm is not None and perm not in PERMISSIONS[role]]


@pytest.mark.parametrize(("role", "method", "path", "permission"), FORBIDDEN, ids=lambda v: str(v))
def test_forbidden_role_is_403(api_as: Callable[[str | None], TestClient], role: str, method: str, path: str,
                               permission: str) -> None:
    response = api_as(role).request(method, concrete(path), json={})
    assert response.status_code == 403, response.text
    assert f"role {role} may not" in response.json()["detail"]


def test_every_role_pair_is_covered() -> None:
    assert {r for r, *_ in FORBIDDEN} == {"operator", "analyst"}
    assert len(FORBIDDEN) >= 8


ALLOWED_GETS = [(role, p) for (m, p, perm) in ROUTES for role in ROLES
                if m == "GET" and "{" not in p and not p.endswith("/stream") and p not in PUBLIC_PATHS
                and (perm is None or perm in PERMISSIONS[role])]


@pytest.mark.parametrize(("role", "path"), ALLOWED_GETS, ids=lambda v: str(v))
def test_allowed_role_gets_through(api_as: Callable[[str | None], TestClient], role: str, path: str) -> None:
    response = api_as(role).get(path)
    assert response.status_code not in (401, 403), response.text


def test_healthz_needs_no_credential(api_as: Callable[[str | None], TestClient]) -> None:
    assert api_as(None).get("/healthz").status_code in (200, 503)


def test_bearer_header_and_unknown_or_revoked_keys(api: TestClient, api_as: Callable[[str | None], TestClient],
                                                   db: psycopg.Connection) -> None:
    key, key_id = create_key(db, "bearer-user", "analyst", "tests")
    anon = api_as(None)
    assert anon.get("/api/v1/alerts", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    assert anon.get("/api/v1/alerts", headers={"X-API-Key": key[:-2] + "xx"}).status_code == 401
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


def test_dashboard_page_loads_without_a_key_but_its_data_does_not(api_as: Callable[[str | None], TestClient]) -> None:
    anon = api_as(None)
    page = anon.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
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
