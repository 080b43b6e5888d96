"""What the worker does with one batch of `quantrac.readings` records, free of Faust.

decode → store new readings → detection on them (windows, rules, detectors; pure, from the
stations' state) → completeness → open or update alerts, all in one transaction; the alert rows
are returned for publishing. Detection sees only NEW readings, so a redelivered batch changes no
state. The stations' states stay alive in the processor between batches (`cache`); their snapshots
and the stations' liveness entries (`processors.worker_state`) are written in a batch's transaction
(`KeptWrites`), or by `save_state` when no batch comes. A state the
cache does not hold (a restart, a rebalance, a failed batch) is read from its snapshot and first
replays the readings stored after it (`_replay`): each state records the store transaction of its
newest batch (`stored_through_us`), and every stored reading carries its transaction's time
(`readings.received_at`). The worker may begin the next batch's transaction, and its COPY, on a
second connection while a batch finishes (`begin_ahead`); that batch is still judged only after
the one before it is committed.

Failures (`quantrac.failures`): while PostgreSQL is unavailable a batch is retried for as long as
it takes, its offset held. A batch that fails for its content (a value PostgreSQL refuses, a bug
of ours on some reading) is tried RECORD_ATTEMPTS times, then record by record: a record that
still fails is quarantined (a dead letter the agent sends) and the records behind it are stored.
A reading that contradicts a stored one (same key, other value) is dead-lettered as `conflict`.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable, Iterable, Mapping, Sequence, TypeVar

import numpy as np
import orjson
import psycopg
import structlog
from tenacity import AsyncRetrying, retry_if_exception, wait_exponential

from alerts.alerts_table import apply_conditions
from alerts.open_alerts import open_alert_keys
from alerts.rules import Condition, OpenKeys
from processors import windows
from processors.detection import DetectionConfig, LiveDetectors, detect_batch, snapshot_states
from processors.detection_state import StateCache, StationState, decode_state, load
from processors.reading_writer import ReadingWriter
from processors.rollups import LateRefresh, update_rollups
from processors.worker_state import Entry, load_liveness, load_snapshots, save_liveness, save_snapshots
from quantrac import completeness, metrics
from quantrac.batch_columns import BatchColumns, Bools, Ints, as_datetime, epoch_us, from_records, from_wire, stored_columns
from quantrac.delivery_accounting import record_store_counts
from quantrac.domain import Reading, Station
from quantrac.failures import RECORD_ATTEMPTS, RateLimitedLog, describe, is_record_failure, store_fix
from quantrac.safe_text import safe_text
from quantrac.wire import decode_sourced, encode_deadletter, encode_quarantine, encode_readings
from quantrac.wire_columns import ReadingColumns, decode_columns

log = structlog.get_logger(__name__)
_log = RateLimitedLog(log)
T = TypeVar("T")


HISTORICAL_SOURCES = frozenset({"import"})
"""Record sources whose alerts are historical (kept, never notified)."""


Record = tuple[list[Reading], datetime, str]
"""Readings, receive time and source of one `quantrac.readings` record."""

States = StationState | dict[str, Any] | None
"""A caller's own detection state of a station before a batch, or its JSON (copied, never changed); None: the
processor's own (kept, else from the station's snapshot, else fresh)."""

DeadLetter = tuple[bytes | None, bytes]
"""Key and value of a record for the dead-letter topic."""


def decode_records(raws: Sequence[bytes], undecodable: list[DeadLetter] | None = None) -> list[Record]:
    """Readings, receive time and source of every record that decodes, in the batch's order.

    Records in the bridge's exact form are read in columns (`quantrac.wire_columns`), the others
    the validated way (`quantrac.wire.decode_sourced`).

    A record that does not (the bridge validated it, so only a foreign producer or a bug of ours
    writes one) is quarantined into `undecodable` when given, else logged and skipped.
    """
    return _records(decode_columns(raws), raws, undecodable)


def decode_batch(raws: Sequence[bytes], undecodable: list[DeadLetter] | None = None) -> BatchColumns:
    """`decode_records` as one batch of columns, with no `Reading` built when every record is in the bridge's form."""
    columns = decode_columns(raws)
    return from_wire(columns) if not columns.slow else from_records(_records(columns, raws, undecodable))


