"""The TT10 drop folder: files stations upload over FTP become readings on the same path as MQTT.

A file `<Province>_<Facility>_<Station>_<yyyyMMddHHmmss>.txt` is taken when it is complete:
- names starting with `.` or ending in `.part`, `.tmp` or `.filepart` are uploads in progress
  and never read (an uploader that writes under such a name and renames at the end is always safe);
- any other file is taken once its size and modification time have not changed for
  `tt10_settle_s` seconds (seen on two scans), which covers uploaders that write in place.

Every line goes through `ingest.payload.validate_reading` and `check_time`, like an MQTT reading.
The valid lines become one `quantrac.readings` record (source `tt10`) keyed by station id; each
bad line becomes a dead letter whose `topic` is the file name, `index` the line number and
payload the line. A file is moved only after Kafka confirmed all of its records:
- to `done/` when at least one line was kept (with `<name>.reason` listing the rejected lines, if any);
- to `rejected/` with `<name>.reason` when nothing could be kept (bad name, unknown station,
  no valid line, not a regular file);
never over an earlier file of that name: a second upload is filed as `<name>.2`, and so on.
A crash before the move leaves the file in place: it is read again on restart, and the store's
primary key makes the repeated readings harmless.

The original text of each value is kept in `tt10_values` so an export writes it back unchanged.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterable, Mapping

import psycopg
import structlog
from kafka.errors import KafkaError

from ingest.payload import Limits, Rejection, check_time, find_conflicts, missing_station, validate_reading
from ingest.producer import Record, send_or_quarantine
from ingest.tt10 import TT10FormatError, TT10Line, parse_content, parse_filename
from quantrac import metrics
from quantrac.clock import utc_now
from quantrac.domain import Reading, Station, utc
from quantrac.failures import Attempts, RateLimitedLog, describe, is_record_failure
from quantrac.safe_text import safe_optional, safe_text
from quantrac.settings import Settings
from quantrac.wire import DEADLETTER_PAYLOAD_CAP, encode_deadletter, encode_quarantine, encode_readings

log = structlog.get_logger(__name__)

DONE_DIR = "done"
REJECTED_DIR = "rejected"
IN_PROGRESS_SUFFIXES = (".part", ".tmp", ".filepart")
SOURCE = "tt10"
BATCH_FILES = 200
"""Most files sent to Kafka before one wait for confirmation."""


@dataclass(frozen=True)
class LineRejection:
    """One line of a file that could not be kept."""

    line_no: int
    raw_line: str
    reason: str
    message: str
    parameter: str | None = None


@dataclass(frozen=True)
class KeptLine:
    """A valid line of a TT10 file, with its text kept for the conflict check."""
    reading: Reading
    value_text: str
    line_no: int


@dataclass(frozen=True)
class FileVerdict:
    """What one file becomes: kept readings, rejected lines, or a whole-file rejection."""

    name: str
    station_id: str | None
    kept: list[KeptLine] = field(default_factory=list)
    rejected_lines: list[LineRejection] = field(default_factory=list)
    file_rejection: Rejection | None = None

    @property
    def readings(self) -> list[Reading]:
        """The readings of the kept lines, in file order."""
        return [k.reading for k in self.kept]

    @property
    def destination(self) -> str:
        """The subfolder the file is moved to: `done` when any line was kept, else `rejected`."""
        return DONE_DIR if self.kept else REJECTED_DIR

    def reason_text(self) -> str:
        """The `.reason` file: one rejection a line (empty when the whole file was kept)."""
        if self.file_rejection is not None:
            return f"{self.file_rejection.reason}\t{self.file_rejection.message}\n"
        rows = [f"line {r.line_no}\t{r.reason}\t{r.message}" for r in self.rejected_lines]
        if not self.kept and not rows:
            rows = ["empty_file\tthe file has no content line; send one line per parameter"]
        return "".join(row + "\n" for row in rows)


def station_for_code(code: str, station_codes: Mapping[str, str]) -> str:
    """Registry station id of a file name's <Station> code: the configured mapping, else the code itself."""
    return station_codes.get(code, code)


