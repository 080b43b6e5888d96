"""`quantrac import`: backfill a station's history through the live pipeline.

Rows become the same station messages the bridge produces (one `quantrac.readings` record per
timestamp, several readings each, source `import`) after the same validation
(`ingest.payload.check_time` and `validate_reading`); a rejected row or reading goes to the
dead-letter topic with its reason, as on every other path. The worker stores, rolls up and
evaluates them like live data; alerts they raise are marked historical and never notified.

Resumable: after Kafka confirmed a chunk, `import_progress` records how many units (CSV rows or
TT10 files) of this input (by SHA-256) were read and their readings confirmed; units with a rejected
reading are kept in `import_rejected_units`, so the next run (after the registry or the station's
retention is fixed) reads them again unless told `--no-retry-rejected`. Idempotent: the store's key
dedups readings, and a finished input with nothing rejected sends nothing again. `--rate` caps
readings per second with a token bucket so live traffic keeps its share of the worker.

The run ends with the truth: rows read, readings sent, and readings rejected by reason with the
first examples and the fix (`ImportResult.outcomes`, also kept in `import_log.outcomes`);
`--dry-run` judges the file the same way and sends nothing.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator
from zoneinfo import ZoneInfo

import orjson
import psycopg
import structlog

from ingest.import_sources import CsvRow, Format, TT10File, Unit, count_units, fingerprint, read_units
from ingest.payload import Limits, Rejection, check_time, validate_reading
from ingest.producer import Record, make_producer, send_or_quarantine
from ingest.tt10_watch import judge_file, verdict_records
from quantrac import metrics
from quantrac.clock import utc_now
from quantrac.db import connect, load_station_record, save_station_audited
from quantrac.domain import Reading, Station, utc
from quantrac.failures import RateLimitedLog, describe
from quantrac.settings import Settings
from quantrac.wire import encode_deadletter, encode_quarantine, encode_readings

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

log = structlog.get_logger(__name__)
_log = RateLimitedLog(log)

SOURCE = "import"
CHUNK_UNITS = 2000
"""Units sent to Kafka before one wait for confirmation and one progress write."""


class ImportRefused(RuntimeError):
    """The import cannot start (unknown or retired station); the message names the fix."""


FIXES: dict[str, str] = {
    "too_old": "give the station its own retention (retention_days in its registry record, quantrac stations update) "
               "or import with --retention-days N, then run the same import again: rejected rows are sent again",
    "future": "check the times' offsets and --tz (times without an offset are read in --tz), then import again",
    "unknown_parameter": "add the parameter to the station (quantrac stations update FILE) or rename the column to the "
                         "registry's symbol, then run the same import again: rejected rows are sent again",
    "bad_time": "write the time as ISO 8601, e.g. 2026-11-29 21:05:00 or 2026-11-29T21:05:00+07:00, and import the file again",
    "bad_value": "write numbers with a decimal point or comma (an empty cell is no reading) and import the file again",
    "bad_unit": "use the registry's unit (or one with an exact conversion) in the unit column and import the file again",
    "missing_value": "give a value, or status 01/02 for a parameter that could not measure, and import the file again",
    "conflict": "the file holds two different values for one parameter and time; keep one and import the file again",
    "quarantined": "a row the importer failed on; report it with the dead letter (quantrac deadletters), then import again",
}
"""What to do about a rejection reason, printed with its first examples."""

EXAMPLES = 3


@dataclass
class Outcomes:
    """What became of a run's readings: rejections by reason with examples, and which units had any."""

    counts: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    rejected_units: dict[int, str] = field(default_factory=dict)
    """Position (in the chunk being judged) of each unit with a rejection → its first reason."""
    record_units: dict[int, tuple[list[int], int]] = field(default_factory=dict)
    """Readings record (position in the chunk's records) → (unit positions in it, readings in it)."""

    def note(self, position: int, reason: str, message: str, n: int = 1) -> None:
        """Count `n` rejections for `reason` at unit `position`, keeping the first EXAMPLES messages of each reason."""
        self.counts[reason] += n
        shown = self.examples.setdefault(reason, [])
        if len(shown) < EXAMPLES:
            shown.append(message)
        self.rejected_units.setdefault(position, reason)

    def merge(self, other: "Outcomes") -> None:
        """Add another chunk's counts and examples (up to EXAMPLES a reason); not its unit positions, which are chunk-local."""
        self.counts.update(other.counts)
        for reason, shown in other.examples.items():
            mine = self.examples.setdefault(reason, [])
            mine.extend(shown[:EXAMPLES - len(mine)])

    def as_json(self) -> dict[str, dict[str, Any]]:
        """Rejections by reason, most frequent first, each with its count, first examples and the fix to print."""
        return {reason: {"count": n, "examples": self.examples.get(reason, []),
                         "fix": FIXES.get(reason, "see the examples and the dead letters (quantrac deadletters); fix the "
                                          "file or the registry and import again")}
                for reason, n in self.counts.most_common()}