def _records(columns: ReadingColumns, raws: Sequence[bytes], undecodable: list[DeadLetter] | None) -> list[Record]:
    """The records of `columns`, and those it left to the validated decoder, in the batch's order."""
    records = columns.records()
    for index in columns.slow:  # not in the bridge's exact form: the validated way, which explains what is wrong
        raw = raws[index]
        try:
            records[index] = decode_sourced(raw)
        except Exception as exc:
            _log("error", "worker.undecodable_record", key=type(exc).__name__, error=safe_text(describe(exc), 300),
                 size=len(raw), action="quarantined" if undecodable is not None else "skipped")
            if undecodable is not None:
                undecodable.append(quarantine_record(raw, exc))
    return [records[index] for index in sorted(records)]


def quarantine_record(raw: bytes, exc: BaseException, key: bytes | None = None) -> DeadLetter:
    """The quarantine dead letter of a readings record the worker could not decode or store."""
    metrics.QUARANTINED.labels("worker").inc()
    return key, encode_quarantine(stage="worker", raw=raw, error=describe(exc), received_at=datetime.now(timezone.utc),
                                  topic="kafka:readings", source="worker",
                                  station_id=key.decode("utf-8", "replace") if key else None)


def conflict_deadletter(reading: Reading, stored_value: float | None, stored_status: str, source: str) -> DeadLetter:
    """The `conflict` dead letter of a reading whose key is stored with another value.

    Its payload is a one-reading message in the MQTT contract, so `deadletter replay` can resend
    it (it is refused again while the stored value stands).
    """
    payload = orjson.dumps({"ts": reading.ts.isoformat(), "readings": [
        {"parameter": reading.parameter, "value": reading.value, "unit": reading.unit, "status": reading.status.value}]})
    message = (f"station {reading.station_id}, {reading.parameter} at {reading.ts.isoformat()}: value {reading.value!r} "
               f"(status {reading.status.value}) contradicts the stored {stored_value!r} (status {stored_status}); the "
               "stored reading is kept. Find which is right; a gateway resending corrected values must use a new time")
    return reading.station_id.encode(), encode_deadletter(
        topic=f"quantrac/v1/stations/{reading.station_id}/readings", payload=payload, reason="conflict", message=message,
        received_at=datetime.now(timezone.utc), station_id=reading.station_id, parameter=reading.parameter,
        source=source, stage="worker")


def log_conflicts(readings: Sequence[Reading]) -> None:
    """One warning per station (rate-limited per station) for its readings that contradict stored ones, as the
    bridge logs each message it rejects: the dead letters hold each reading, the log says that it happens."""
    by_station: dict[str, list[Reading]] = {}
    for r in readings:
        by_station.setdefault(r.station_id, []).append(r)
    for station_id, rs in by_station.items():
        _log("warning", "worker.conflicts", key=station_id, station=station_id, count=len(rs),
             parameters=sorted({r.parameter for r in rs}), first_ts=min(r.ts for r in rs).isoformat(),
             fix="the stored readings are kept and these are dead letters (reason conflict): find which value is right; "
                 "a gateway that resends corrected values must give them a new time")


def _as_batch(records: BatchColumns | Sequence[Record]) -> BatchColumns:
    return records if isinstance(records, BatchColumns) else from_records(records)


def _historical_records(batch: BatchColumns) -> Ints:
    return np.array([i for i, (_, source) in enumerate(batch.records) if source in HISTORICAL_SOURCES], np.int64)


def _last_of_each(sorted_keys: Ints) -> Bools:
    """Where each run of equal keys ends, in keys sorted so that equal ones are together."""
    return np.append(sorted_keys[1:] != sorted_keys[:-1], True) if len(sorted_keys) else np.zeros(0, np.bool_)


def _newest(batch: BatchColumns, rows: Ints) -> dict[str, datetime]:
    """Per station: the event time (as sent) of its newest reading among `rows`."""
    names, station_of = batch.stations()
    order = rows[np.lexsort((batch.ts_us[rows], station_of[rows]))]
    return {names[station_of[row]]: batch.ts[row] for row in order[_last_of_each(station_of[order])].tolist()}


