"""What every service of the local stack provides: its ports, its process, a health check and how to start it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import structlog

from quantrac.settings import Settings
from stack.process import ProcessSpec

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class PortUse:
    """A port a service listens on, and the setting that moves it (e.g. `QUANTRAC_PG_PORT=<port>`)."""

    host: str
    port: int
    setting: str


class Service:
    """One service of the stack: how to prepare, recognise, probe and finish starting it."""

    name: str = ""
    exe: str = ""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.run_dir = settings.run_dir.resolve()
        self.logs_dir = self.run_dir / "logs"

    @property
    def endpoint(self) -> str:
        """Where the service answers, as `quantrac stack status` shows it."""
        raise NotImplementedError

    @property
    def ports(self) -> list[PortUse]:
        """Every address the service listens on, checked to be free before it starts."""
        raise NotImplementedError

    @property
    def process(self) -> ProcessSpec:
        """Where its pid and logs live, and how to recognise and stop its process."""
        raise NotImplementedError

    def check(self) -> None:
        """Protocol-level health check; raises with the reason when unhealthy."""
        raise NotImplementedError

    def ready(self) -> None:
        """What must pass before `after_start` runs; the full check by default."""
        self.check()

    def prepare(self) -> tuple[list[str], Path | None]:
        """Check the binaries, render configs, initialise data; returns (argv, cwd)."""
        raise NotImplementedError

    def after_start(self) -> None:
        """Idempotent set-up that needs the running server (e.g. create the database)."""

    def stale(self) -> str | None:
        """Why a healthy running server no longer matches what `prepare` would start, None when it does."""
        return None
