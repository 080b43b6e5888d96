"""`quantrac run`'s process supervisor: a process that dies is started again, as in production.

Kubernetes (`restartPolicy: Always`) and compose (`restart: unless-stopped`) restart a bridge or a
worker that dies; honcho, which `make run` used before, stopped the whole pipeline instead, so
failover could not be seen locally. Here every process of the Procfile runs in its own session
(process group), its output prefixed with its name (honcho's printer); one that exits is started
again after a backoff (`Backoff`), and the restart is logged. Ctrl-C or SIGTERM stops them all:
SIGTERM to each, SIGKILL to what is left after `stop_timeout_s`.

A restarted bridge keeps its client id (the environment is the same), so it resumes its MQTT
session and what the broker queued for it meanwhile.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO

import structlog
from honcho.colour import get_colours
from honcho.printer import Message, Printer

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Backoff:
    """Wait before the n-th restart in a row: `first_s`·2^(n−1), at most `max_s`.

    A process that ran `stable_s` or longer before it died starts a new row (its next wait is `first_s`).
    """

    first_s: float = 1.0
    max_s: float = 30.0
    stable_s: float = 60.0

    def delay(self, restarts_in_a_row: int) -> float:
        """Seconds to wait before the `restarts_in_a_row`-th restart: `first_s`, doubling each time, at most `max_s`."""
        if restarts_in_a_row <= 1:
            return self.first_s
        return min(self.max_s, self.first_s * 2.0 ** min(restarts_in_a_row - 1, 32))

    def in_a_row(self, previous: int, ran_s: float) -> int:
        """Restarts in a row, counting this one, for a process that ran `ran_s` seconds."""
        return 1 if ran_s >= self.stable_s else previous + 1


@dataclass
class Child:
    """One Procfile entry and its current process."""

    name: str
    command: str
    env: dict[str, str]
    colour: str | None = None
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    in_a_row: int = 0
    due: float | None = None
    """When (time.monotonic()) to start it again after it exited; None while it runs."""
    restarts: int = 0
    readers: list[threading.Thread] = field(default_factory=list)


class Supervisor:
    """Runs named shell commands, restarts any that exits, stops them all when asked."""

    def __init__(self, cwd: str, backoff: Backoff = Backoff(), stop_timeout_s: float = 20.0,
                 printer: Printer | None = None) -> None:
        self.cwd = cwd
        self.backoff = backoff
        self.stop_timeout_s = stop_timeout_s
        self.printer = printer or Printer()
        self.children: dict[str, Child] = {}
        self._print_lock = threading.Lock()
        self._colours = get_colours()

    def add(self, name: str, command: str, env: dict[str, str]) -> None:
        """Register a command under `name` (started by `run`); the longest name sets the width of the output prefix."""
        self.children[name] = Child(name, command, env, colour=next(self._colours))
        self.printer.width = max(len(n) for n in self.children)

    def run(self, stop: threading.Event) -> None:
        """Start every process, keep them running until `stop` is set, then stop them all."""
        for child in self.children.values():
            self._start(child)
        try:
            while not stop.wait(0.2):
                now = time.monotonic()
                for child in self.children.values():
                    self._tend(child, now)
        finally:
            self.stop_all()

    def _tend(self, child: Child, now: float) -> None:
        if child.proc is not None and child.proc.poll() is not None:
            code, ran_s = child.proc.returncode, now - child.started_at
            child.proc = None
            child.in_a_row = self.backoff.in_a_row(child.in_a_row, ran_s)
            delay = self.backoff.delay(child.in_a_row)
            child.due = now + delay
            log.warning("supervisor.exited", child=child.name, exit_code=code, ran_s=round(ran_s, 1),
                        restart_in_s=delay, restarts_in_a_row=child.in_a_row,
                        fix=f"see {child.name}'s output above; it is restarted until Ctrl-C")
        if child.proc is None and child.due is not None and now >= child.due:
            child.restarts += 1
            self._start(child)
            log.info("supervisor.restarted", child=child.name, pid=child.proc.pid if child.proc else None,
                     restarts=child.restarts)

    def _start(self, child: Child) -> None:
        # `exec`: the command replaces the shell (which only expands ${VARS}), so the pid is the process's own.
        child.proc = subprocess.Popen(["/bin/sh", "-c", f"exec {child.command}"], env=child.env, cwd=self.cwd,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        child.started_at, child.due = time.monotonic(), None
        reader = threading.Thread(target=self._copy_output, args=(child, child.proc.stdout), daemon=True,
                                  name=f"output-{child.name}")
        reader.start()
        child.readers = [r for r in child.readers if r.is_alive()] + [reader]
        log.info("supervisor.started", child=child.name, pid=child.proc.pid, command=child.command)

    def _copy_output(self, child: Child, stream: IO[bytes] | None) -> None:
        if stream is None:
            return
        for line in iter(stream.readline, b""):
            with self._print_lock:
                self.printer.write(Message(type="line", data=line, time=datetime.now(), name=child.name, colour=child.colour))
        stream.close()

    def stop_all(self) -> None:
        """SIGTERM to every running process (its whole group), SIGKILL to those still there after the timeout."""
        running = [c for c in self.children.values() if c.proc is not None and c.proc.poll() is None]
        for child in running:
            _signal_group(child.proc, signal.SIGTERM)  # type: ignore[arg-type]  # running keeps only children whose proc is not None; mypy does not narrow c.proc through the list filter
        deadline = time.monotonic() + self.stop_timeout_s
        for child in running:
            assert child.proc is not None
            try:
                child.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("supervisor.killed", child=child.name, pid=child.proc.pid,
                            reason=f"still running {self.stop_timeout_s:g} s after SIGTERM")
                _signal_group(child.proc, signal.SIGKILL)
                child.proc.wait(5)
        for child in self.children.values():
            for reader in child.readers:
                reader.join(timeout=2)
        log.info("supervisor.stopped", processes=len(self.children))


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass  # already gone