def last_seen(records: BatchColumns | Sequence[Record]) -> dict[str, tuple[datetime, datetime]]:
    """Per station: the newest event time and the newest receive time of its *live* readings in the batch.

    Imported readings don't count: an import says nothing about whether the station is alive now,
    and a station that only ever had imported readings must not be expected to keep sending."""
    batch = _as_batch(records)
    live = np.flatnonzero(~np.isin(batch.record, _historical_records(batch)))
    names, station_of = batch.stations()
    count = len(batch.records)
    station, record = np.divmod(np.unique(station_of[live] * count + batch.record[live]), count)  # each pair once
    at = np.fromiter((batch.records[r][0].timestamp() for r in record.tolist()), np.float64, len(record))
    order = np.lexsort((-record, at, station))  # per station, its latest receive time last (its first record if tied)
    last = order[_last_of_each(station[order])]
    received = {names[s]: batch.records[r][0] for s, r in zip(station[last].tolist(), record[last].tolist(), strict=True)}
    return {station: (ts, received[station]) for station, ts in _newest(batch, live).items()}


def historical_until(records: BatchColumns | Sequence[Record]) -> dict[str, datetime]:
    """Per station: the newest event time of its imported readings in the batch."""
    batch = _as_batch(records)
    return _newest(batch, np.flatnonzero(np.isin(batch.record, _historical_records(batch))))


def mark_historical(conditions: Sequence[Condition], until: Mapping[str, datetime]) -> list[Condition]:
    """Conditions found on imported readings (their station imported up to at least their time) marked historical."""
    return [replace(c, historical=True) if c.station_id in until and c.ts <= until[c.station_id] else c
            for c in conditions]


@dataclass(frozen=True)
class KeptWrites:
    """What the worker keeps in the store beside a batch, written in the batch's transaction: stored with its readings
    or not at all, and with no transaction (and no commit's flush to disk) of its own."""

    liveness: Mapping[str, Entry]
    """The liveness entries after the batch (`processors.liveness`)."""
    due: Callable[[Iterable[str]], set[str]]
    """The stations whose snapshots are due after a batch that judged these (`processors.detection_state.SnapshotPlan`).
    Called once per attempt: after a failed one, the stations it named may wait a period for their next snapshot (their
    kept states are dropped and replayed from the snapshot before)."""


