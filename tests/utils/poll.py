"""Waiting on real services: poll a condition until it holds or a deadline passes (never a fixed sleep)."""

from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")


def wait_for(check: Callable[[], T], *, timeout: float = 30.0, interval: float = 0.1, what: str = "condition") -> T:
    """The first truthy result of `check()`; AssertionError naming `what` when the deadline passes."""
    deadline = time.monotonic() + timeout
    last: T = check()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}; last result: {last!r}")
        time.sleep(interval)  # poll interval, bounded by the deadline
        last = check()
    return last
