"""The bridge's heartbeat: a thread that refreshes its row in `bridge_sessions` (quantrac/bridge_sessions.py)
every `bridge_heartbeat_s`, so the API can tell a stranded session from a live one."""

from __future__ import annotations

import threading
import time

import psycopg
import structlog

from quantrac.bridge_sessions import State, record
from quantrac.failures import RateLimitedLog

log = structlog.get_logger(__name__)


class Heartbeat(threading.Thread):
    """Refreshes a bridge's row every `interval_s` until `stop` is set; failures are logged, rate-limited."""

    def __init__(self, dsn: str, client_id: str, subscription: str, interval_s: float, stop: threading.Event) -> None:
        super().__init__(name="bridge-heartbeat", daemon=True)
        self.dsn, self.client_id, self.subscription, self.interval_s, self.stop = dsn, client_id, subscription, interval_s, stop
        self._failing_since: float | None = None
        self._log = RateLimitedLog(log, interval_s=60.0)  # one warning a minute while PostgreSQL is unreachable

    def beat(self, state: State = "running") -> bool:
        """Write this bridge's row once with `state`; never raises: False (logged, rate-limited) when PostgreSQL is down."""
        try:
            with psycopg.connect(self.dsn, autocommit=True, connect_timeout=5) as conn:
                record(conn, self.client_id, self.subscription, state, self.interval_s)
        except psycopg.Error as exc:
            now = time.monotonic()
            self._failing_since = self._failing_since or now
            self._log("warning", "bridge.heartbeat_failed", client_id=self.client_id, error=str(exc).strip(),
                      failing_for_s=round(now - self._failing_since),
                      fix="check PostgreSQL (QUANTRAC_PG_*); until it answers this bridge may be reported stranded")
            return False
        if self._failing_since is not None:
            log.info("bridge.heartbeat_recovered", client_id=self.client_id)
            self._failing_since = None
        return True

    def run(self) -> None:
        """Beat every `interval_s` until `stop` is set; the first beat comes one interval after the start."""
        while not self.stop.wait(self.interval_s):
            self.beat()
