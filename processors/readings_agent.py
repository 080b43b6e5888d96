"""The readings agent: take a batch, hand it to the pipeline, publish the alerts it raised.

Concurrency stays 1 (faust-streaming #606: with more, an offset can be committed past an
event still in flight). `stream.take` acks the batch once the loop body returns, and the
body returns only after the batch is stored (the pipeline retries until it is).
"""

from __future__ import annotations

from typing import Any

import structlog

from processors.app import alerts_topic, app, readings_topic, settings
from processors.pipeline import BatchProcessor, alert_record
from quantrac.db import connect, load_stations
from quantrac.domain import Station
from quantrac.registry import RegistryCache

log = structlog.get_logger(__name__)


def _load_stations() -> dict[str, Station]:
    with connect(settings.pg_dsn) as conn:
        return load_stations(conn)


@app.agent(readings_topic, concurrency=1)
async def store_readings(stream: Any) -> None:
    stations = RegistryCache(_load_stations, settings.registry_refresh_s, settings.registry_miss_reload_s)
    log.info("worker.registry_loaded", stations=len(stations))
    processor = BatchProcessor(settings.pg_dsn, stations)
    try:
        async for batch in stream.take(settings.worker_batch_size, within=settings.worker_batch_latency_s):
            new, alerts = await processor.process(batch)
            for row in alerts:
                key, value = alert_record(row)
                await alerts_topic.send(key=key, value=value)
            log.debug("worker.batch", records=len(batch), new_readings=new, alerts=len(alerts))
    finally:
        await processor.close()
