"""Faust alone: the worker's app with Faust's consumer and batch API (`stream.noack_take`, acknowledged by hand), only counting.

Run by bench/worker.py beside the bare aiokafka consumer, so the result shows what Faust itself costs
per record before the worker does anything with it. Writes `{"records", "seconds", "startup_seconds"}`
to $BENCH_FAUST_COUNT_OUT once it has counted $BENCH_FAUST_COUNT_WANT records (clock from the first
record to the last, as for the worker), then keeps idling until it is stopped.

    QUANTRAC_... BENCH_FAUST_COUNT_WANT=20000 BENCH_FAUST_COUNT_OUT=/tmp/x.json python bench/faust_count.py
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import orjson  # noqa: E402

from processors.app import app, settings  # noqa: E402

readings_topic = app.topic(settings.readings_topic, value_type=bytes, key_type=bytes,
                           partitions=settings.topic_partitions, internal=False)

WANT = int(os.environ.get("BENCH_FAUST_COUNT_WANT", "0"))
OUT = Path(os.environ.get("BENCH_FAUST_COUNT_OUT", "faust-count.json"))
BEGAN = time.monotonic()


@app.agent(readings_topic, concurrency=1)
async def count(stream: Any) -> None:
    """Count the records of every batch, acknowledge them, and write the timing once `WANT` are counted."""
    got, first = 0, None
    async for events in stream.noack_take(settings.worker_batch_size, within=settings.worker_batch_latency_s):
        if first is None:
            first = time.monotonic()
        got += len(events)
        for event in events:
            await stream.ack(event)
        if got >= WANT and not OUT.exists():
            now = time.monotonic()
            OUT.write_bytes(orjson.dumps({"records": got, "seconds": round(now - first, 3),
                                          "startup_seconds": round(first - BEGAN, 2)}))


if __name__ == "__main__":
    sys.argv = ["bench-faust-count", "worker", "--without-web", "--loglevel", "warn"]
    app.main()
