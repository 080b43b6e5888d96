"""Structured logging for every quantrac process: key=value on a terminal, JSON lines otherwise.

quantrac's own events go straight from structlog to stderr, so frameworks that reconfigure the
standard library's logging (Faust's worker does) cannot garble them; library records (kafka,
aiokafka, uvicorn) are rendered by the same processors through a stdlib handler. A library that
repeats a failure (aiokafka logs every failed connection attempt while Kafka restarts, about a
hundred lines a second) is held to one line per message per `QUANTRAC_LOG_REPEAT_INTERVAL_S`, the
next one saying how many were held back (`RepeatLimit`), as quantrac's own repeating failures are
(`quantrac.failures.RateLimitedLog`).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Any, Callable, Hashable, MutableMapping

import structlog

_handler: logging.Handler | None = None
"""The handler `configure` gave the root logger, which Faust's worker is handed back (`faust_logging_config`)."""


class RepeatGate:
    """Admits a key at most once per `interval_s`, and says how many times it was held back in between.

    What every rate-limited log of quantrac shares (`quantrac.failures.RateLimitedLog` for
    its own events, `RepeatLimit` for the libraries' records). Thread-safe (the bridge logs from
    paho's and kafka-python's threads); at most `max_keys` keys are remembered, the oldest forgotten.
    """

    def __init__(self, interval_s: float = 10.0, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = 10_000) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._max_keys = max_keys
        self._lock = threading.Lock()
        self._last: dict[Hashable, float] = {}
        self._held: dict[Hashable, int] = {}

    def admit(self, key: Hashable) -> int | None:
        """None when `key` was admitted within the interval (held back, counted); else how many were held back since."""
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.interval_s:
                self._held[key] = self._held.get(key, 0) + 1
                return None
            self._last.pop(key, None)
            self._last[key] = now
            while len(self._last) > self._max_keys:
                oldest = next(iter(self._last))
                del self._last[oldest]
                self._held.pop(oldest, None)
            return self._held.pop(key, 0)


class RepeatLimit(logging.Filter):
    """Passes a warning or error at most once per `interval_s` for each (logger, level, message template); the next
    record that passes says how many were held back in between. Records below WARNING (uvicorn's access lines, which
    share one template) all pass."""

    def __init__(self, interval_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.interval_s = interval_s
        self._gate = RepeatGate(interval_s, clock, max_keys=1_000)

    def filter(self, record: logging.LogRecord) -> bool:
        """Whether `record` passes; one that follows held-back repeats says how many."""
        if record.levelno < logging.WARNING:
            return True
        held = self._gate.admit((record.name, record.levelno, str(record.msg)))
        if held is None:
            return False
        if held:
            record.msg = f"{record.getMessage()} [{held} more like it held back in the last {self.interval_s:g} s]"
            record.args = None
        return True


def configure(level: str = "INFO", fmt: str = "console", process: str | None = None, repeat_s: float = 10.0) -> None:
    """Structured logs for one process, as console lines or JSON; a library's warning repeated within `repeat_s` is
    held back."""
    def add_process(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        if process:
            event.setdefault("process", process)
        return event

    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        add_process,
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    numeric_level = logging.getLevelName(level.upper())
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(foreign_pre_chain=shared, processors=[
        structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer]))
    handler.addFilter(RepeatLimit(repeat_s))
    global _handler
    _handler = handler
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric_level)
    for noisy in ("kafka", "aiokafka", "faust", "mode"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, numeric_level))


def faust_logging_config() -> dict[str, Any]:
    """The `logging_config` for Faust's worker: its root logger keeps `configure`'s handler (structured, repeats held
    back) instead of Faust's own; empty (Faust's default) when `configure` has not run."""
    if _handler is None:
        return {}
    handler = _handler
    root = logging.getLogger()
    return {"version": 1, "disable_existing_loggers": False,
            "handlers": {"quantrac": {"()": lambda: handler}},
            "root": {"level": logging.getLevelName(root.level), "handlers": ["quantrac"]}}