def judge_file(name: str, data: bytes, stations: Mapping[str, Station], station_codes: Mapping[str, str],
               now: datetime, limits: Limits) -> FileVerdict:
    """Validate one file (pure): the same checks as an MQTT reading, line by line."""
    try:
        tt10_name = parse_filename(name)
    except TT10FormatError as exc:
        return FileVerdict(name, None, file_rejection=Rejection("bad_filename", f"{exc}; rename the file and drop it again"))
    station_id = station_for_code(tt10_name.station, station_codes)
    station = stations.get(station_id)
    if station is None:
        return FileVerdict(name, station_id, file_rejection=missing_station(
            station_id, stations, f"file {name}: station code {tt10_name.station!r} (station id {station_id!r})",
            fix="register the station or map its code in QUANTRAC_TT10_STATION_CODES, then drop the file again"))
    parsed = parse_content(data)
    rejected = [LineRejection(e.line_no, e.raw_line, e.reason_code, f"station {station_id}, file {name}: {e.message}",
                              _symbol_of(e.raw_line)) for e in parsed.errors]
    kept: list[KeptLine] = []
    for line in parsed.lines:
        outcome = _judge_line(line, station, now, limits)
        if isinstance(outcome, Reading):
            kept.append(KeptLine(outcome, line.value_text or "", line.line_no))
        else:
            rejected.append(LineRejection(line.line_no, _raw_line(data, line.line_no), outcome.reason,
                                          f"file {name}, line {line.line_no}: {outcome.message}", line.symbol))
    conflicts = find_conflicts((k.line_no, k.reading) for k in kept)
    for k in kept:
        if k.line_no in conflicts:
            rejected.append(LineRejection(k.line_no, _raw_line(data, k.line_no), "conflict",
                                          f"file {name}, line {k.line_no}: {conflicts[k.line_no].message}", k.reading.parameter))
    kept = [k for k in kept if k.line_no not in conflicts]
    rejected.sort(key=lambda r: r.line_no)
    return FileVerdict(name, station_id, kept, rejected)


def _judge_line(line: TT10Line, station: Station, now: datetime, limits: Limits) -> Reading | Rejection:
    ts = utc(line.ts)
    late_or_early = check_time(ts, now, limits.for_station(station), station.id)
    if late_or_early is not None:
        return late_or_early
    item = {"parameter": line.symbol, "value": line.value, "unit": line.unit, "status": line.status.value}
    return validate_reading(item, line.line_no, station, ts)


def _symbol_of(raw_line: str) -> str | None:
    symbol = raw_line.split("\t", 1)[0].strip()
    return symbol or None


def _raw_line(data: bytes, line_no: int) -> str:
    lines = data.decode("utf-8", errors="replace").removeprefix("\ufeff").split("\n")
    return lines[line_no - 1].rstrip("\r") if 0 < line_no <= len(lines) else ""


def verdict_records(verdict: FileVerdict, data: bytes, received_at: datetime, readings_topic: str,
                    deadletter_topic: str, cap: int = DEADLETTER_PAYLOAD_CAP) -> list[Record]:
    """The Kafka records of one file: its readings (one record) and a dead letter per rejection (payloads cut at `cap`)."""
    key = verdict.station_id.encode() if verdict.station_id else None
    records: list[Record] = []
    if verdict.kept:
        records.append((readings_topic, key, encode_readings(verdict.station_id or "", verdict.readings, received_at, SOURCE)))
    if verdict.file_rejection is not None:
        r = verdict.file_rejection
        records.append((deadletter_topic, key, encode_deadletter(
            topic=verdict.name, payload=data, reason=r.reason, message=r.message, received_at=received_at,
            station_id=verdict.station_id, source=SOURCE, cap=cap)))
    for line in verdict.rejected_lines:
        records.append((deadletter_topic, key, encode_deadletter(
            topic=verdict.name, payload=line.raw_line.encode("utf-8", errors="backslashreplace"), reason=line.reason,
            message=line.message, received_at=received_at, station_id=verdict.station_id, parameter=line.parameter,
            index=line.line_no, source=SOURCE,
            cap=cap)))
    if not verdict.kept and verdict.file_rejection is None and not verdict.rejected_lines:
        records.append((deadletter_topic, key, encode_deadletter(
            topic=verdict.name, payload=data, reason="empty_file", message=f"file {verdict.name}: no content line",
            received_at=received_at, station_id=verdict.station_id, source=SOURCE, cap=cap)))
    return records