@dataclass
class BatchResult:
    """What judging one batch produced: new readings stored, alerts to publish, detector states to keep."""
    new: int
    alerts: list[dict[str, Any]]
    states: dict[str, StationState] = field(default_factory=dict)
    """Detection state of every station with new readings, alive in the processor (`BatchProcessor.snapshot` writes them out)."""
    late: int = 0
    deadletters: list[DeadLetter] = field(default_factory=list)
    """Conflicts and quarantined records, for the agent to send to the dead-letter topic."""

    def merge(self, other: "BatchResult") -> None:
        """Add a later part of the same batch (record by record after a record failure)."""
        self.new += other.new
        self.alerts.extend(other.alerts)
        self.states.update(other.states)
        self.late += other.late
        self.deadletters.extend(other.deadletters)


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
        self.late_refresh = LateRefresh()
        """TimescaleDB: the aggregates' buckets of late readings, refreshed after each commit (a refused one with the next)."""
        self.live = LiveDetectors()
        self.cache = StateCache()
        """The stations' states alive between batches (`snapshot` gives their bytes, `save_state` writes them)."""
        self.unsnapshotted: set[str] = set()
        """Stations found with no snapshot in the store and not snapshotted since (`SnapshotPlan` writes them at once)."""
        self.judged = asyncio.Event()
        """Set once the batch in progress is judged (clear it before a batch), before PostgreSQL has finished its COPY:
        from then on the worker's CPU is free until PostgreSQL has stored the batch, and the worker decodes the next one
        (`processors.readings_agent`)."""
        self.judged.set()
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._spare: psycopg.AsyncConnection[Any] | None = None
        """The second connection: the next batch's transaction begins on it (`begin_ahead`) while the batch in hand is
        still open on `_conn`; the two swap when that batch comes."""
        self._ahead: _Ahead | None = None
        self._ahead_lock = asyncio.Lock()
        self._copying: asyncio.Task[bool] | None = None
        """The COPY of the batch in hand: a batch begun ahead starts its own once this one is done."""

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(self.dsn)
            self.writer.forget_created()
        return self._conn

    async def _spare_connection(self) -> psycopg.AsyncConnection[Any]:
        if self._spare is None or self._spare.closed:
            self._spare = await psycopg.AsyncConnection.connect(self.dsn)
        return self._spare

    async def begin_ahead(self, batch: BatchColumns) -> None:
        """Begin `batch`'s transaction and its direct COPY now, on the second connection, while the batch before it
        finishes on the first (its last statements, its commit, the snapshots): PostgreSQL stores this one meanwhile,
        and `process` takes the transaction over when the batch comes. Measured, the statements after the judging took
        a quarter of a batch's time, with the next COPY not yet begun.

        Not before the batch in hand has its rows in (its COPY done): a key in both would otherwise have that batch's
        COPY wait on this transaction, which commits only after it. Then only on the direct way, and not while a
        transaction that created day partitions or series is open (`ReadingWriter.created_pending`). A failure here only
        means the batch is done the usual way: `process` meets it again if it lasts."""
        if self._copying is not None and not self._copying.done():
            await asyncio.wait({self._copying})
        presumed = self.writer.presumed_new(batch)
        if presumed is None or self.writer.created_pending:
            return
        async with self._ahead_lock:
            await self._drop(self._ahead)
            self._ahead = None
            conn: psycopg.AsyncConnection[Any] | None = None
            try:
                conn = await self._spare_connection()
                stored_us = await _transaction_time_us(conn)  # the transaction begins (the connection is not autocommit)
                copying = await self.writer.start_copy(conn, presumed)
            except BaseException as exc:  # left for `process`, which waits out PostgreSQL or quarantines
                if conn is not None:
                    await conn.close()
                if not isinstance(exc, Exception):
                    raise
                _log("debug", "worker.ahead_not_begun", key=type(exc).__name__, error=safe_text(describe(exc), 300))
                return
            self._ahead = _Ahead(batch, conn, stored_us, presumed, copying)

    async def drop_ahead(self) -> None:
        """Roll back the transaction begun ahead, if any (its batch will not come: a rebalance, the worker stops)."""
        await self._drop(await self._popped_ahead())

    async def _popped_ahead(self) -> _Ahead | None:
        async with self._ahead_lock:  # waits for a `begin_ahead` under way
            ahead, self._ahead = self._ahead, None
        return ahead

    async def _take_ahead(self, batch: BatchColumns) -> _Ahead | None:
        """The transaction begun ahead for `batch`, its connection now the processor's; one begun for another batch is
        dropped (that batch comes after this one: this is a retry, or a record of a batch tried record by record)."""
        ahead = await self._popped_ahead()
        if ahead is not None and ahead.batch is not batch:
            await self._drop(ahead)
            return None
        if ahead is not None:
            self._conn, self._spare = ahead.conn, self._conn
        return ahead

    async def _drop(self, ahead: _Ahead | None) -> None:
        """End a transaction begun ahead (`_abandoned`), forgetting the partitions and series it may have created."""
        if ahead is None:
            return
        await _abandoned(ahead.conn, ahead.copying)
        self.writer.forget_created()  # it may have created some

    async def _owned(self, conn: psycopg.AsyncConnection[Any], station_ids: Iterable[str], states: Mapping[str, States]
                     ) -> tuple[dict[str, StationState | None], dict[str, StationState]]:
        """The stations' states to work on in place (a caller's own is copied; else kept alive in `cache`; else read
        from its snapshot), and those read from a snapshot, to replay (`_replay`)."""
        owned: dict[str, StationState | None] = {}
        restored: dict[str, StationState] = {}
        unknown: list[str] = []
        for i in station_ids:
            if (given := states.get(i)) is not None:
                owned[i] = load(given)
            elif (kept := self.cache.kept(i)) is not None:
                owned[i] = kept
            else:
                unknown.append(i)
        snapshots = await load_snapshots(conn, unknown) if unknown else {}
        for i in unknown:
            raw = snapshots.get(i)
            if raw is None:
                self.unsnapshotted.add(i)
                continue
            state = owned[i] = decode_state(raw)
            if state is not None and state.stored_through_us is not None:
                restored[i] = state
        return owned, restored

    async def _before_judging(self, conn: psycopg.AsyncConnection[Any], new: BatchColumns, states: Mapping[str, States]
                              ) -> tuple[OpenKeys, dict[str, StationState | None]]:
        """What judging `new` needs from the store: its stations' open alerts and their states (`_owned`), those read
        back from a snapshot brought up to date (`_replay`). A station the registry does not hold (retired, or not loaded
        yet) is not judged, so its state is not read: it would be read and replayed again with each of its batches."""
        judged = {station for station, n in new.per_station().items() if n and station in self.stations}
        open_keys = await open_alert_keys(conn, judged)
        owned, restored = await self._owned(conn, judged, states)
        await self._replay(conn, restored, open_keys)
        return open_keys, owned

    async def _replay(self, conn: psycopg.AsyncConnection[Any], restored: Mapping[str, StationState],
                      open_keys: OpenKeys) -> None:
        """Bring states read back from a snapshot up to date: the readings of their stations stored after it, judged
        again for the state only (their alerts were applied when they were stored).

        In store order, a station's readings of one batch in time order. A reading older than the snapshot's watermark
        was late when stored and only counted so; it is left out (its state's `late_count` stays lower)."""
        if not restored:
            return
        stations = list(restored)
        since = [as_datetime(state.stored_through_us or 0) for state in restored.values()]
        oldest = [None if state.newest_t is None else windows.from_epoch(state.newest_t - self.config.lateness_s)
                  for state in restored.values()]
        async with conn.cursor() as cur:
            await cur.execute(_REPLAY, (stations, since, oldest))
            rows = await cur.fetchall()
        readings = stored_columns(rows)
        if len(readings):
            detect_batch(readings, restored, self.stations, self.config, self.live, open_keys, owned=True, save_rows=False)
        log.info("worker.state_replayed", stations=len(stations), readings=len(readings),
                 reason="state read back from a snapshot (restart, rebalance or a failed batch)")

    def _forget(self, station_ids: Iterable[str]) -> None:
        """Drop what a batch that did not happen worked on in place: the next reads the snapshot and replays."""
        ids = list(station_ids)
        self.cache.forget(ids)
        self.live.forget(ids)

    def forget_all(self) -> None:
        """Drop every kept state (a rebalance: another worker may have judged the stations meanwhile)."""
        self.cache.clear()
        self.live.forget(list(self.live))
        self.unsnapshotted.clear()

    def snapshot(self, station_ids: Iterable[str]) -> dict[str, bytes]:
        """`processors.detection.snapshot_states` of this processor's kept states."""
        return snapshot_states(self.cache, self.live, station_ids)

    async def _write_kept(self, conn: psycopg.AsyncConnection[Any], kept: KeptWrites | None,
                          judged: Mapping[str, StationState]) -> dict[str, bytes]:
        """Write the snapshots `kept` finds due after a batch that judged `judged` (their states as the batch left them,
        kept or not yet), and its liveness entries; the snapshots written."""
        if kept is None:
            return {}
        snapshots = snapshot_states(self.cache, self.live, kept.due(judged), judged)
        await _write_state(conn, snapshots, kept.liveness)
        return snapshots

    async def save_state(self, snapshots: Mapping[str, bytes], liveness: Mapping[str, Entry]) -> None:
        """Write detection snapshots and liveness entries in one transaction; waits out PostgreSQL."""
        if not snapshots and not liveness:
            return
        await self._in_transaction(lambda conn: _write_state(conn, snapshots, liveness))
        self.unsnapshotted.difference_update(snapshots)

    async def load_liveness(self) -> dict[str, Entry]:
        """Every stored liveness entry (`processors.worker_state`); waits out PostgreSQL."""
        return await self._in_transaction(load_liveness)

    async def open_keys(self, station_ids: Iterable[str]) -> OpenKeys:
        """(station, parameter, rule) of these stations' alerts that are not resolved; waits out PostgreSQL."""
        ids = list(station_ids)
        return await self._in_transaction(lambda conn: open_alert_keys(conn, ids))

    async def _process_once(self, batch: BatchColumns, states: Mapping[str, States],
                            extra: Sequence[Condition], historical: Mapping[str, datetime] | None = None,
                            kept: KeptWrites | None = None) -> BatchResult:
        try:
            return await self._store_and_judge(batch, states, extra, historical, kept)
        except _JudgedInVain:  # a key was stored already: judged again from the snapshots, the writer on its idempotent way
            return await self._store_and_judge(batch, states, extra, historical, kept)

    async def _store_and_judge(self, batch: BatchColumns, states: Mapping[str, States],
                               extra: Sequence[Condition], historical: Mapping[str, datetime] | None,
                               kept: KeptWrites | None = None) -> BatchResult:
        """One transaction: store the batch, judge its new readings, record their counts, rollups and completeness, apply
        the conditions, write the worker's `kept` snapshots and liveness entries.

        While the last batch had no stored key, its readings are presumed new (`ReadingWriter.presumed_new`) and
        PostgreSQL stores them while they are judged (`ReadingWriter.start_copy`); if one was stored after all, the
        judgement is dropped (`_JudgedInVain`: the states it moved are forgotten, read back from their snapshots).
        A batch begun ahead (`begin_ahead`) comes with its transaction open and its COPY under way; what is read before
        judging (open alerts, snapshots, readings to replay) is then read on the other connection, now that the batch
        before is committed."""
        ahead = await self._take_ahead(batch)
        conn = await self._connection()
        owned: dict[str, StationState | None] = {}
        copying: asyncio.Task[bool] | None = None
        try:
            if ahead is None:
                stored_us = await _transaction_time_us(conn)  # the transaction begins (the connection is not autocommit)
                presumed = self.writer.presumed_new(batch)
                new = presumed if presumed is not None else await self.writer.write(conn, batch)
                open_keys, owned = await self._before_judging(conn, new, states)
                if presumed is not None:
                    copying = await self.writer.start_copy(conn, presumed)
            else:
                stored_us, new, copying = ahead.stored_us, ahead.presumed, ahead.copying
                reader = await self._spare_connection()
                async with reader.transaction():
                    open_keys, owned = await self._before_judging(reader, new, states)
            if copying is not None:
                self.writer.copied_directly()
                self._copying = copying
            new_states, conditions, late = await _judged_while(copying, lambda: detect_batch(
                new, owned, self.stations, self.config, self.live, open_keys, owned=True, save_rows=False), self.judged)
            conflicts = await self.writer.conflicts(conn, batch, new)
            contradicting = [r for r, *_ in conflicts]
            await record_store_counts(conn, batch, new, contradicting)
            await update_rollups(conn, new)
            for state in new_states.values():
                state.stored_through_us = stored_us
            conditions = mark_historical(conditions, historical or {})
            await completeness.record(conn, completeness.tally(new, late), self.stations)
            alerts = await apply_conditions(conn, [*extra, *conditions])
            snapshots = await self._write_kept(conn, kept, new_states)
            await conn.commit()
        except BaseException as exc:
            self._forget(owned)
            await _rolled_back(conn, copying, broken=isinstance(exc, psycopg.OperationalError))
            self.writer.forget_created()  # partitions and series created in the rolled-back transaction are gone
            raise
        self.writer.committed(conn)
        self.unsnapshotted.difference_update(snapshots)
        for station_id, state in new_states.items():
            if states.get(station_id) is None:
                self.cache.keep(station_id, state)
        await self.late_refresh.run(conn, new)
        if late:
            log.info("worker.late_readings", count=len(late), stations=sorted({r.station_id for r in late}),
                     lateness_s=self.config.lateness_s)
        log_conflicts(contradicting)
        sources = _sources(batch) if conflicts else {}
        deadletters = [conflict_deadletter(r, value, status, sources.get(r.station_id, "mqtt")) for r, value, status in conflicts]
        return BatchResult(len(new), alerts, new_states, len(late), deadletters)

    async def process(self, raws: Sequence[bytes] | None = None, *, records: Sequence[Record] | None = None,
                      batch: BatchColumns | None = None, states: Mapping[str, States] | None = None,
                      extra: Sequence[Condition] = (), kept: KeptWrites | None = None) -> BatchResult:
        """Store and evaluate one batch (raw records, records already decoded, or their columns: `decode_batch`);
        see the module docstring for failures.

        `states` are the stations' detection states before the batch (missing: fresh); `extra`
        conditions (e.g. a station back from silence) are applied, and the `kept` snapshots and liveness entries
        written, in the same transaction.
        """
        undecodable: list[DeadLetter] = []
        if batch is None:
            batch = from_records(records) if records is not None else decode_batch(raws or [], undecodable)
        historical = historical_until(batch)
        states = states or {}
        metrics.WORKER_READINGS_IN.inc(len(batch))
        with metrics.WORKER_WRITE_SECONDS.time():
            try:
                result = await self._attempts(lambda: self._process_once(batch, states, extra, historical, kept))
            except Exception as exc:
                if not is_record_failure(exc):
                    raise
                _log("warning", "worker.batch_refused", key=type(exc).__name__, records=len(batch.records),
                     error=safe_text(describe(exc), 300), action="storing record by record")
                result = await self._one_by_one(batch, states, extra, historical)
                if kept is not None:
                    await self.save_state(self.snapshot(kept.due(result.states)), kept.liveness)
        result.deadletters[:0] = undecodable
        metrics.WORKER_READINGS_STORED.inc(result.new)
        return result

    async def _one_by_one(self, batch: BatchColumns, states: Mapping[str, States],
                          extra: Sequence[Condition], historical: Mapping[str, datetime]) -> BatchResult:
        """The batch record by record, each in its own transaction; a record that still fails is quarantined."""
        total = BatchResult(0, [], {})
        pending_extra = list(extra)
        for (received_at, source), rows in batch.record_rows():
            record = batch.take(rows)
            try:
                part = await self._attempts(functools.partial(self._process_once, record, states, tuple(pending_extra),
                                                              historical))
            except Exception as exc:
                if not is_record_failure(exc):
                    raise
                readings = record.readings()
                total.deadletters.append(quarantine_record(_record_bytes(readings, received_at, source), exc,
                                                           _record_key(readings)))
                _log("error", "worker.record_quarantined", key=type(exc).__name__, station=_record_key(readings),
                     readings=len(readings), error=safe_text(describe(exc), 300),
                     fix="GET /api/v1/deadletters?reason=quarantined&stage=worker shows its head, size and SHA-256")
                continue
            pending_extra = []
            total.merge(part)
        if pending_extra:
            total.alerts.extend(await self.apply(pending_extra))
        return total

    async def _attempts(self, work: Callable[[], Awaitable[T]]) -> T:
        """`work` until it succeeds: for ever while PostgreSQL is unavailable, RECORD_ATTEMPTS times when it fails for its content."""
        refused = 0

        def retry(exc: BaseException) -> bool:
            nonlocal refused
            if not isinstance(exc, Exception):  # cancelled (the worker stops) or interrupted: not the batch's failure
                return False
            if not is_record_failure(exc):
                return True
            refused += 1
            return refused < RECORD_ATTEMPTS

        async for attempt in AsyncRetrying(wait=wait_exponential(multiplier=0.2, max=10), retry=retry_if_exception(retry),
                                           before_sleep=_log_retry, reraise=True):
            with attempt:
                return await work()
        raise AssertionError("unreachable: tenacity re-raises the last failure")

    async def apply(self, conditions: Sequence[Condition]) -> list[dict[str, Any]]:
        """Apply conditions found outside a batch (the liveness timer); waits out PostgreSQL, never loops on a refusal."""
        return await self._in_transaction(lambda conn: apply_conditions(conn, conditions))

    async def _in_transaction(self, work: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]]) -> T:
        """`work` in a transaction of the processor's connection, through `_attempts` (a broken connection is closed
        and opened again for the next attempt)."""
        async def once() -> T:
            conn = await self._connection()
            try:
                async with conn.transaction():
                    return await work(conn)
            except psycopg.OperationalError:
                await conn.close()
                raise
        return await self._attempts(once)

    async def close(self) -> None:
        """Close the database connections, rolling back a transaction begun ahead."""
        await self.drop_ahead()
        for conn in (self._conn, self._spare):
            if conn is not None:
                await conn.close()


