"""Readers of backfill inputs for `quantrac import`: CSV (wide or long) and folders of TT10 files.

A reader yields units in a fixed order; the importer confirms them in that order, so "the first N
units are in Kafka" is a complete resume point. A CSV unit is one data row; a TT10 unit is one file.

- wide CSV: a time column (`time`, `ts`, `timestamp` or `datetime`) and one column per parameter;
  an empty cell is no reading.
- long CSV: columns `time`, `parameter`, `value`, and optionally `unit` and `status`.

Times are ISO 8601; a time without an offset is read in `tz` (Asia/Ho_Chi_Minh unless told).
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any, Iterator, Literal

from ingest.tt10_watch import is_candidate

TIME_COLUMNS = ("time", "ts", "timestamp", "datetime")
Format = Literal["wide", "long", "auto", "tt10"]


class ImportSourceError(ValueError):
    """The input cannot be read at all; the message names the file and the fix."""


@dataclass(frozen=True)
class CsvRow:
    """One data row: its readings as MQTT-shaped items (`parameter`, `value`, `unit`, `status`) at one time."""

    number: int
    raw: str
    ts: datetime | None
    time_error: str | None = None
    items: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class TT10File:
    """A TT10 file given to the importer, read line by line like the watcher reads it."""
    path: Path


Unit = CsvRow | TT10File


def fingerprint(path: Path) -> str:
    """SHA-256 of a file, or of a folder's TT10 file names and contents (the resume key)."""
    digest = hashlib.sha256()
    for item in ([path] if path.is_file() else tt10_files(path)):
        if path.is_dir():
            digest.update(item.name.encode() + b"\0")
        with item.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def tt10_files(directory: Path) -> list[Path]:
    """The TT10 files of a folder, in name order (names carry the time); the operator's own folder, so a link to a
    file is read, but a FIFO or a device is not (reading one would wait forever)."""
    return sorted((p for p in directory.iterdir() if is_candidate(p) and p.is_file()), key=lambda p: p.name)


def parse_time(text: str, tz: tzinfo) -> datetime:
    """An aware datetime from ISO 8601 (`T` or space); without an offset it is read in `tz`."""
    ts = datetime.fromisoformat(text.strip())
    return ts.replace(tzinfo=tz) if ts.tzinfo is None or ts.utcoffset() is None else ts


def _number(text: str) -> float | str:
    """A float from a cell (decimal point or comma); the text itself when it is not a number, for validation to refuse."""
    try:
        return float(text.strip().replace(",", "."))
    except ValueError:
        return text


def detect_format(header: list[str]) -> Literal["wide", "long"]:
    """`long` when the header has `parameter` and `value` columns, else `wide` (one column per parameter)."""
    lowered = {h.strip().lower() for h in header}
    return "long" if {"parameter", "value"} <= lowered else "wide"


def _time_column(header: list[str], path: Path) -> int:
    for i, name in enumerate(header):
        if name.strip().lower() in TIME_COLUMNS:
            return i
    raise ImportSourceError(f"{path.name}: no time column (one of {', '.join(TIME_COLUMNS)}) in the header {header}; "
                            "name the time column 'time'")


def _row_time(cells: list[str], index: int, tz: tzinfo) -> tuple[datetime | None, str | None]:
    text = cells[index] if index < len(cells) else ""
    try:
        return parse_time(text, tz), None
    except ValueError:
        return None, f"time {text!r} is not ISO 8601 (e.g. 2026-11-29 21:05:00 or 2026-11-29T21:05:00+07:00)"


def read_csv(path: Path, fmt: Format, tz: tzinfo, skip: frozenset[str] = frozenset()) -> Iterator[CsvRow]:
    """The data rows of a CSV file, numbered from 2 (the header is line 1); wide columns named in `skip`
    (case-insensitive, e.g. a label column such as GECCO's EVENT) are not readings and are left out."""
    # Bytes that are not UTF-8 become U+FFFD: such a cell is then refused as a bad value, with its row,
    # instead of the whole file failing half-way.
    with path.open("rb") as raw_handle:
        if raw_handle.read(2) in (b"\xff\xfe", b"\xfe\xff"):
            raise ImportSourceError(f"{path.name}: the file is UTF-16 (a spreadsheet's 'Unicode text'); save it as "
                                    "'CSV UTF-8' and import it again")
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as handle:
        separator = _separator(handle.readline())
        handle.seek(0)
        reader = csv.reader(handle, delimiter=separator)
        header = next(reader, None)
        if not header:
            raise ImportSourceError(f"{path.name}: the file is empty; export it with a header row")
        kind = detect_format(header) if fmt == "auto" else fmt
        time_at = _time_column(header, path)
        skipped = {i for i, h in enumerate(header) if h.strip().lower() in {c.lower() for c in skip}}
        columns = {h.strip().lower(): i for i, h in enumerate(header)}
        for number, cells in _numbered(reader, path):
            if not any(c.strip() for c in cells):
                continue
            raw = separator.join(cells)
            ts, error = _row_time(cells, time_at, tz)
            if kind == "wide":
                items = [{"parameter": header[i].strip(), "value": _number(cell)}
                         for i, cell in enumerate(cells)
                         if i != time_at and i not in skipped and i < len(header) and cell.strip()]
            else:
                items = [_long_item(cells, columns)]
            yield CsvRow(number, raw, ts, error, items)


def _separator(header_line: str) -> str:
    """The header's field separator: a comma, else a semicolon or a tab when the header has one of those and no
    comma (a spreadsheet saved where the decimal mark is a comma, as in Vietnam, separates fields with ';')."""
    if "," in header_line:
        return ","
    return next((s for s in (";", "\t") if s in header_line), ",")


def _numbered(reader: Iterator[list[str]], path: Path) -> Iterator[tuple[int, list[str]]]:
    """The data rows with their line numbers (the header is line 1); a row the csv module cannot read (a field
    longer than its limit, 131,072 characters) stops the file with a clear error instead of a traceback."""
    number = 1
    while True:
        number += 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise ImportSourceError(f"{path.name}, row {number}: {exc}; check that row (a missing quote or a broken "
                                    "export), fix it and run the same import again (rows already confirmed are skipped)") from None
        yield number, cells


def _long_item(cells: list[str], columns: dict[str, int]) -> dict[str, Any]:
    """The reading of a long-format row (`parameter`, `value`, optional `unit` and `status` columns)."""
    def cell(name: str) -> str | None:
        i = columns.get(name)
        return cells[i].strip() if i is not None and i < len(cells) else None

    value = cell("value")
    item: dict[str, Any] = {"parameter": cell("parameter") or "", "value": _number(value) if value else None}
    for optional in ("unit", "status"):
        if cell(optional):
            item[optional] = cell(optional)
    return item


def read_units(path: Path, fmt: Format, tz: tzinfo, skip: frozenset[str] = frozenset()) -> Iterator[Unit]:
    """The units of a CSV file or a TT10 folder, in order."""
    if path.is_dir():
        for file in tt10_files(path):
            yield TT10File(file)
        return
    if not path.is_file():
        raise ImportSourceError(f"{path}: no such file or folder; give a CSV file or a folder of TT10 files")
    yield from read_csv(path, fmt, tz, skip)


def count_units(path: Path) -> int:
    """How many units `read_units` yields at most (data lines, or TT10 files), for the progress bar."""
    if path.is_dir():
        return len(tt10_files(path))
    with path.open("rb") as handle:
        return max(sum(1 for line in handle if line.strip()) - 1, 0)
