"""API keys and roles.

A key looks like `qk_<prefix>_<secret>`; the database keeps the prefix (to find the row) and the
SHA-256 of the whole key (keys are random, 192 bits, so a fast hash is enough). A request presents
it as `X-API-Key: <key>`, `Authorization: Bearer <key>` or, for browsers, HTTP Basic with the key as
the password (`Authorization: Basic base64(<anything>:<key>)`). Roles:

- operator: read, acknowledge / resolve / comment alerts, manage silences;
- analyst: read, history and export;
- admin: everything, including keys (and stations and limits);
- metrics: only `GET /metrics` (the key Prometheus scrapes with).

Every route but `/healthz` needs a valid key: api/main.py includes the routers with `require("read")`
(the metrics router with `require("metrics")`); a route that needs more declares
`Depends(require(permission))`. Pages a person opens in a browser (the dashboard, /docs, /redoc) use
`browser_authenticated`, whose 401 carries a Basic challenge: the browser asks for the key once and then
sends it with every same-origin request, `fetch` and `EventSource` included.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable

import psycopg
import structlog
from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBasic, HTTPBasicCredentials, HTTPBearer
from starlette.requests import HTTPConnection

ROLES = ("operator", "analyst", "admin", "metrics")
PERMISSIONS: dict[str, frozenset[str]] = {
    "operator": frozenset({"read", "metrics", "alerts.write", "silences.write"}),
    "analyst": frozenset({"read", "metrics", "history", "export"}),
    "admin": frozenset({"read", "metrics", "alerts.write", "silences.write", "history", "export", "keys",
                        "stations.write", "limits.write"}),
    "metrics": frozenset({"metrics"}),
}
REALM = "quantrac"

log = structlog.get_logger(__name__)


class _LenientBasic(HTTPBasic):
    """HTTP Basic that treats a malformed header like a missing one, so the caller gets the same 401
    (with the advice on how to send a key) whatever was wrong."""

    async def __call__(self, request: HTTPConnection) -> HTTPBasicCredentials | None:  # type: ignore[override]  # HTTPBase declares HTTPAuthorizationCredentials; HTTPBasic itself returns HTTPBasicCredentials, as this override does
        try:
            return await super().__call__(request)
        except HTTPException:
            return None


_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="API key, e.g. `qk_1a2b3c4d_...`.")
_bearer = HTTPBearer(auto_error=False, description="The same API key as a bearer token.")
_basic = _LenientBasic(scheme_name="HTTPBasic", auto_error=False, realm=REALM,
                       description="For browsers: any user name, the API key as the password.")


@dataclass(frozen=True)
class Principal:
    """The API key a request authenticated with: its id, name and role."""
    key_id: int
    name: str
    role: str

    @property
    def actor(self) -> str:
        """How changes by this key are recorded."""
        return f"{self.name} ({self.role})"

    def can(self, permission: str) -> bool:
        """Whether the key's role grants `permission` (see PERMISSIONS); an unknown role grants nothing."""
        return permission in PERMISSIONS.get(self.role, frozenset())


def hash_key(key: str) -> str:
    """SHA-256 (hex) of a key: the only form of it stored, in `api_keys.key_hash`."""
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
    """The principal of a well-formed, known, unrevoked key; None otherwise (the hash compared in constant time)."""
    prefix = _prefix_of(key)
    if prefix is None:
        return None
    row = conn.execute("SELECT id, name, role, key_hash FROM api_keys WHERE prefix = %s AND revoked_at IS NULL",
                       (prefix,)).fetchone()
    if row is None or not hmac.compare_digest(row[3], hash_key(key)):
        return None
    return Principal(int(row[0]), row[1], row[2])


METRICS_FILE_KEY = Principal(0, "prometheus", "metrics")
"""Who presents the key of `QUANTRAC_API_METRICS_KEY_FILE`."""


def metrics_key_principal(path: Path | None, key: str) -> Principal | None:
    """The metrics-only principal when `key` is the one in `path` (compared in constant time), else None.

    The file is read at each call, so a rotated key (a replaced file or an updated Kubernetes Secret)
    takes effect without a restart; an unreadable file is logged and only disables this key."""
    if path is None:
        return None
    try:
        expected = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        log.warning("auth.metrics_key_unreadable", path=str(path), error=str(exc),
                    fix="check QUANTRAC_API_METRICS_KEY_FILE and the file's permissions")
        return None
    if expected and hmac.compare_digest(hash_key(expected), hash_key(key)):
        return METRICS_FILE_KEY
    return None


_NO_KEY = ("an API key is required: send X-API-Key: <key>, Authorization: Bearer <key> or HTTP Basic with the key "
           "as the password (create one with `quantrac keys create --role operator --name <you>`)")
_BAD_KEY = "unknown or revoked API key; ask an admin for a new one"


def presented_key(api_key: str | None, bearer: HTTPAuthorizationCredentials | None,
                  basic: HTTPBasicCredentials | None) -> str | None:
    """The key the request carries, in order of preference: X-API-Key, bearer token, Basic password."""
    return api_key or (bearer.credentials if bearer else None) or (basic.password if basic else None) or None


def _authenticator(challenge: str) -> Callable[..., Principal]:
    headers = {"WWW-Authenticate": challenge}

    def authenticate(
        request: Request,
        api_key: Annotated[str | None, Security(_api_key)] = None,
        bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)] = None,
        basic: Annotated[HTTPBasicCredentials | None, Security(_basic)] = None,
    ) -> Principal:
        key = presented_key(api_key, bearer, basic)
        if not key:
            raise HTTPException(401, _NO_KEY, headers=headers)
        cached = getattr(request.state, "principal", None)
        if isinstance(cached, Principal):
            return cached
        principal = None
        if _prefix_of(key) is not None:
            with request.app.state.pool.connection() as conn:
                principal = lookup(conn, key)
        if principal is None:
            principal = metrics_key_principal(request.app.state.settings.api_metrics_key_file, key)
        if principal is None:
            raise HTTPException(401, _BAD_KEY, headers=headers)
        request.state.principal = principal
        return principal
    return authenticate


authenticated = _authenticator("Bearer")
authenticated.__doc__ = "The caller's key; 401 (Bearer challenge) when missing or unknown."
browser_authenticated = _authenticator(f'Basic realm="{REALM}", charset="UTF-8"')
browser_authenticated.__doc__ = ("The caller's key for pages a person opens in a browser; the 401 asks the browser for "
                                 "Basic credentials (any user name, the key as the password).")


def require(permission: str, via: Callable[..., Principal] | None = None) -> Callable[[Principal], Principal]:
    """Dependency: the caller's role must grant `permission`, else 403 naming the roles that do.

    `via` is how the caller authenticates (default `authenticated`; `browser_authenticated` for pages)."""
    def check(principal: Principal = Depends(via or authenticated)) -> Principal:
        if not principal.can(permission):
            allowed = [r for r in ROLES if permission in PERMISSIONS[r]]
            raise HTTPException(403, f"role {principal.role} may not do this ({permission}); "
                                     f"it needs a key with role {' or '.join(allowed)}")
        return principal
    check.required_permission = permission  # type: ignore[attr-defined]  # an attribute set on the dependency function so callers can read which permission it checks
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
