"""Library logs cannot flood: a record a library repeats passes once per interval, saying how many it held back, and
Faust's worker keeps quantrac's handler (and so that limit)."""

from __future__ import annotations

import logging
import logging.config
from collections.abc import Iterator

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st

from quantrac import logs


class _Kept(logging.Handler):
    def __init__(self, interval_s: float, now: list[float]) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.addFilter(logs.RepeatLimit(interval_s, clock=lambda: now[0]))

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def library_logger() -> Iterator[tuple[logging.Logger, _Kept, list[float]]]:
    now = [0.0]
    kept = _Kept(10.0, now)
    logger = logging.getLogger("tests.library.client")
    logger.addHandler(kept)
    logger.propagate = False
    try:
        yield logger, kept, now
    finally:
        logger.removeHandler(kept)
        logger.propagate = True


def test_a_library_repeating_a_failure_logs_once_per_interval_with_the_count_held_back(
        library_logger: tuple[logging.Logger, _Kept, list[float]]) -> None:
    logger, kept, now = library_logger
    for i in range(1000):  # aiokafka while Kafka restarts: every attempt to every node
        now[0] = i * 0.01
        logger.error("Unable connect to node with id %s: %s", 1, "Connect call failed")
    logger.error("Unable to update metadata from %s", [1])
    now[0] = 10.0
    logger.error("Unable connect to node with id %s: %s", 1, "Connect call failed")
    messages = [r.getMessage() for r in kept.records]
    assert messages == [
        "Unable connect to node with id 1: Connect call failed",
        "Unable to update metadata from [1]",
        "Unable connect to node with id 1: Connect call failed [999 more like it held back in the last 10 s]",
    ]


@given(st.lists(st.tuples(st.floats(0, 30), st.sampled_from(["a %s", "b %s"])), max_size=200))
def test_every_line_a_library_logs_stands_for_records_it_sent(steps: list[tuple[float, str]]) -> None:
    now = [0.0]
    kept = _Kept(10.0, now)
    for dt, template in steps:
        now[0] += dt
        kept.handle(logging.LogRecord("lib", logging.ERROR, __file__, 1, template, ("x",), None))
    assert len(kept.records) <= 2 * (now[0] / 10.0 + 1)
    shown = sum(1 + int(r.getMessage().split("[")[1].split()[0]) if "[" in r.getMessage() else 1 for r in kept.records)
    assert shown <= len(steps) and (not steps or kept.records)


def test_information_lines_are_not_held_back(library_logger: tuple[logging.Logger, _Kept, list[float]]) -> None:
    logger, kept, _ = library_logger
    logger.setLevel(logging.INFO)
    for path in ("/api/v1/alerts", "/api/v1/alerts", "/"):
        logger.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET", path, "1.1", 200)  # uvicorn's access line
    assert len(kept.records) == 3


@pytest.fixture
def configured() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        logs.configure("INFO", "json", "tests")
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        structlog.reset_defaults()


def _limited() -> list[logging.Handler]:
    return [h for h in logging.getLogger().handlers if any(isinstance(f, logs.RepeatLimit) for f in h.filters)]


def test_faust_worker_keeps_quantrac_handler_and_its_limit(configured: None) -> None:
    ours = _limited()
    assert len(ours) == 1
    logging.config.dictConfig({"version": 1, "handlers": {"faust": {"class": "logging.StreamHandler"}},
                               "root": {"handlers": ["faust"]}, "disable_existing_loggers": False})
    assert _limited() == []  # what Faust's own set-up does to the root logger
    logging.config.dictConfig(logs.faust_logging_config())  # what it does with the worker's `logging_config`
    assert _limited() == ours