@dataclass
class _Ahead:
    """A batch's transaction begun before the batch before it was committed (`BatchProcessor.begin_ahead`)."""

    batch: BatchColumns
    conn: psycopg.AsyncConnection[Any]
    stored_us: int
    """The transaction's time (`_transaction_time_us`)."""
    presumed: BatchColumns
    """The readings presumed new (`ReadingWriter.presumed_new`), which the COPY stores."""
    copying: asyncio.Task[bool]
    """The COPY (`ReadingWriter.start_copy`)."""


async def _rolled_back(conn: psycopg.AsyncConnection[Any], copying: asyncio.Task[bool] | None, broken: bool) -> None:
    """End a failed batch's transaction: rolled back, or the connection closed (the server rolls it back) when it is
    broken, when the COPY was still under way (a failure before the judging, of a batch begun ahead) or when the
    rollback fails too."""
    if copying is not None and not copying.done():
        await _abandoned(conn, copying)
        return
    if not broken:
        try:
            await conn.rollback()
            return
        except psycopg.Error:
            pass
    await conn.close()


async def _abandoned(conn: psycopg.AsyncConnection[Any], copying: asyncio.Task[bool]) -> None:
    """A transaction whose COPY may still be under way, ended: the connection closed (the server rolls it back), then
    the COPY, which fails on it, awaited. Closed first: a COPY cancelled on an open connection left psycopg logging a
    failed rollback of its savepoint."""
    await conn.close()
    await asyncio.gather(copying, return_exceptions=True)


