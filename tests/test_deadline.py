"""A timer's question awaited until a deadline: the answer in time, a TimeoutError after it, and a late failure
retrieved rather than logged by asyncio as never retrieved."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

from processors.deadline import within


async def _answer(after_s: float, fail: bool) -> str:
    await asyncio.sleep(after_s)
    if fail:
        raise ConnectionError("Kafka unreachable")
    return "offsets"


def _run(after_s: float, fail: bool, timeout_s: float) -> tuple[object, list[dict[str, Any]]]:
    unretrieved: list[dict[str, Any]] = []

    async def main() -> object:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, context: unretrieved.append(context))
        try:
            got: object = await within(_answer(after_s, fail), timeout_s)
        except (TimeoutError, ConnectionError) as exc:
            got = type(exc)  # not the exception: its traceback would keep the question's task alive
        pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        if pending:
            await asyncio.wait(pending)  # the question finishes on its own (`wait` retrieves nothing)
        del pending
        gc.collect()  # an unretrieved exception is reported when its task is collected
        return got

    return asyncio.run(main()), unretrieved


def test_an_answer_in_time_is_returned() -> None:
    assert _run(0.0, False, 5.0) == ("offsets", [])


def test_a_failure_in_time_is_raised() -> None:
    got, unretrieved = _run(0.0, True, 5.0)
    assert got is ConnectionError and unretrieved == []


@pytest.mark.parametrize("fail", [True, False])
def test_a_late_answer_is_a_timeout_and_a_late_failure_is_retrieved(fail: bool) -> None:
    got, unretrieved = _run(0.2, fail, 0.01)
    assert got is TimeoutError
    assert unretrieved == []
