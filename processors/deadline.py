"""An answer awaited until a deadline, the question left to finish on its own: a timer that must not overlap itself.

`asyncio.wait_for(asyncio.shield(...))` alone leaves a question that fails after the deadline with
an exception nobody retrieves, which asyncio then logs with a whole traceback at every check while
Kafka is away.
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, TypeVar

T = TypeVar("T")


async def within(question: Awaitable[T], timeout_s: float) -> T:
    """The answer to `question`, or TimeoutError after `timeout_s`; the question then goes on, and a failure it ends
    with is retrieved (the caller has already reported the timeout)."""
    task = asyncio.ensure_future(question)
    task.add_done_callback(_retrieve)
    return await asyncio.wait_for(asyncio.shield(task), timeout=timeout_s)


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()
