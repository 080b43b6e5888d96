"""`quantrac run`'s watch over the services it started: one whose process dies is started again.

The supervisor (`stack.supervise`) restarts the pipeline's own processes, but Mosquitto, Kafka and
PostgreSQL run detached, and one that crashed (or was killed by the OOM killer) stayed down: the
bridge and the worker then wait for it, as they must, for ever. In production its service manager
restarts it (Kubernetes, compose's `restart: unless-stopped`, systemd); locally this watch does.

Only services this stack started are watched (their process is ours, `stack.process.running_pid`);
one that was already running and merely reused belongs to someone else. A service is started again
with `stack.services.up`, so it comes back on its own data, ports and accounts. A restart that fails
(a stranger took the port, the disk is full) is logged with the reason and tried again after a
backoff, as the supervisor does for a process that keeps dying, so a broken service neither spins
nor fills the log.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import structlog

from quantrac.settings import Settings
from stack.process import StackError, running_pid
from stack.service import Service
from stack.services import services, up
from stack.supervise import Backoff

log = structlog.get_logger(__name__)


@dataclass
class _Watched:
    started_at: float
    in_a_row: int = 0
    due: float | None = None
    """When (time.monotonic()) to try to start it again; None while its process runs."""


@dataclass
class ServiceWatch:
    """The services a `quantrac run` started, checked every `interval_s` and started again when their process is gone."""

    settings: Settings
    watched: dict[str, _Watched] = field(default_factory=dict)
    backoff: Backoff = Backoff(first_s=1.0, max_s=60.0, stable_s=60.0)

    @classmethod
    def of_started(cls, settings: Settings, only: Iterable[str] | None = None) -> ServiceWatch:
        """A watch over the services (of `only`, default all) whose process this stack started and that run now."""
        now = time.monotonic()
        ours = [s.name for s in services(settings, only) if running_pid(s.process) is not None]
        log.info("stack.watching", services=ours)
        return cls(settings, {name: _Watched(started_at=now) for name in ours})

    def check(self, now: float | None = None) -> list[str]:
        """Start again every watched service whose process is gone and whose restart is due; the names started."""
        now = time.monotonic() if now is None else now
        restarted = []
        for service in services(self.settings, list(self.watched)):
            state = self.watched[service.name]
            due = state.due if state.due is not None else self._noticed(service, state, now)
            if due is None or now < due or not self._start(service.name, state, now):
                continue
            if running_pid(service.process) is None:
                del self.watched[service.name]
                log.warning("stack.unwatched", service=service.name, endpoint=service.endpoint,
                            why="another process answers on its port now; this stack leaves it alone")
            else:
                restarted.append(service.name)
        return restarted

    def _noticed(self, service: Service, state: _Watched, now: float) -> float | None:
        """None while the service's process runs; else when to start it again (now, unless it keeps dying)."""
        if running_pid(service.process) is not None:
            return None
        state.in_a_row = self.backoff.in_a_row(state.in_a_row, now - state.started_at)
        state.due = now if state.in_a_row == 1 else now + self.backoff.delay(state.in_a_row)
        log.warning("stack.service_died", service=service.name, endpoint=service.endpoint,
                    restart_in_s=round(state.due - now, 1), restarts_in_a_row=state.in_a_row,
                    fix=f"see {', '.join(str(f) for f in service.process.logs)} for why; it is started again until Ctrl-C")
        return state.due

    def _start(self, name: str, state: _Watched, now: float) -> bool:
        try:
            up(self.settings, only=[name])
        except StackError as exc:
            state.in_a_row += 1
            delay = self.backoff.delay(state.in_a_row)
            state.due = now + delay
            log.error("stack.restart_failed", service=name, error=str(exc).splitlines()[0], retry_in_s=delay,
                      fix="see the error; the watch tries again")
            return False
        state.started_at, state.due = now, None
        log.info("stack.service_restarted", service=name, restarts_in_a_row=state.in_a_row)
        return True

    def run(self, stop: threading.Event, interval_s: float) -> None:
        """Check every `interval_s` until `stop` is set."""
        while not stop.wait(interval_s):
            self.check()
