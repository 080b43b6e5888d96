"""`stack.services.running`: a bench (or a test session) stops the services it started and leaves those it found running.

The development stack that `bench/e2e.py` and `bench/backfill.py` started used to stay up and hold the ports a later
`make test` (from another checkout) starts its own services on."""

from __future__ import annotations

from pathlib import Path

import pytest

from quantrac.settings import Settings
from stack import services as local_stack
from tests.utils.ports import free_port

pytestmark = pytest.mark.integration


def _postgres_up(settings: Settings) -> bool:
    return local_stack.status(settings, only=["postgres"])["postgres"].healthy


def test_a_bench_stops_the_postgres_it_started_and_leaves_one_it_found_running(native_server: Settings,
                                                                              tmp_path: Path) -> None:
    with local_stack.running(native_server, only=["postgres"]):
        assert _postgres_up(native_server)
    assert _postgres_up(native_server)  # the session's: found running, left running

    own = native_server.model_copy(update={"pg_port": free_port(), "run_dir": tmp_path})
    assert not _postgres_up(own)
    with local_stack.running(own, only=["postgres"]):
        assert _postgres_up(own)
    assert not _postgres_up(own)