_SAVE_TEXTS = ("INSERT INTO tt10_values (station_id, parameter, ts, value_text, file_name, line_no) "
               "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (station_id, parameter, ts) DO NOTHING")


def save_value_texts(conn: psycopg.Connection, verdicts: Iterable[FileVerdict]) -> None:
    """Keep how each kept value was written; the first file to deliver a reading wins, as in `readings`."""
    rows = [(k.reading.station_id, k.reading.parameter, k.reading.ts, safe_text(k.value_text), safe_text(v.name), k.line_no)
            for v in verdicts for k in v.kept]
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(_SAVE_TEXTS, rows)


# --------------------------------------------------------------------------- the folder


def is_candidate(path: Path) -> bool:
    """An entry the watcher takes: not hidden, not still being written, not a rejection note, not a folder.

    A symbolic link, a FIFO or a device is taken too, to be refused unread (`read_regular`)."""
    name = path.name
    try:
        folder = stat.S_ISDIR(path.lstat().st_mode)
    except FileNotFoundError:
        return False
    return not folder and not name.startswith(".") and not name.lower().endswith(IN_PROGRESS_SUFFIXES) \
        and not name.endswith(".reason")


class NotRegularFile(Exception):
    """A drop-folder entry that is not a plain file (a symbolic link, a FIFO, a device): never read."""


