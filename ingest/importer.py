"""`quantrac import`: backfill a station's history through the live pipeline.

Rows become the same station messages the bridge produces (one `quantrac.readings` record per
timestamp, several readings each, source `import`) after the same validation
(`ingest.payload.check_time` and `validate_reading`); a rejected row or reading goes to the
dead-letter topic with its reason, as on every other path. The worker stores, rolls up and
evaluates them like live data; alerts they raise are marked historical and never notified.

Resumable: after Kafka confirmed a chunk, `import_progress` records how many units (CSV rows or
TT10 files) of this input (by SHA-256) are safe; a rerun skips them. Idempotent: the store's key
dedups readings, and a finished input sends nothing again. `--rate` caps readings per second with
a token bucket so live traffic keeps its share of the worker.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from pathlib import Path
from typing import Callable, Iterable, Iterator
from zoneinfo import ZoneInfo

import psycopg
import structlog

from ingest.import_sources import CsvRow, Format, TT10File, Unit, count_units, fingerprint, read_units
from ingest.payload import Limits, Rejection, check_time, now_utc, validate_reading
from ingest.producer import Record, make_producer, send_or_quarantine
from ingest.tt10_watch import judge_file, verdict_records
from quantrac import metrics
from quantrac.db import connect, load_station_record
from quantrac.domain import Reading, Station, utc
from quantrac.failures import describe
from quantrac.settings import Settings
from quantrac.wire import encode_deadletter, encode_quarantine, encode_readings

log = structlog.get_logger(__name__)

SOURCE = "import"
CHUNK_UNITS = 2000
"""Units sent to Kafka before one wait for confirmation and one progress write."""


class ImportRefused(RuntimeError):
    """The import cannot start (unknown or retired station); the message names the fix."""


@dataclass
class ImportResult:
    station_id: str
    sha256: str
    units_total: int
    units_skipped: int
    units_read: int = 0
    readings_sent: int = 0
    rejected: int = 0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.readings_sent / self.seconds if self.seconds > 0 else 0.0


class TokenBucket:
    """`take(n)` waits until n tokens are available; tokens refill at `rate` per second up to `rate` (one second's burst)."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic, wait: Callable[[float], None] = time.sleep) -> None:
        self.rate, self.clock, self.wait = rate, clock, wait
        self.tokens, self.at = rate, clock()

    def take(self, n: int) -> None:
        now = self.clock()
        self.tokens = min(self.rate, self.tokens + (now - self.at) * self.rate)
        self.at = now
        need = min(n, self.rate)
        if self.tokens < need:
            self.wait((need - self.tokens) / self.rate)
            self.tokens, self.at = need, self.clock()
        self.tokens -= n


def judge_row(row: CsvRow, station: Station, now: datetime, limits: Limits) -> tuple[list[Reading], list[Rejection]]:
    """The valid readings of one CSV row and the rejections of the rest (the row whole when its time is bad)."""
    if row.ts is None:
        return [], [Rejection("bad_time", f"station {station.id}, row {row.number}: {row.time_error}", station.id, None, row.number)]  # type: ignore[arg-type]
    ts = utc(row.ts)
    late_or_early = check_time(ts, now, limits, station.id)
    if late_or_early is not None:
        return [], [Rejection(late_or_early.reason, f"row {row.number}: {late_or_early.message}", station.id, None, row.number)]
    readings: list[Reading] = []
    rejections: list[Rejection] = []
    for item in row.items:
        outcome = validate_reading(item, row.number, station, ts)
        if isinstance(outcome, Reading):
            readings.append(outcome)
        else:
            rejections.append(Rejection(outcome.reason, f"row {row.number}: {outcome.message}", station.id,
                                        outcome.parameter, row.number))
    return readings, rejections


READINGS_PER_RECORD = 1000
"""Most readings in one Kafka record: rows of one timestamp (several stations' exports merged, a long
wide row) would otherwise grow one record past Kafka's 1 MiB request limit."""


def chunk_records(units: Iterable[Unit], station: Station, now: datetime, limits: Limits, settings: Settings,
                  label: str) -> tuple[list[Record], int, int]:
    """Kafka records of a chunk: one readings record per run of equal timestamps, one dead letter per rejection.

    Returns (records, readings, rejections)."""
    key = station.id.encode()
    records: list[Record] = []
    pending: list[Reading] = []
    sent = rejected = 0

    def flush() -> None:
        if pending:
            records.append((settings.readings_topic, key, encode_readings(station.id, pending, now, SOURCE)))
            pending.clear()

    for unit in units:
        if isinstance(unit, TT10File):
            data = unit.path.read_bytes()
            verdict = judge_file(unit.path.name, data, {station.id: station}, _any_code(unit.path.name, station.id), now, limits)
            flush()
            pending.extend(verdict.readings)
            sent += len(verdict.readings)
            dead = [r for r in verdict_records(verdict, data, now, settings.readings_topic, settings.deadletter_topic,
                                               limits.deadletter_payload_cap)
                    if r[0] == settings.deadletter_topic]
            records.extend(dead)
            rejected += len(dead)
            continue
        try:
            readings, rejections = judge_row(unit, station, now, limits)
        except Exception as exc:  # a bug of ours on this row: set it aside, go on with the next
            log.exception("import.row_quarantined", station=station.id, row=unit.number, error=describe(exc))
            metrics.QUARANTINED.labels("import").inc()
            records.append((settings.deadletter_topic, key, encode_quarantine(
                stage="import", raw=unit.raw.encode("utf-8", "backslashreplace"), error=describe(exc), received_at=now,
                topic=label, source=SOURCE, station_id=station.id)))
            rejected += 1
            continue
        if pending and readings and (pending[-1].ts != readings[0].ts or len(pending) >= READINGS_PER_RECORD):
            flush()
        pending.extend(readings)
        sent += len(readings)
        for r in rejections:
            records.append((settings.deadletter_topic, key, encode_deadletter(
                topic=label, payload=unit.raw.encode("utf-8", "backslashreplace"), reason=r.reason, message=r.message,
                received_at=now, station_id=station.id, parameter=r.parameter, index=unit.number, source=SOURCE,
                cap=limits.deadletter_payload_cap)))
        rejected += len(rejections)
    flush()
    return records, sent, rejected


def _any_code(name: str, station_id: str) -> dict[str, str]:
    """Map the file name's <Station> code to the station being imported (the command names the station)."""
    parts = name.rsplit(".", 1)[0].split("_")
    return {parts[2]: station_id} if len(parts) >= 4 else {}


def _progress(conn: psycopg.Connection, sha: str, station_id: str) -> int:
    row = conn.execute("SELECT rows_confirmed FROM import_progress WHERE file_sha256 = %s AND station_id = %s",
                       (sha, station_id)).fetchone()
    return int(row[0]) if row else 0


def _save_progress(conn: psycopg.Connection, sha: str, station_id: str, total: int, confirmed: int, sent: int, rejected: int) -> None:
    conn.execute("INSERT INTO import_progress (file_sha256, station_id, rows_total, rows_confirmed, readings_sent, rejected) "
                 "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (file_sha256, station_id) DO UPDATE SET "
                 "rows_total = EXCLUDED.rows_total, rows_confirmed = EXCLUDED.rows_confirmed, "
                 "readings_sent = import_progress.readings_sent + %s, rejected = import_progress.rejected + %s, updated_at = now()",
                 (sha, station_id, total, confirmed, sent, rejected, sent, rejected))


def _chunks(units: Iterator[Unit], size: int) -> Iterator[list[Unit]]:
    while chunk := list(islice(units, size)):
        yield chunk


def _station(conn: psycopg.Connection, station_id: str) -> Station:
    found = load_station_record(conn, station_id)
    if found is None:
        raise ImportRefused(f"station {station_id!r} is not in the registry; register it first (quantrac stations add FILE)")
    station, retired_at = found
    if retired_at is not None:
        raise ImportRefused(f"station {station_id} was retired at {retired_at.isoformat()} (station_retired); readings of a "
                           "retired station are refused; re-activate it with quantrac stations update if this is wrong")
    return station


def run_import(settings: Settings, station_id: str, path: Path, *, fmt: Format = "auto", tz: str = "Asia/Ho_Chi_Minh",
               rate: float | None = None, show_progress: bool = True, chunk_units: int = CHUNK_UNITS) -> ImportResult:
    """Import one CSV file or TT10 folder for `station_id`; see the module docstring."""
    limits = Limits.from_settings(settings)
    sha = fingerprint(path)
    total = count_units(path)
    bucket = TokenBucket(rate) if rate else None
    label = f"import:{path.name}"
    with connect(settings.pg_dsn) as conn:
        station = _station(conn, station_id)
        done = _progress(conn, sha, station_id)
        result = ImportResult(station_id, sha, total, done)
        log_id = conn.execute("INSERT INTO import_log (station_id, source, file_sha256, rows_skipped) VALUES (%s, %s, %s, %s) "
                              "RETURNING id", (station_id, str(path), sha, done)).fetchone()[0]  # type: ignore[index]
        log.info("import.started", station=station_id, file=str(path), sha256=sha, units=total, already_confirmed=done)
        units = islice(read_units(path, fmt, ZoneInfo(tz)), done, None)
        producer = make_producer(settings, f"quantrac-import-{os.getpid()}") if done < total else None
        started = time.monotonic()
        bar = _bar(show_progress, total, done)
        try:
            for chunk in _chunks(units, chunk_units):
                records, sent, rejected = chunk_records(chunk, station, now_utc(), limits, settings, label)
                if bucket is not None:
                    bucket.take(sent)
                if records and producer is not None:
                    send_or_quarantine(producer, records, stage="import", deadletter_topic=settings.deadletter_topic)
                done += len(chunk)
                _save_progress(conn, sha, station_id, total, done, sent, rejected)
                result.units_read += len(chunk)
                result.readings_sent += sent
                result.rejected += rejected
                result.seconds = time.monotonic() - started
                if bar is not None:
                    bar[0].update(bar[1], completed=done, readings=result.readings_sent, rate=round(result.rate))  # type: ignore[attr-defined]
                log.info("import.progress", station=station_id, confirmed=done, total=total, readings=result.readings_sent,
                         rejected=result.rejected, readings_per_s=round(result.rate, 1))
        finally:
            if bar is not None:
                bar[0].stop()
            if producer is not None:
                producer.close(timeout=10)
            conn.execute("UPDATE import_log SET finished_at = now(), rows_read = %s, readings_sent = %s, rejected = %s "
                         "WHERE id = %s", (result.units_read, result.readings_sent, result.rejected, log_id))
    log.info("import.finished", station=station_id, units_read=result.units_read, skipped=result.units_skipped,
             readings=result.readings_sent, rejected=result.rejected, seconds=round(result.seconds, 2),
             readings_per_s=round(result.rate, 1))
    return result


def _bar(show: bool, total: int, done: int) -> tuple[object, object] | None:
    """A rich progress bar on stderr with rate and ETA (rows), or None."""
    if not show:
        return None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

    progress = Progress(TextColumn("import"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
                        TextColumn("{task.fields[readings]} readings, {task.fields[rate]} readings/s, ETA"),
                        TimeRemainingColumn(), console=Console(stderr=True))
    task = progress.add_task("import", total=total, completed=done, readings=0, rate=0)
    progress.start()
    return progress, task
