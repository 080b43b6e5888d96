"""Structured logging for every quantrac process: key=value on a terminal, JSON lines otherwise.

quantrac's own events go straight from structlog to stderr, so frameworks that reconfigure the
standard library's logging (Faust's worker does) cannot garble them; library records (kafka,
aiokafka, uvicorn) are rendered by the same processors through a stdlib handler.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, MutableMapping

import structlog


def configure(level: str = "INFO", fmt: str = "console", process: str | None = None) -> None:
    """Structured logs for one process, as console lines or JSON."""
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
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric_level)
    for noisy in ("kafka", "aiokafka", "faust", "mode"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, numeric_level))
