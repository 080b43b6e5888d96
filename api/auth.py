"""API keys and roles.

A key looks like `qk_<prefix>_<secret>`; the database keeps the prefix (to find the row) and the
SHA-256 of the whole key (keys are random, 192 bits, so a fast hash is enough). A request presents
it as `X-API-Key: <key>` or `Authorization: Bearer <key>`. Roles:

- operator: read, acknowledge / resolve / comment alerts, manage silences;
- analyst: read, history and export;
- admin: everything, including keys (and stations and limits).

Routers included with `authenticated` (every one but health) need a valid key; a route that
needs more declares `Depends(require(permission))`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable

import psycopg
from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

ROLES = ("operator", "analyst", "admin")
PERMISSIONS: dict[str, frozenset[str]] = {
    "operator": frozenset({"read", "alerts.write", "silences.write"}),
    "analyst": frozenset({"read", "history", "export"}),
    "admin": frozenset({"read", "alerts.write", "silences.write", "history", "export", "keys", "stations.write",
                        "limits.write"}),
}

_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="API key, e.g. `qk_1a2b3c4d_...`.")
_bearer = HTTPBearer(auto_error=False, description="The same API key as a bearer token.")


@dataclass(frozen=True)
class Principal:
    key_id: int
    name: str
    role: str

    @property
    def actor(self) -> str:
        """How changes by this key are recorded."""
        return f"{self.name} ({self.role})"

    def can(self, permission: str) -> bool:
        return permission in PERMISSIONS.get(self.role, frozenset())


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _prefix_of(key: str) -> str | None:
    parts = key.split("_")
    return parts[1] if len(parts) == 3 and parts[0] == "qk" else None


def create_key(conn: psycopg.Connection[Any], name: str, role: str, created_by: str) -> tuple[str, int]:
    """A new key (returned once, never stored in clear) and its id."""
    if role not in ROLES:
        raise ValueError(f"role {role!r} is not one of {', '.join(ROLES)}")
    prefix = secrets.token_hex(4)
    key = f"qk_{prefix}_{secrets.token_urlsafe(24).replace('_', '-')}"
    row = conn.execute("INSERT INTO api_keys (name, role, prefix, key_hash, created_by) VALUES (%s, %s, %s, %s, %s) "
                       "RETURNING id", (name, role, prefix, hash_key(key), created_by)).fetchone()
    assert row is not None
    return key, int(row[0])


def lookup(conn: psycopg.Connection[Any], key: str) -> Principal | None:
    prefix = _prefix_of(key)
    if prefix is None:
        return None
    row = conn.execute("SELECT id, name, role, key_hash FROM api_keys WHERE prefix = %s AND revoked_at IS NULL",
                       (prefix,)).fetchone()
    if row is None or not hmac.compare_digest(row[3], hash_key(key)):
        return None
    return Principal(int(row[0]), row[1], row[2])


_UNAUTHENTICATED = {"WWW-Authenticate": "Bearer"}


def authenticated(
    request: Request,
    api_key: Annotated[str | None, Security(_api_key)] = None,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)] = None,
) -> Principal:
    """The caller's key; 401 when missing or unknown."""
    key = api_key or (bearer.credentials if bearer else None)
    if not key:
        raise HTTPException(401, "an API key is required: send X-API-Key: <key> or Authorization: Bearer <key> "
                                 "(create one with `quantrac keys create --role operator --name <you>`)",
                            headers=_UNAUTHENTICATED)
    cached = getattr(request.state, "principal", None)
    if isinstance(cached, Principal):
        return cached
    with request.app.state.pool.connection() as conn:
        principal = lookup(conn, key)
    if principal is None:
        raise HTTPException(401, "unknown or revoked API key; ask an admin for a new one", headers=_UNAUTHENTICATED)
    request.state.principal = principal
    return principal


def require(permission: str) -> Callable[[Principal], Principal]:
    """Dependency: the caller's role must grant `permission`, else 403 naming the roles that do."""
    def check(principal: Annotated[Principal, Depends(authenticated)]) -> Principal:
        if not principal.can(permission):
            allowed = [r for r in ROLES if permission in PERMISSIONS[r]]
            raise HTTPException(403, f"role {principal.role} may not do this ({permission}); "
                                     f"it needs a key with role {' or '.join(allowed)}")
        return principal
    check.required_permission = permission  # type: ignore[attr-defined]
    return check


CurrentPrincipal = Annotated[Principal, Depends(authenticated)]


def ensure_local_credentials(conn: psycopg.Connection[Any], path: Path, roles: tuple[str, ...] = ("admin", "operator")) -> dict[str, str]:
    """Keys for a local run, kept in `path` (mode 600) and reused while they are still valid."""
    import orjson
    keys: dict[str, str] = {}
    if path.exists():
        keys = {r: k for r, k in orjson.loads(path.read_bytes()).items() if r in roles}
    changed = False
    for role in roles:
        found = lookup(conn, keys[role]) if role in keys else None
        if found is None or found.role != role:
            keys[role], _ = create_key(conn, f"local-{role}", role, "quantrac run")
            changed = True
    if changed:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600, exist_ok=True)
        path.chmod(0o600)
        path.write_bytes(orjson.dumps(keys, option=orjson.OPT_INDENT_2))
    return keys