@dataclass
class ImportResult:
    """What importing one file did: counts of sent, rejected and duplicate readings, and the file's hash."""
    station_id: str
    sha256: str
    units_total: int
    units_skipped: int
    units_read: int = 0
    readings_sent: int = 0
    rejected: int = 0
    seconds: float = 0.0
    units_retried: int = 0
    """Units rejected by an earlier run and read again."""
    units_rejected: int = 0
    """Units with at least one rejected reading in this run (kept for the next run to retry)."""
    rejected_pending: int = 0
    """Units rejected by earlier runs that this run did not retry (--no-retry-rejected)."""
    dry_run: bool = False
    outcomes: Outcomes = field(default_factory=Outcomes)

    @property
    def rate(self) -> float:
        """Readings sent per second of the run; 0 when it took no measurable time."""
        return self.readings_sent / self.seconds if self.seconds > 0 else 0.0

    @property
    def nothing_sent(self) -> bool:
        """Rows were read and not one reading could be sent: the run failed (the CLI exits 1)."""
        return self.units_read > 0 and self.readings_sent == 0

    def summary(self) -> str:
        """The lines the CLI prints: counts, then each rejection reason with its examples and fix."""
        earlier = f", {self.units_retried} rejected earlier read again" if self.units_retried else ""
        verb = "readings valid (dry run, nothing sent)" if self.dry_run else "readings sent"
        lines = [f"{self.station_id}: {self.units_read} rows read ({self.units_skipped} already confirmed{earlier}), "
                 f"{self.readings_sent} {verb}, {self.rejected} rejected (dead-lettered), {self.rate:.0f} readings/s"]
        for reason, outcome in self.outcomes.as_json().items():
            lines.append(f"  rejected {reason}: {outcome['count']}; fix: {outcome['fix']}")
            lines.extend(f"    e.g. {example}" for example in outcome["examples"])
        if self.rejected_pending:
            lines.append(f"  {self.rejected_pending} rows rejected by an earlier run were not retried; "
                         "run again without --no-retry-rejected to send them")
        if self.nothing_sent:
            lines.append(f"  nothing could be {'sent' if not self.dry_run else 'kept'}: fix the causes above and run the same "
                         "import again")
        return "\n".join(lines)


