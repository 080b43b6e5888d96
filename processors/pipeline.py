"""What the worker does with one batch of `quantrac.readings` records, free of Faust.

decode → store new readings → evaluate rules on them → open or update alerts, all in one
transaction; the alert rows are returned for publishing. A batch is retried until it succeeds:
the offset must never move past readings that are not stored.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import orjson
import psycopg
import structlog
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential

from alerts.rules import evaluate
from alerts.store import apply_conditions
from processors.store import ReadingWriter
from quantrac.domain import Reading, Station
from quantrac.wire import decode_readings

log = structlog.get_logger(__name__)


def decode_batch(raws: Sequence[bytes]) -> list[Reading]:
    """Readings of every record; a record that does not decode is logged and skipped (the bridge validated it)."""
    readings: list[Reading] = []
    for raw in raws:
        try:
            decoded, _received_at = decode_readings(raw)
        except Exception as exc:
            log.error("worker.undecodable_record", error=str(exc), record=raw[:200])
            continue
        readings.extend(decoded)
    return readings


def alert_record(row: dict[str, Any]) -> tuple[bytes, bytes]:
    """Kafka key and value of an alert transition for `quantrac.alerts`."""
    body = {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()}
    body["transition"] = "opened" if row.get("opened") else "updated"
    return row["station_id"].encode(), orjson.dumps(body)


class BatchProcessor:
    """Holds the worker's database connection and the partition cache across batches."""

    def __init__(self, dsn: str, stations: Mapping[str, Station]) -> None:
        self.dsn = dsn
        self.stations = stations
        self.writer = ReadingWriter()
        self._conn: psycopg.AsyncConnection[Any] | None = None

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(self.dsn)
            self.writer.forget_partitions()
        return self._conn

    async def _process_once(self, readings: Sequence[Reading]) -> tuple[int, list[dict[str, Any]]]:
        conn = await self._connection()
        try:
            async with conn.transaction():
                new = await self.writer.write(conn, readings)
                alerts = await apply_conditions(conn, evaluate(new, self.stations))
        except psycopg.OperationalError:
            await conn.close()
            raise
        return len(new), alerts

    async def process(self, raws: Sequence[bytes]) -> tuple[int, list[dict[str, Any]]]:
        """Store and evaluate one batch, retrying until the database takes it; returns (new readings, alert rows)."""
        readings = decode_batch(raws)
        async for attempt in AsyncRetrying(wait=wait_exponential(multiplier=0.2, max=10),
                                           retry=retry_if_exception_type(psycopg.Error),
                                           before_sleep=_log_retry, reraise=True):
            with attempt:
                return await self._process_once(readings)
        raise AssertionError("unreachable")

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()


def _log_retry(state: Any) -> None:
    log.warning("worker.batch_retry", attempt=state.attempt_number, error=str(state.outcome.exception()),
                fix="check PostgreSQL (quantrac stack status); the batch is retried and its offset held")
