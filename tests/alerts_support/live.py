"""The API as a real uvicorn subprocess on a private port, with an admin and an operator key."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import httpx
import pytest

from api.auth import create_key
from quantrac.db import connect
from quantrac.settings import Settings
from tests.utils.poll import wait_for
from tests.utils.ports import free_port
from tests.utils.processes import NAMESPACE, Process


@dataclass(frozen=True)
class LiveApi:
    url: str
    admin_key: str
    operator_key: str


@pytest.fixture(scope="module")
def live_api(stack: Settings) -> Iterator[LiveApi]:
    port = free_port()
    with connect(stack.pg_dsn) as conn:
        admin, _ = create_key(conn, "live-admin", "admin", "tests")
        operator, _ = create_key(conn, "live-operator", "operator", "tests")
    proc = Process(f"api-{port}", ["api"], stack.run_dir / "test-logs" / NAMESPACE,
                   env={"QUANTRAC_API_PORT": str(port), "QUANTRAC_SSE_POLL_S": "0.2"})
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert proc.alive(), f"the API exited:\n{proc.tail()}"
        try:
            return httpx.get(f"{url}/healthz", timeout=2).status_code in (200, 503)
        except httpx.HTTPError:
            return False
    try:
        wait_for(up, timeout=30, interval=0.2, what=f"the API on {url}")
        yield LiveApi(url, admin, operator)
    finally:
        proc.stop()
