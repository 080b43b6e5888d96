"""Property-based run of schemathesis over the whole OpenAPI schema, in-process against the ASGI app:
no operation answers with a server error, and every answer of the alert, silence, summary and key
operations matches its documented status, content type and schema.

The endless SSE stream is left out (a request to it never ends), and so is key revocation (a generated
id could revoke the key this run uses). The number of operations covered is written to
tests/artifacts/schemathesis.json.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance, status_code_conformance

from api.auth import create_key
from quantrac.db import connect
from quantrac.settings import Settings

pytestmark = pytest.mark.integration
ARTIFACT = Path(__file__).resolve().parent / "artifacts" / "schemathesis.json"


EXCLUDED = {("GET", "/api/v1/alerts/stream"), ("DELETE", "/api/v1/keys/{key_id}")}
CHECKS = [not_a_server_error]
CONFORMANCE = [response_schema_conformance, status_code_conformance, content_type_conformance]
STRICT_TAGS = {"alerts", "silences", "summary", "keys", "health"}
"""Operations of these tags must also answer exactly as documented (status, content type, body schema)."""


def test_no_server_error_and_documented_answers(api: TestClient, stack: Settings) -> None:
    """Each operation gets its own hypothesis run (schemathesis' pytest plugin does not load under pytest 9)."""
    with connect(stack.pg_dsn) as conn:
        key, _ = create_key(conn, "schemathesis", "admin", "tests")
    schema = schemathesis.openapi.from_asgi("/openapi.json", api.app)
    covered: list[str] = []
    failures: dict[str, str] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        label = f"{operation.method.upper()} {operation.path}"
        if (operation.method.upper(), operation.path) in EXCLUDED:
            continue

        @given(case=operation.as_strategy())
        @settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def run(case: Any) -> None:
            case.call_and_validate(headers={"X-API-Key": key}, checks=checks)

        checks = CHECKS + (CONFORMANCE if STRICT_TAGS & set(operation.definition.raw.get("tags") or ()) else [])

        covered.append(label)
        try:
            run()
        except (Exception, BaseExceptionGroup) as exc:  # collect every failing operation, then fail once with all of them
            failures[label] = f"{type(exc).__name__}: {str(exc)[:1500]}"
    ARTIFACT.parent.mkdir(exist_ok=True)
    ARTIFACT.write_text(json.dumps({"operations_covered": covered, "count": len(covered),
                                    "excluded": sorted(" ".join(e) for e in EXCLUDED),
                                    "failures": failures}, indent=2))
    assert len(covered) >= 15
    assert not failures, "\n\n".join(f"{k}:\n{v}" for k, v in failures.items())