class _JudgedInVain(Exception):
    """The readings judged as new while the direct COPY stored them were not all new: the batch is done again."""


async def _judged_while(copying: asyncio.Task[bool] | None, judge: Callable[[], T], judged: asyncio.Event) -> T:
    """`judge()` while the COPY `copying` (if any) stores the readings judged; raises `_JudgedInVain` when it refused
    them. The COPY is awaited even when judging fails, so the connection is free again for the rollback. `judged` is
    set as soon as `judge` returns, before the COPY is awaited: the wait for PostgreSQL is the worker's time to decode
    the next batch (signalled after the COPY, the decoding fell into the transaction's last statements and slowed their
    Python by half).

    With a COPY, `judge` runs in a thread: the event loop then goes on sending the rows (a socket takes a few hundred
    kilobytes at a time, a batch's rows are megabytes) while the thread judges them, and PostgreSQL stores them on the
    other core. The kept states are the batch's alone meanwhile: the batch holds the worker's lock, which the timers
    that touch them take too."""
    try:
        result = await asyncio.to_thread(judge) if copying is not None else judge()
        judged.set()
    finally:
        stored = await copying if copying is not None else True
    if not stored:
        raise _JudgedInVain()
    return result


_REPLAY = """
SELECT r.station_id, r.parameter, r.ts, r.value, r.unit, r.status
FROM unnest(%s::text[], %s::timestamptz[], %s::timestamptz[]) AS s(station_id, since, oldest)
JOIN LATERAL (SELECT * FROM readings r WHERE r.series_id IN (SELECT id FROM series WHERE station_id = s.station_id)
              AND r.received_at > s.since
              AND r.received_at < now() AND r.ts >= coalesce(s.oldest, '-infinity')) r ON true
ORDER BY r.received_at, r.station_id, r.ts, r.parameter
"""
"""A station's readings stored after its snapshot (`received_at` is the storing transaction's time) and before this
transaction, from its watermark on."""