class TokenBucket:
    """`take(n)` waits until n tokens are available; tokens refill at `rate` per second up to `rate` (one second's burst)."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic, wait: Callable[[float], None] = time.sleep) -> None:
        self.rate, self.clock, self.wait = rate, clock, wait
        self.tokens, self.at = rate, clock()

    def take(self, n: int) -> None:
        """Block (through `wait`) until `n` tokens are available, then spend them.

        A take larger than one second's burst waits for a full bucket and leaves it in debt, so the average rate still holds.
        """
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
        return [], [Rejection("bad_time", f"station {station.id}, row {row.number}: {row.time_error}", station.id, None, row.number)]
    ts = utc(row.ts)
    late_or_early = check_time(ts, now, limits.for_station(station), station.id)
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
                  label: str, outcomes: Outcomes | None = None) -> tuple[list[Record], int, int]:
    """Kafka records of a chunk: one readings record per run of equal timestamps, one dead letter per rejection.

    Returns (records, readings, rejections); `outcomes` collects the rejections by reason and unit."""
    chunk = _Chunk(station, now, limits, settings, label, outcomes if outcomes is not None else Outcomes())
    for position, unit in enumerate(units):
        if isinstance(unit, TT10File):
            chunk.add_file(position, unit)
            continue
        try:
            readings, rejections = judge_row(unit, station, now, limits)
        except Exception as exc:  # a bug of ours on this row: set it aside, go on with the next
            chunk.quarantine_row(position, unit, exc)
            continue
        chunk.add_row(position, unit, readings, rejections)
    chunk.flush()
    return chunk.records, chunk.sent, chunk.rejected


@dataclass
class _Chunk:
    """The records of one chunk as they are built: readings wait in `pending` until their timestamp changes."""

    station: Station
    now: datetime
    limits: Limits
    settings: Settings
    label: str
    seen: Outcomes
    records: list[Record] = field(default_factory=list)
    pending: list[Reading] = field(default_factory=list)
    pending_units: list[int] = field(default_factory=list)
    sent: int = 0
    rejected: int = 0

    @property
    def key(self) -> bytes:
        return self.station.id.encode()

    def flush(self) -> None:
        if self.pending:
            self.seen.record_units[len(self.records)] = (sorted(set(self.pending_units)), len(self.pending))
            self.records.append((self.settings.readings_topic, self.key,
                                 encode_readings(self.station.id, self.pending, self.now, SOURCE)))
            self.pending = []
            self.pending_units = []

    def _keep(self, position: int, readings: list[Reading]) -> None:
        self.pending.extend(readings)
        self.pending_units.extend([position] * len(readings))
        self.sent += len(readings)

    def add_file(self, position: int, unit: TT10File) -> None:
        data = unit.path.read_bytes()
        verdict = judge_file(unit.path.name, data, {self.station.id: self.station}, _any_code(unit.path.name, self.station.id),
                             self.now, self.limits)
        self.flush()
        self._keep(position, verdict.readings)
        dead = [r for r in verdict_records(verdict, data, self.now, self.settings.readings_topic,
                                           self.settings.deadletter_topic, self.limits.deadletter_payload_cap)
                if r[0] == self.settings.deadletter_topic]
        self.records.extend(dead)
        self.rejected += len(dead)
        if verdict.file_rejection is not None:
            self.seen.note(position, verdict.file_rejection.reason, f"{unit.path.name}: {verdict.file_rejection.message}",
                           max(len(dead), 1))
        for line in verdict.rejected_lines:
            self.seen.note(position, line.reason, line.message)

    def quarantine_row(self, position: int, unit: CsvRow, exc: Exception) -> None:
        _log("exception", "import.row_quarantined", key=type(exc).__name__, station=self.station.id, row=unit.number,
             error=describe(exc))
        metrics.QUARANTINED.labels("import").inc()
        self.records.append((self.settings.deadletter_topic, self.key, encode_quarantine(
            stage="import", raw=unit.raw.encode("utf-8", "backslashreplace"), error=describe(exc), received_at=self.now,
            topic=self.label, source=SOURCE, station_id=self.station.id)))
        self.rejected += 1
        self.seen.note(position, "quarantined", f"row {unit.number}: {describe(exc)}")

    def add_row(self, position: int, unit: CsvRow, readings: list[Reading], rejections: list[Rejection]) -> None:
        if self.pending and readings and (self.pending[-1].ts != readings[0].ts or len(self.pending) >= READINGS_PER_RECORD):
            self.flush()
        self._keep(position, readings)
        for r in rejections:
            self.seen.note(position, r.reason, r.message)
            self.records.append((self.settings.deadletter_topic, self.key, encode_deadletter(
                topic=self.label, payload=unit.raw.encode("utf-8", "backslashreplace"), reason=r.reason, message=r.message,
                received_at=self.now, station_id=self.station.id, parameter=r.parameter, index=unit.number, source=SOURCE,
                cap=self.limits.deadletter_payload_cap)))
        self.rejected += len(rejections)


def _any_code(name: str, station_id: str) -> dict[str, str]:
    """Map the file name's <Station> code to the station being imported (the command names the station)."""
    parts = name.rsplit(".", 1)[0].split("_")
    return {parts[2]: station_id} if len(parts) >= 4 else {}