def read_regular(path: Path) -> bytes:
    """The bytes of `path` if it is a regular file itself. A symbolic link is not followed (an uploader able to make
    one, as SFTP allows, would otherwise have the watcher read any file it can, into dead letters an operator can
    list) and a FIFO is not waited on; both raise `NotRegularFile`, as anything else that is not a regular file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NotRegularFile("a symbolic link") from None
        raise
    with os.fdopen(fd, "rb") as f:
        mode = os.fstat(f.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFile(_KINDS.get(stat.S_IFMT(mode), "not a regular file"))
        return f.read()


_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a device", stat.S_IFBLK: "a device",
          stat.S_IFDIR: "a folder"}


def refused_entry(name: str, kind: str, station_codes: Mapping[str, str]) -> FileVerdict:
    """The verdict of a drop-folder entry that is not a regular file: to `rejected/`, unread (its station from its
    name, when the name is a TT10 one)."""
    try:
        station_id: str | None = station_for_code(parse_filename(name).station, station_codes)
    except TT10FormatError:
        station_id = None
    return FileVerdict(name, station_id, file_rejection=Rejection(
        "not_a_file", f"file {name} is {kind}, not a regular file: it was not read; upload the file itself"))


@dataclass
class StableFiles:
    """Which files have stopped changing: same size and mtime on two scans at least `settle_s` apart."""

    settle_s: float
    _seen: dict[Path, tuple[int, int, float]] = field(default_factory=dict)

    def ready(self, paths: Iterable[Path], now: float) -> list[Path]:
        """The `paths` whose size and mtime held for `settle_s` (and mtime is that old); forgets paths no longer listed."""
        ready: list[Path] = []
        current: dict[Path, tuple[int, int, float]] = {}
        for path in paths:
            try:
                st = path.lstat()
            except FileNotFoundError:
                continue
            signature = (st.st_size, st.st_mtime_ns)
            before = self._seen.get(path)
            first_seen = before[2] if before and before[:2] == signature else now
            current[path] = (*signature, first_seen)
            if now - first_seen >= self.settle_s and now - st.st_mtime >= self.settle_s:
                ready.append(path)
        self._seen = current
        return ready

    def forget(self, path: Path) -> None:
        """Drop what is known of `path` (e.g. once moved away), so a new file of that name must settle again."""
        self._seen.pop(path, None)


def file_away(directory: Path, path: Path, verdict: FileVerdict) -> Path:
    """Move a handled file to `done/` or `rejected/` with its `.reason` note, never over an earlier file of the same
    name (a station that uploads again under the same name, e.g. with corrected values): that one becomes `<name>.2`,
    `<name>.3`, ... Returns where it went."""
    target_dir = directory / verdict.destination
    target = target_dir / path.name
    n = 1
    while target.exists() or target.is_symlink():
        n += 1
        target = target_dir / f"{path.name}.{n}"
    reason = verdict.reason_text()
    if reason:
        tmp = target_dir / f".{target.name}.reason.tmp"
        tmp.write_text(reason, encoding="utf-8", errors="backslashreplace")
        os.replace(tmp, target_dir / f"{target.name}.reason")
    os.replace(path, target)
    return target


class Watcher:
    """Scans the drop folder, sends each complete file to Kafka and files it away."""

    def __init__(self, settings: Settings, directory: Path, producer: object, stations: Mapping[str, Station],
                 connect: Callable[[], psycopg.Connection], clock: Callable[[], datetime] = utc_now) -> None:
        self.settings = settings
        self.directory = directory
        self.producer = producer
        self.stations = stations
        self.connect = connect
        self.clock = clock
        self.limits = Limits.from_settings(settings)
        self.stable = StableFiles(settings.tt10_settle_s)
        self.counts = {"files_done": 0, "files_rejected": 0, "readings": 0, "deadletters": 0, "retries": 0}
        self._stop = threading.Event()
        self._log = RateLimitedLog(log, settings.log_repeat_interval_s)
        self._attempts = Attempts()
        self._conn: psycopg.Connection | None = None
        for sub in (DONE_DIR, REJECTED_DIR):
            (directory / sub).mkdir(parents=True, exist_ok=True)

    def scan_once(self) -> int:
        """Process every complete file once, in batches; returns how many were filed away."""
        candidates = sorted((p for p in self.directory.iterdir() if is_candidate(p)), key=lambda p: p.name)
        ready = self.stable.ready(candidates, time.time())
        handled = 0
        for first in range(0, len(ready), BATCH_FILES):
            if self._stop.is_set():
                break
            handled += self.handle(ready[first:first + BATCH_FILES])
        return handled

    def handle(self, paths: list[Path]) -> int:
        """Send a batch of files, wait for Kafka, keep their value texts, then move them.

        Returns how many were filed away; 0 (files left in place for the next scan) when Kafka or
        PostgreSQL failed, so nothing moves before it is safe (a resend is a harmless duplicate).
        """
        received_at = self.clock()
        judged: list[tuple[Path, FileVerdict, int]] = []
        records: list[Record] = []
        for path in paths:
            refused: FileVerdict | None = None
            try:
                data = read_regular(path)
            except FileNotFoundError:
                self.stable.forget(path)
                continue
            except NotRegularFile as exc:
                data, refused = b"", refused_entry(path.name, str(exc), self.settings.tt10_station_codes)
            try:
                verdict = refused if refused is not None else \
                    judge_file(path.name, data, self.stations, self.settings.tt10_station_codes, received_at, self.limits)
                mine = verdict_records(verdict, data, received_at, self.settings.readings_topic, self.settings.deadletter_topic,
                                       self.limits.deadletter_payload_cap)
            except Exception as exc:  # a bug of ours on this file: set it aside, go on with the others
                verdict, mine = self._quarantine(path, data, exc, received_at)
            records.extend(mine)
            judged.append((path, verdict, len(mine)))
        try:
            send_or_quarantine(self.producer, records, stage="tt10", deadletter_topic=self.settings.deadletter_topic)
            kept = [verdict for _, verdict, _ in judged if verdict.kept]
            if kept:
                save_value_texts(self._connection(), kept)
        except Exception as exc:
            self.counts["retries"] += 1
            self._drop_connection()
            if is_record_failure(exc):
                return self._after_record_failure([path for path, _, _ in judged], exc, received_at)
            self._log("warning", "tt10.send_failed", key=type(exc).__name__, files=len(judged), error=safe_text(describe(exc), 300),
                      action="files kept; retried on the next scan",
                      fix=f"check Kafka at {self.settings.kafka_bootstrap} and PostgreSQL (quantrac stack status)")
            return 0
        for path, verdict, sent in judged:
            self._file_away(path, verdict)
            self.counts["readings"] += len(verdict.kept)
            self.counts["deadletters"] += sent - (1 if verdict.kept else 0)
            self.counts["files_done" if verdict.kept else "files_rejected"] += 1
            event = log.info if not verdict.rejected_lines and verdict.file_rejection is None else log.warning
            event("tt10.file", file=safe_text(path.name, 300), station=safe_optional(verdict.station_id, 200), to=verdict.destination,
                  readings=len(verdict.kept), rejected_lines=len(verdict.rejected_lines),
                  reason=verdict.file_rejection.reason if verdict.file_rejection else None)
        return len(judged)

    def _after_record_failure(self, paths: list[Path], exc: BaseException, received_at: datetime) -> int:
        """A batch failed for its content: each file on its own; a file that fails RECORD_ATTEMPTS scans is set aside."""
        if len(paths) > 1:
            return sum(self.handle([path]) for path in paths)
        [path] = paths
        if not self._attempts.failed(path):
            self._log("warning", "tt10.file_refused", key=type(exc).__name__, file=safe_text(path.name, 300),
                      error=safe_text(describe(exc), 300), attempt=self._attempts.count(path), action="retried on the next scan")
            return 0
        self._attempts.forget(path)
        try:
            verdict, records = self._quarantine(path, read_regular(path), exc, received_at)
            send_or_quarantine(self.producer, records, stage="tt10", deadletter_topic=self.settings.deadletter_topic)
        except (FileNotFoundError, NotRegularFile, KafkaError):
            return 0  # gone or replaced meanwhile, or Kafka down: the next scan decides again
        self._file_away(path, verdict)
        self.counts["files_rejected"] += 1
        return 1

    def _quarantine(self, path: Path, data: bytes, exc: BaseException, received_at: datetime) -> tuple[FileVerdict, list[Record]]:
        """A file the watcher failed on: to `rejected/` with the error, and a quarantine dead letter (head, size, SHA-256)."""
        metrics.QUARANTINED.labels("tt10").inc()
        self._log("exception", "tt10.file_quarantined", key=type(exc).__name__, file=safe_text(path.name, 300),
                  error=safe_text(describe(exc), 300), fix="the file is in rejected/; report the error with it")
        verdict = FileVerdict(path.name, None, file_rejection=Rejection("quarantined", f"file {path.name}: the watcher failed on "
                                                                       f"it ({describe(exc)}); set aside"))
        record = encode_quarantine(stage="tt10", raw=data, error=describe(exc), received_at=received_at, topic=path.name,
                                   source=SOURCE)
        return verdict, [(self.settings.deadletter_topic, None, record)]

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = self.connect()
        return self._conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _file_away(self, path: Path, verdict: FileVerdict) -> None:
        file_away(self.directory, path, verdict)
        self.stable.forget(path)

    def run(self) -> None:
        """Scan every `tt10_poll_s` until `stop()`."""
        log.info("tt10.watching", directory=str(self.directory), settle_s=self.settings.tt10_settle_s,
                 poll_s=self.settings.tt10_poll_s)
        last_report = time.monotonic()
        while not self._stop.is_set():
            try:
                self.scan_once()
            except Exception as exc:  # one unreadable directory entry must not stop the watcher
                self._log("exception", "tt10.scan_failed", key=type(exc).__name__, directory=str(self.directory))
            if time.monotonic() - last_report > 30:
                log.info("tt10.counts", **self.counts)
                last_report = time.monotonic()
            self._stop.wait(self.settings.tt10_poll_s)
        self._drop_connection()
        log.info("tt10.stopped", **self.counts)

    def stop(self) -> None:
        """Ask `run` to stop after the current scan; returns at once."""
        self._stop.set()
