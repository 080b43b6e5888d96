"""What the worker does with one batch of `quantrac.readings` records, free of Faust.

decode → store new readings → detection on them (windows, rules, detectors; pure, from the
stations' state) → completeness → open or update alerts, all in one transaction; the alert rows
and the stations' new detection state are returned for publishing and for the Faust table. A
batch is retried until it succeeds: the offset must never move past readings that are not
stored. Detection sees only NEW readings, so a redelivered batch changes no state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterable, Mapping, Sequence

import orjson
import psycopg
import structlog
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential

from alerts.rules import Condition
from alerts.store import apply_conditions
from ingest.accounting import record_store_counts
from processors import completeness
from processors.detection import DetectionConfig, detect_batch
from processors.rollups import update_rollups
from processors.store import ReadingWriter
from quantrac import metrics
from quantrac.domain import Reading, Station
from quantrac.wire import decode_readings

log = structlog.get_logger(__name__)


def decode_records(raws: Sequence[bytes]) -> list[tuple[list[Reading], datetime]]:
    """Readings and receive time of every record; a record that does not decode is logged and skipped (the bridge validated it)."""
    records: list[tuple[list[Reading], datetime]] = []
    for raw in raws:
        try:
            records.append(decode_readings(raw))
        except Exception as exc:
            log.error("worker.undecodable_record", error=str(exc), record=raw[:200])
    return records


def decode_batch(raws: Sequence[bytes]) -> list[Reading]:
    """Readings of every record that decodes."""
    return [r for readings, _received_at in decode_records(raws) for r in readings]


def last_seen(records: Iterable[tuple[list[Reading], datetime]]) -> dict[str, tuple[datetime, datetime]]:
    """Per station: the newest event time and the newest receive time in the records."""
    seen: dict[str, tuple[datetime, datetime]] = {}
    for readings, received_at in records:
        for r in readings:
            event, receipt = seen.get(r.station_id, (r.ts, received_at))
            seen[r.station_id] = (max(event, r.ts), max(receipt, received_at))
    return seen


@dataclass
class BatchResult:
    new: int
    alerts: list[dict[str, Any]]
    states: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Detection state of every station with new readings, to be written back to the Faust table."""
    late: int = 0


def alert_record(row: dict[str, Any]) -> tuple[bytes, bytes]:
    """Kafka key and value of an alert transition for `quantrac.alerts`."""
    body = {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()}
    body.setdefault("transition", "opened" if row.get("opened") else "updated")
    return row["station_id"].encode(), orjson.dumps(body)


class BatchProcessor:
    """Holds the worker's database connection and the partition cache across batches."""

    def __init__(self, dsn: str, stations: Mapping[str, Station], config: DetectionConfig | None = None) -> None:
        self.dsn = dsn
        self.stations = stations
        self.config = config or DetectionConfig()
        self.writer = ReadingWriter()
        self._conn: psycopg.AsyncConnection[Any] | None = None

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(self.dsn)
            self.writer.forget_partitions()
        return self._conn

    async def _process_once(self, readings: Sequence[Reading], states: Mapping[str, dict[str, Any] | None],
                            extra: Sequence[Condition]) -> BatchResult:
        conn = await self._connection()
        try:
            async with conn.transaction():
                new = await self.writer.write(conn, readings)
                await record_store_counts(conn, readings, new)
                await update_rollups(conn, new)
                new_states, conditions, late = detect_batch(new, states, self.stations, self.config)
                await completeness.record(conn, completeness.tally(new, late), self.stations)
                alerts = await apply_conditions(conn, [*extra, *conditions])
        except psycopg.OperationalError:
            await conn.close()
            raise
        if late:
            log.info("worker.late_readings", count=len(late), stations=sorted({r.station_id for r in late}),
                     lateness_s=self.config.lateness_s)
        return BatchResult(len(new), alerts, new_states, len(late))

    async def process(self, raws: Sequence[bytes] | None = None, *, records: Sequence[tuple[list[Reading], datetime]] | None = None,
                      states: Mapping[str, dict[str, Any] | None] | None = None,
                      extra: Sequence[Condition] = ()) -> BatchResult:
        """Store and evaluate one batch (raw records, or records already decoded), retrying until the database takes it.

        `states` are the stations' detection states before the batch (missing: fresh); `extra`
        conditions (e.g. a station back from silence) are applied in the same transaction.
        """
        if records is None:
            records = decode_records(raws or [])
        readings = [r for rs, _received_at in records for r in rs]
        states = states or {}
        metrics.WORKER_READINGS_IN.inc(len(readings))
        with metrics.WORKER_WRITE_SECONDS.time():
            async for attempt in AsyncRetrying(wait=wait_exponential(multiplier=0.2, max=10),
                                               retry=retry_if_exception_type(psycopg.Error),
                                               before_sleep=_log_retry, reraise=True):
                with attempt:
                    result = await self._process_once(readings, states, extra)
        metrics.WORKER_READINGS_STORED.inc(result.new)
        return result

    async def apply(self, conditions: Sequence[Condition]) -> list[dict[str, Any]]:
        """Apply conditions found outside a batch (the liveness timer), retrying until the database takes them."""
        async for attempt in AsyncRetrying(wait=wait_exponential(multiplier=0.2, max=10),
                                           retry=retry_if_exception_type(psycopg.Error),
                                           before_sleep=_log_retry, reraise=True):
            with attempt:
                conn = await self._connection()
                try:
                    async with conn.transaction():
                        return await apply_conditions(conn, conditions)
                except psycopg.OperationalError:
                    await conn.close()
                    raise
        raise AssertionError("unreachable")

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()


def _log_retry(state: Any) -> None:
    metrics.WORKER_BATCH_RETRIES.inc()
    log.warning("worker.batch_retry", attempt=state.attempt_number, error=str(state.outcome.exception()),
                fix="check PostgreSQL (quantrac stack status); the batch is retried and its offset held")
