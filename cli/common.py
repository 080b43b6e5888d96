"""Helpers every command uses: logging set-up (and migrations for the long-running processes), signal handling, the actor name."""

from __future__ import annotations

import signal

from quantrac.logs import configure
from quantrac.settings import get_settings


def setup(process: str) -> None:
    s = get_settings()
    configure(s.log_level, s.log_format, process)
    if process in ("bridge", "worker", "api", "notifier"):
        from quantrac.db import migrate_on_start
        migrate_on_start(s)


def stop_on_signals(stop: object) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.stop() if hasattr(stop, "stop") else stop.set())  # type: ignore[attr-defined]


def cli_actor() -> str:
    import getpass
    return f"cli:{getpass.getuser()}"
