"""What the worker does with one batch of `quantrac.readings` records, free of Faust.

decode → store new readings → detection on them (windows, rules, detectors; pure, from the
stations' state) → completeness → open or update alerts, all in one transaction; the alert rows
and the stations' new detection state are returned for publishing and for the Faust table. A
batch is retried until it succeeds: the offset must never move past readings that are not
stored. Detection sees only NEW readings, so a redelivered batch changes no state.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
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
from processors.detection import DetectionConfig, LiveDetectors, detect_batch
from processors.rollups import refresh_late_aggregates, update_rollups
from processors.store import ReadingWriter
from quantrac import metrics
from quantrac.domain import Reading, Station
from quantrac.wire import decode_sourced

log = structlog.get_logger(__name__)


HISTORICAL_SOURCES = frozenset({"import"})
"""Record sources whose alerts are historical (kept, never notified)."""


def decode_records(raws: Sequence[bytes]) -> list[tuple[list[Reading], datetime, str]]:
    """Readings, receive time and source of every record; a record that does not decode is logged and skipped (the bridge validated it)."""
    records: list[tuple[list[Reading], datetime, str]] = []
    for raw in raws:
        try:
            records.append(decode_sourced(raw))
        except Exception as exc:
            log.error("worker.undecodable_record", error=str(exc), record=raw[:200])
    return records


def decode_batch(raws: Sequence[bytes]) -> list[Reading]:
    """Readings of every record that decodes."""
    return [r for readings, *_ in decode_records(raws) for r in readings]


def last_seen(records: Iterable[tuple[Any, ...]]) -> dict[str, tuple[datetime, datetime]]:
    """Per station: the newest event time and the newest receive time in the records."""
    seen: dict[str, tuple[datetime, datetime]] = {}
    for readings, received_at, *_ in records:
        for r in readings:
            event, receipt = seen.get(r.station_id, (r.ts, received_at))
            seen[r.station_id] = (max(event, r.ts), max(receipt, received_at))
    return seen


def historical_until(records: Iterable[tuple[Any, ...]]) -> dict[str, datetime]:
    """Per station: the newest event time of its imported readings in the records (3-tuples carry the source)."""
    until: dict[str, datetime] = {}
    for readings, _received_at, *rest in records:
        if rest and rest[0] in HISTORICAL_SOURCES:
            for r in readings:
                until[r.station_id] = max(until.get(r.station_id, r.ts), r.ts)
    return until


def mark_historical(conditions: Sequence[Condition], until: Mapping[str, datetime]) -> list[Condition]:
    """Conditions found on imported readings (their station imported up to at least their time) marked historical."""
    return [replace(c, historical=True) if c.station_id in until and c.ts <= until[c.station_id] else c
            for c in conditions]


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
        self.live: LiveDetectors = {}
        self._conn: psycopg.AsyncConnection[Any] | None = None

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(self.dsn)
            self.writer.forget_partitions()
        return self._conn

    async def _process_once(self, readings: Sequence[Reading], states: Mapping[str, dict[str, Any] | None],
                            extra: Sequence[Condition], historical: Mapping[str, datetime] | None = None) -> BatchResult:
        conn = await self._connection()
        try:
            async with conn.transaction():
                new = await self.writer.write(conn, readings)
                await record_store_counts(conn, readings, new)
                await update_rollups(conn, new)
                new_states, conditions, late = detect_batch(new, states, self.stations, self.config, self.live)
                conditions = mark_historical(conditions, historical or {})
                await completeness.record(conn, completeness.tally(new, late), self.stations)
                alerts = await apply_conditions(conn, [*extra, *conditions])
        except psycopg.OperationalError:
            await conn.close()
            raise
        await refresh_late_aggregates(conn, new)
        if late:
            log.info("worker.late_readings", count=len(late), stations=sorted({r.station_id for r in late}),
                     lateness_s=self.config.lateness_s)
        return BatchResult(len(new), alerts, new_states, len(late))

    async def process(self, raws: Sequence[bytes] | None = None, *, records: Sequence[tuple[Any, ...]] | None = None,
                      states: Mapping[str, dict[str, Any] | None] | None = None,
                      extra: Sequence[Condition] = ()) -> BatchResult:
        """Store and evaluate one batch (raw records, or records already decoded), retrying until the database takes it.

        `states` are the stations' detection states before the batch (missing: fresh); `extra`
        conditions (e.g. a station back from silence) are applied in the same transaction.
        """
        if records is None:
            records = decode_records(raws or [])
        readings = [r for rs, *_ in records for r in rs]
        historical = historical_until(records)
        states = states or {}
        metrics.WORKER_READINGS_IN.inc(len(readings))
        with metrics.WORKER_WRITE_SECONDS.time():
            async for attempt in AsyncRetrying(wait=wait_exponential(multiplier=0.2, max=10),
                                               retry=retry_if_exception_type(psycopg.Error),
                                               before_sleep=_log_retry, reraise=True):
                with attempt:
                    result = await self._process_once(readings, states, extra, historical)
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
