"""Stored readings back out as TT10 files (Circular 10/2021 Appendix 15).

One file per measurement time, named `<Province>_<Facility>_<Station>_<yyyyMMddHHmmss>.txt` in
Vietnam local time. Lines of values that came from a file keep that file's line order; the others
follow in the order of Circular 10/2021 Table 34 (then other symbols alphabetically). The
registry's own parameter order is not used: it is stored as JSONB, which does not keep key order.

Number formatting is deterministic: a value that arrived in a TT10 file is written with its
original text (`tt10_values`) while that text still reads as the stored number; any other value
is written by `ingest.tt10.format_value` (shortest text that reads back, never an exponent).
So a file that went through watcher → Kafka → worker → PostgreSQL comes back byte for byte.

The province and facility codes of a file name are those of the file the readings came from;
for readings that did not come from a file they are the caller's (`--province`, `--facility`).
A stored reading without a value and with status 01 (allowed over MQTT, not in a TT10 line) is
skipped and counted.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Iterable, Literal, Mapping

import psycopg
import structlog

from ingest.tt10 import TT10FormatError, TT10Line, TT10Name, format_content, parse_filename
from quantrac.db import STATION_SERIES
from quantrac.domain import NATIONAL_SYMBOLS, Station, Status

log = structlog.get_logger(__name__)

TABLE_ORDER = {symbol: i for i, symbol in enumerate(NATIONAL_SYMBOLS)}


@dataclass(frozen=True)
class StoredValue:
    """One stored reading with what the TT10 side table knows about it."""

    parameter: str
    ts: datetime
    value: float | None
    unit: str
    status: str
    value_text: str | None = None
    file_name: str | None = None
    line_no: int | None = None


@dataclass(frozen=True)
class ExportedFile:
    """One TT10 file produced by the exporter: its name, text and line count."""
    name: str
    content: str
    lines: int


@dataclass(frozen=True)
class Export:
    """The files an export wrote and the stored values it could not express in TT10."""
    files: list[ExportedFile]
    skipped: list[StoredValue]


def station_code(station_id: str, station_codes: Mapping[str, str]) -> str:
    """The TT10 <Station> code of a station id (inverse of the watcher's mapping)."""
    for code, sid in station_codes.items():
        if sid == station_id:
            return code
    return station_id


def line_order(v: StoredValue) -> tuple[int, int, int, str]:
    """Original file line first, then Table 34 order, then the symbol."""
    table = TABLE_ORDER.get(v.parameter, len(TABLE_ORDER))
    return (0, v.line_no, table, v.parameter) if v.line_no is not None else (1, 0, table, v.parameter)


def build_files(station: Station, values: Iterable[StoredValue], *, province: str, facility: str,
                station_codes: Mapping[str, str] | None = None, newline: Literal["\r\n", "\n"] = "\r\n") -> Export:
    """Group stored values by measurement time into TT10 files (pure)."""
    by_time: dict[datetime, list[StoredValue]] = defaultdict(list)
    skipped: list[StoredValue] = []
    for v in values:
        if v.value is None and v.status != Status.FAULT.value:
            skipped.append(v)
        else:
            by_time[v.ts].append(v)
    code = station_code(station.id, station_codes or {})
    files = []
    for ts in sorted(by_time):
        group = sorted(by_time[ts], key=line_order)
        lines = [TT10Line(v.parameter, v.value, v.value_text, v.unit, ts, Status(v.status)) for v in group]
        prov, fac = _codes_of(group, province, facility)
        name = TT10Name(prov, fac, code, ts).filename
        files.append(ExportedFile(name, format_content(lines, newline), len(lines)))
    return Export(files, skipped)


def _codes_of(group: list[StoredValue], province: str, facility: str) -> tuple[str, str]:
    for v in group:
        if v.file_name:
            try:
                original = parse_filename(v.file_name)
            except TT10FormatError:
                continue
            return original.province, original.facility
    return province, facility


_QUERY = ("SELECT r.parameter, r.ts, r.value, r.unit, r.status, t.value_text, t.file_name, t.line_no FROM readings r "
          "LEFT JOIN tt10_values t ON t.station_id = r.station_id AND t.parameter = r.parameter AND t.ts = r.ts "
          f"WHERE r.series_id IN ({STATION_SERIES}) AND r.ts >= %s AND r.ts < %s ORDER BY r.ts, r.parameter")


def load_values(conn: psycopg.Connection, station_id: str, start: datetime, end: datetime) -> list[StoredValue]:
    """Stored readings of one station in [start, end)."""
    return [StoredValue(*row) for row in conn.execute(_QUERY, (station_id, start, end)).fetchall()]


def write_files(export: Export, directory: Path) -> list[Path]:
    """Write each file atomically (temporary name, then rename); returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for f in export.files:
        target = directory / f.name
        tmp = directory / f".{f.name}.part"
        tmp.write_bytes(f.content.encode("utf-8"))
        os.replace(tmp, target)
        written.append(target)
    if export.skipped:
        log.warning("tt10.export_skipped", count=len(export.skipped),
                    why="no value with status 01 cannot be written as a TT10 line",
                    first=[(v.parameter, v.ts.isoformat()) for v in export.skipped[:5]])
    return written
