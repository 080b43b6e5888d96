"""Helpers every command uses: logging set-up (and migrations for the long-running processes), signal handling, the actor name."""

from __future__ import annotations

import signal

from quantrac.logs import configure
from quantrac.settings import get_settings


def setup(process: str) -> None:
    """Configure logging for `process`; bridge, worker, api and notifier also migrate the database if `db_migrate_on_start`."""
    s = get_settings()
    configure(s.log_level, s.log_format, process, s.log_repeat_interval_s)
    if process in ("bridge", "worker", "api", "notifier"):
        from quantrac.db import migrate_on_start
        migrate_on_start(s)


def stop_on_signals(stop: object) -> None:
    """On SIGINT or SIGTERM call `stop.stop()` (`stop.set()` for an Event), so the loop ends cleanly instead of mid-batch."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.stop() if hasattr(stop, "stop") else stop.set())  # type: ignore[attr-defined]  # stop is an Event or an object with stop(); hasattr picks the method, which mypy cannot see on object


def cli_actor() -> str:
    """The actor recorded for changes made from the command line: `cli:<OS user name>`."""
    import getpass
    return f"cli:{getpass.getuser()}"