def _progress(conn: psycopg.Connection, sha: str, station_id: str) -> int:
    row = conn.execute("SELECT rows_confirmed FROM import_progress WHERE file_sha256 = %s AND station_id = %s",
                       (sha, station_id)).fetchone()
    return int(row[0]) if row else 0


def _rejected_before(conn: psycopg.Connection, sha: str, station_id: str) -> set[int]:
    rows = conn.execute("SELECT unit_index FROM import_rejected_units WHERE file_sha256 = %s AND station_id = %s",
                        (sha, station_id)).fetchall()
    return {int(r[0]) for r in rows}


def _save_progress(conn: psycopg.Connection, sha: str, station_id: str, total: int, confirmed: int, sent: int, rejected: int,
                   read_indices: list[int], rejected_units: dict[int, str]) -> None:
    """After Kafka confirmed a chunk: the resume point, and which of its units had rejections (retried next run)."""
    with conn.transaction():
        conn.execute("INSERT INTO import_progress (file_sha256, station_id, rows_total, rows_confirmed, readings_sent, rejected) "
                     "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (file_sha256, station_id) DO UPDATE SET "
                     "rows_total = EXCLUDED.rows_total, rows_confirmed = greatest(import_progress.rows_confirmed, "
                     "EXCLUDED.rows_confirmed), readings_sent = import_progress.readings_sent + %s, "
                     "rejected = import_progress.rejected + %s, updated_at = now()",
                     (sha, station_id, total, confirmed, sent, rejected, sent, rejected))
        conn.execute("DELETE FROM import_rejected_units WHERE file_sha256 = %s AND station_id = %s AND unit_index = ANY(%s)",
                     (sha, station_id, read_indices))
        if rejected_units:
            with conn.cursor() as cur:
                cur.executemany("INSERT INTO import_rejected_units (file_sha256, station_id, unit_index, reason) "
                                "VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                                [(sha, station_id, i, reason) for i, reason in rejected_units.items()])


def _chunks(units: Iterator[tuple[int, Unit]], size: int) -> Iterator[list[tuple[int, Unit]]]:
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


def _keep_for(conn: psycopg.Connection, station: Station, retention_days: int, actor: str) -> Station:
    """The station with its own retention set in the registry (audited): the worker's retention then keeps the archive."""
    if station.retention_days == retention_days:
        return station
    kept = station.model_copy(update={"retention_days": retention_days})
    save_station_audited(conn, kept, actor)
    log.info("import.station_retention", station=station.id, retention_days=retention_days, before=station.retention_days)
    return kept


def _units_to_read(path: Path, fmt: Format, tz: str, done: int, retry: set[int],
                   skip: frozenset[str]) -> Iterator[tuple[int, Unit]]:
    """(position, unit) of the units after the resume point, and before it those rejected earlier (retried)."""
    units = read_units(path, fmt, ZoneInfo(tz), skip)
    if not retry:
        yield from enumerate(islice(units, done, None), start=done)
        return
    for i, unit in enumerate(units):
        if i >= done or i in retry:
            yield i, unit


def run_import(settings: Settings, station_id: str, path: Path, *, fmt: Format = "auto", tz: str = "Asia/Ho_Chi_Minh",
               rate: float | None = None, show_progress: bool = True, chunk_units: int = CHUNK_UNITS,
               dry_run: bool = False, retry_rejected: bool = True, retention_days: int | None = None,
               actor: str = "import", skip_columns: frozenset[str] = frozenset()) -> ImportResult:
    """Import one CSV file or TT10 folder for `station_id`; see the module docstring.

    `retention_days` first sets the station's own retention in the registry (so old rows pass
    ingest's too_old bound and survive the worker's retention pass); `dry_run` judges every unit and
    sends and records nothing but the import_log row."""
    limits = Limits.from_settings(settings)
    sha = fingerprint(path)
    total = count_units(path)
    bucket = TokenBucket(rate) if rate else None
    label = f"import:{path.name}"
    with connect(settings.pg_dsn) as conn:
        station = _station(conn, station_id)
        if retention_days is not None and not dry_run:
            station = _keep_for(conn, station, retention_days, actor)
        elif retention_days is not None:
            station = station.model_copy(update={"retention_days": retention_days})
        done = 0 if dry_run else _progress(conn, sha, station_id)
        earlier = set() if dry_run else _rejected_before(conn, sha, station_id)
        retry = earlier if retry_rejected else set()
        result = ImportResult(station_id, sha, total, done, dry_run=dry_run,
                              rejected_pending=0 if retry_rejected else len(earlier))
        log_id = conn.execute("INSERT INTO import_log (station_id, source, file_sha256, rows_skipped, dry_run) "
                              "VALUES (%s, %s, %s, %s, %s) RETURNING id",
                              (station_id, str(path), sha, done - len(retry), dry_run)).fetchone()[0]  # type: ignore[index]  # fetchone() is typed Optional; INSERT ... RETURNING always returns one row
        result.units_skipped = done - len(retry)
        log.info("import.started", station=station_id, file=str(path), sha256=sha, units=total, already_confirmed=done,
                 retried=len(retry), dry_run=dry_run)
        units = _units_to_read(path, fmt, tz, done, retry, skip_columns)
        producer = make_producer(settings, f"quantrac-import-{os.getpid()}") if (done < total or retry) and not dry_run else None
        started = time.monotonic()
        bar = _bar(show_progress, total, done)
        try:
            for chunk in _chunks(units, chunk_units):
                outcomes = Outcomes()
                records, sent, rejected = chunk_records([u for _, u in chunk], station, utc_now(), limits, settings, label,
                                                        outcomes)
                if bucket is not None:
                    bucket.take(sent)
                if records and producer is not None:
                    quarantined = send_or_quarantine(producer, records, stage="import", deadletter_topic=settings.deadletter_topic)
                    refused = _refused_readings(quarantined, outcomes, chunk)
                    sent -= refused
                    rejected += refused
                indices = [i for i, _ in chunk]
                done = max(done, indices[-1] + 1)
                rejected_units = {chunk[p][0]: reason for p, reason in outcomes.rejected_units.items()}
                if not dry_run:
                    _save_progress(conn, sha, station_id, total, done, sent, rejected, indices, rejected_units)
                result.units_retried += sum(1 for i in indices if i in retry)
                result.units_rejected += len(rejected_units)
                result.outcomes.merge(outcomes)
                result.units_read += len(chunk)
                result.readings_sent += sent
                result.rejected += rejected
                result.seconds = time.monotonic() - started
                if bar is not None:
                    bar[0].update(bar[1], completed=done, readings=result.readings_sent, rate=round(result.rate))
                log.info("import.progress", station=station_id, confirmed=done, total=total, readings=result.readings_sent,
                         rejected=result.rejected, readings_per_s=round(result.rate, 1))
        finally:
            if bar is not None:
                bar[0].stop()
            if producer is not None:
                producer.close(timeout=10)
            conn.execute("UPDATE import_log SET finished_at = now(), rows_read = %s, readings_sent = %s, rejected = %s, "
                         "rows_retried = %s, rows_rejected = %s, outcomes = %s::jsonb WHERE id = %s",
                         (result.units_read, result.readings_sent, result.rejected, result.units_retried,
                          result.units_rejected, orjson.dumps(result.outcomes.as_json()).decode(), log_id))
    log.info("import.finished", station=station_id, units_read=result.units_read, skipped=result.units_skipped,
             retried=result.units_retried, readings=result.readings_sent, rejected=result.rejected,
             by_reason=dict(result.outcomes.counts), seconds=round(result.seconds, 2), readings_per_s=round(result.rate, 1),
             dry_run=dry_run)
    return result


def _refused_readings(quarantined: Iterable[int], outcomes: Outcomes, chunk: list[tuple[int, Unit]]) -> int:
    """Readings in the records Kafka refused (quarantined): their rows are noted as not confirmed."""
    refused = 0
    for position in quarantined:
        if position in outcomes.record_units:
            unit_positions, n = outcomes.record_units[position]
            refused += n
            for p in unit_positions:
                outcomes.note(p, "quarantined", f"row {_unit_name(chunk[p][1])}: Kafka refused its record")
    return refused


def _unit_name(unit: Unit) -> str:
    return unit.path.name if isinstance(unit, TT10File) else str(unit.number)


def _bar(show: bool, total: int, done: int) -> tuple[Progress, TaskID] | None:
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