async def _write_state(conn: psycopg.AsyncConnection[Any], snapshots: Mapping[str, bytes],
                       liveness: Mapping[str, Entry]) -> None:
    """Detection snapshots and liveness entries, in the caller's transaction."""
    await save_snapshots(conn, snapshots)
    await save_liveness(conn, liveness)


async def _transaction_time_us(conn: psycopg.AsyncConnection[Any]) -> int:
    """The transaction's `now()`, which the readings it stores get as `received_at`, in epoch microseconds."""
    async with conn.cursor() as cur:
        await cur.execute("SELECT now()")
        row = await cur.fetchone()
    assert row is not None
    return epoch_us(row[0])


def _sources(batch: BatchColumns) -> dict[str, str]:
    """Per station: the source of its last record in the batch."""
    names, station_of = batch.stations()
    return {names[station]: source for (_, source), rows in batch.record_rows() for station in station_of[rows].tolist()}


def _record_key(readings: Sequence[Reading]) -> bytes | None:
    return readings[0].station_id.encode("utf-8", "backslashreplace") if readings else None


def _record_bytes(readings: Sequence[Reading], received_at: datetime, source: str) -> bytes:
    """A record as bytes again, for its quarantine head and hash (re-encoded: the raw bytes are not kept past decoding)."""
    try:
        return encode_readings(readings[0].station_id if readings else "", readings, received_at, source)
    except Exception:  # the reading that broke the store may not encode either
        return repr((readings, received_at, source)).encode("utf-8", "backslashreplace")


def _log_retry(state: Any) -> None:
    exc = state.outcome.exception()
    if not is_record_failure(exc):
        metrics.WORKER_BATCH_RETRIES.inc()
    _log("warning", "worker.batch_retry", key=type(exc).__name__, attempt=state.attempt_number,
         error=safe_text(describe(exc), 300),
         fix=store_fix(exc, "check PostgreSQL (quantrac stack status); the batch is retried and its offset held")
         if not is_record_failure(exc) else "the batch is tried again, then record by record")
