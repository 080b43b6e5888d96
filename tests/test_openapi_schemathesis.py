"""Property-based run of schemathesis over the whole OpenAPI schema, in-process against the ASGI app:
no operation answers with a server error, and every answer of the alert, silence, summary and key
operations matches its documented status, content type and schema.

Every operation is covered. Two need care: key revocation never gets the id of a key that existed before
the run (it would revoke the run's own key, or another test's), and the endless SSE stream is called
against the API as a real uvicorn process with a streaming client that checks the status, headers and first
bytes and then hangs up (the in-process client would wait for a body that never ends). The operations
covered are written to tests/artifacts/schemathesis.json.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, assume, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance, status_code_conformance

from api.auth import create_key
from quantrac.db import connect
from quantrac.settings import Settings
from tests.alerts_support.live import LiveApi, live_api  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration
ARTIFACT = Path(__file__).resolve().parent / "artifacts" / "schemathesis.json"


EXCLUDED: set[tuple[str, str]] = set()
STREAMS = {("GET", "/api/v1/alerts/stream")}
"""Endless responses: called over the network with a streaming client (see `call_stream`)."""
CHECKS = [not_a_server_error]
CONFORMANCE = [response_schema_conformance, status_code_conformance, content_type_conformance]
STRICT_TAGS = {"alerts", "silences", "summary", "keys", "health"}
"""Operations of these tags must also answer exactly as documented (status, content type, body schema)."""


SENDABLE = re.compile(r"(?:[^\s\x00-\x1f\x7f](?:[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f])?)?")
"""A header value h11 will send: no leading or trailing white space, no control characters."""


def call_stream(case: Any, base_url: str, key: str) -> None:
    """One generated request to an endless stream: no server error, a documented status, and for a 200 the
    event-stream content type; the connection is closed after the headers and the first chunk."""
    kwargs = case.as_transport_kwargs(base_url=base_url, headers={"X-API-Key": key})
    documented = {str(code) for code in case.operation.definition.raw["responses"]}
    # Over a real socket, a generated header value that HTTP/1.1 cannot carry at all (such as
    # "Bearer " with its trailing space) is refused by the client before any request is made.
    headers = {name: value for name, value in (kwargs.get("headers") or {}).items() if SENDABLE.fullmatch(str(value))}
    with httpx.stream(kwargs["method"], kwargs["url"], headers=headers, params=kwargs.get("params"),
                      timeout=10) as response:
        assert response.status_code < 500, f"{response.status_code} for {kwargs}"
        assert str(response.status_code) in documented, f"undocumented {response.status_code} for {kwargs}"
        if response.status_code == 200:
            assert response.headers["content-type"].startswith("text/event-stream")


def test_no_server_error_and_documented_answers(api: TestClient, stack: Settings,
                                                live_api: LiveApi) -> None:  # noqa: F811
    """Each operation gets its own hypothesis run (schemathesis' pytest plugin does not load under pytest 9)."""
    with connect(stack.pg_dsn) as conn:
        key, _ = create_key(conn, "schemathesis", "admin", "tests")
        protected = {int(r[0]) for r in conn.execute("SELECT id FROM api_keys")}
        stations_before = [r[0] for r in conn.execute("SELECT id FROM stations")]
    schema = schemathesis.openapi.from_asgi("/openapi.json", api.app, headers={"X-API-Key": key})
    covered: list[str] = []
    failures: dict[str, str] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        label = f"{operation.method.upper()} {operation.path}"
        if (operation.method.upper(), operation.path) in EXCLUDED:
            continue

        streams = (operation.method.upper(), operation.path) in STREAMS
        checks = CHECKS + (CONFORMANCE if STRICT_TAGS & set(operation.definition.raw.get("tags") or ()) else [])
        covered.append(label)
        try:
            _property(operation, streams, checks, protected, live_api.url, key)()
        except (Exception, BaseExceptionGroup) as exc:  # collect every failing operation, then fail once with all of them
            failures[label] = f"{type(exc).__name__}: {str(exc)[:1500]}"
    with connect(stack.pg_dsn) as conn:  # a generated own retention would rule later tests' retention passes
        conn.execute("UPDATE stations SET spec = spec - 'retention_days' WHERE id <> ALL(%s)", (stations_before,))
    ARTIFACT.parent.mkdir(exist_ok=True)
    ARTIFACT.write_text(json.dumps({"operations_covered": covered, "count": len(covered),
                                    "excluded": sorted(" ".join(e) for e in EXCLUDED),
                                    "failures": failures}, indent=2))
    every = sum(len([m for m in item if m in {"get", "post", "put", "patch", "delete"}])
                for item in api.app.openapi()["paths"].values())
    assert len(covered) == every, f"{every - len(covered)} operations not covered"
    assert not failures, "\n\n".join(f"{k}:\n{v}" for k, v in failures.items())


def _property(operation: Any, streams: bool, checks: list[Any], protected: set[int], url: str, key: str) -> Any:
    """The hypothesis test of one operation: generated calls, validated against the schema (streams read live)."""
    @given(case=operation.as_strategy())
    @settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def run(case: Any) -> None:
        assume(not isinstance(case.path_parameters, dict) or case.path_parameters.get("key_id") not in protected)
        if streams:
            call_stream(case, url, key)
        else:
            case.call_and_validate(headers={"X-API-Key": key}, checks=checks)
    return run
