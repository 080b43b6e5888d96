"""History queries (raw readings, buckets, gaps, CSV rows) and the daily compliance route.

The bucket query reads `readings_5m`/`readings_1h`/`readings_1d`: rollup tables on native
PostgreSQL, continuous aggregates (same names and columns) on TimescaleDB, so one SQL serves
both stores. Every function takes a connection, so the tests call them on either store.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Annotated, Any, Iterator, Sequence
from zoneinfo import ZoneInfo

import psycopg
from fastapi import APIRouter, HTTPException, Query
from psycopg.rows import dict_row
from pydantic import BaseModel

from api.deps import ConnDep, Day, SettingsDep, local_time
from quantrac.db import SERIES_OF
from quantrac.domain import Limit, Station
from quantrac.timebuckets import BUCKET_WIDTHS, DAY_ZONE, ROLLUPS, bucket_start

router = APIRouter(prefix="/api/v1/stations", tags=["history"])

BUCKETS = ("raw", "5m", "1h", "1d", "auto")
# `bucket=auto`: the finest bucket whose point count stays chart-sized for the range.
AUTO_LIMITS: tuple[tuple[timedelta, str], ...] = ((timedelta(days=1), "raw"), (timedelta(days=7), "5m"),
                                                  (timedelta(days=90), "1h"))
GAP_FACTOR = 2
"""Raw readings further apart than this many expected intervals mark a gap."""

MAX_BUCKETS = 24 * 366
"""Most buckets an answer holds per parameter: a leap year of hours, or 24 years of days (the raw readings of a longer
range stream as CSV or Parquet)."""

CSV_FETCH_ROWS = 5000
CSV_COLUMNS = ("station_id", "parameter", "ts", "value", "unit", "status")


def choose_bucket(requested: str, start: datetime, end: datetime) -> str:
    """The bucket to serve: `requested`, or for "auto" the finest whose limit covers the range."""
    if requested != "auto":
        return requested
    span = end - start
    for limit, bucket in AUTO_LIMITS:
        if span <= limit:
            return bucket
    return "1d"


def within_bucket_limit(start: datetime, end: datetime, bucket: str, name: str | None = None) -> None:
    """Refuse (422) a range of more than `MAX_BUCKETS` buckets, before anything is read: a 200-year range of days had
    one parameter's answer at 6 MB, and its 8 parameters' at eight times that. `name`: the bucket as the route calls it."""
    if (end - start) / BUCKET_WIDTHS[bucket] > MAX_BUCKETS:
        raise HTTPException(422, f"range too long: at most {MAX_BUCKETS} {name or bucket} buckets; narrow 'from'/'to', "
                                 "or download the raw readings (format=csv or parquet)")


def bucket_starts(start: datetime, end: datetime, bucket: str, day_zone: ZoneInfo = DAY_ZONE) -> list[datetime]:
    """Starts (UTC) of every bucket that overlaps [start, end)."""
    starts = []
    current = bucket_start(start, bucket, day_zone)
    while current < end:
        starts.append(current)
        if bucket == "1d":
            next_day = current.astimezone(day_zone).date() + timedelta(days=1)
            current = datetime.combine(next_day, time(0), day_zone).astimezone(timezone.utc)
        else:
            current = current + BUCKET_WIDTHS[bucket]
    return starts


def station_row(conn: psycopg.Connection, station_id: str) -> Station:
    """The registered station, or 404 naming it."""
    row = conn.execute("SELECT spec FROM stations WHERE id = %s", (station_id,)).fetchone()
    if row is None:
        raise HTTPException(404, f"station {station_id!r} is not in the registry; list them at /api/v1/stations")
    return Station.model_validate(row[0])


def checked_parameters(station: Station, requested: Sequence[str] | None) -> list[str]:
    """The requested parameters (all of the station's when none), or 422 naming the unknown ones and the known ones."""
    if not requested:
        return sorted(station.parameters)
    unknown = sorted(set(requested) - set(station.parameters))
    if unknown:
        raise HTTPException(422, f"station {station.id!r} has no parameter {', '.join(map(repr, unknown))}; "
                                 f"use one of {sorted(station.parameters)}")
    return list(dict.fromkeys(requested))


def bucket_rows(conn: psycopg.Connection, station_id: str, parameters: Sequence[str], bucket: str,
                start: datetime, end: datetime) -> list[dict[str, Any]]:
    """Rollup rows of the buckets that start in [bucket_start(start), end), by parameter then time."""
    table = ROLLUPS[bucket]
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            f"SELECT parameter, bucket, avg, min, max, count, count_valid FROM {table} "
            "WHERE station_id = %s AND parameter = ANY(%s) AND bucket >= %s AND bucket < %s ORDER BY parameter, bucket",
            (station_id, list(parameters), bucket_start(start, bucket), end)).fetchall()


def with_missing(rows: Sequence[dict[str, Any]], parameters: Sequence[str], starts: Sequence[datetime],
                 now: datetime) -> list[dict[str, Any]]:
    """Every expected bucket of every parameter: the rollup row, or nulls marked `missing`.

    A bucket is missing when it has no valid reading; buckets starting after `now` are not expected.
    """
    found = {(r["parameter"], r["bucket"]): r for r in rows}
    points = []
    for parameter in parameters:
        for start in starts:
            row = found.get((parameter, start))
            if row is not None:
                points.append({**row, "missing": row["count_valid"] == 0})
            elif start <= now:
                points.append({"parameter": parameter, "bucket": start, "avg": None, "min": None, "max": None,
                               "count": 0, "count_valid": 0, "missing": True})
    return points


def bucket_series(conn: psycopg.Connection, station_id: str, parameters: Sequence[str], bucket: str,
                  start: datetime, end: datetime, now: datetime | None = None) -> list[dict[str, Any]]:
    """Buckets of [start, end) with explicit missing marks: the history query of both stores."""
    rows = bucket_rows(conn, station_id, parameters, bucket, start, end)
    return with_missing(rows, parameters, bucket_starts(start, end, bucket), now or datetime.now(timezone.utc))


def raw_rows(conn: psycopg.Connection, station_id: str, parameters: Sequence[str], start: datetime, end: datetime,
             limit: int) -> list[dict[str, Any]]:
    """Raw readings of the parameters in [start, end), oldest first, at most `limit` rows."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            f"SELECT parameter, ts, value, unit, status FROM readings WHERE series_id IN ({SERIES_OF}) "
            "AND ts >= %s AND ts < %s ORDER BY ts, parameter LIMIT %s",
            (station_id, list(parameters), start, end, limit)).fetchall()


def raw_gaps(conn: psycopg.Connection, station_id: str, parameters: Sequence[str], start: datetime, end: datetime,
             max_gap: timedelta, now: datetime | None = None) -> list[dict[str, Any]]:
    """Stretches of [start, min(end, now)) longer than `max_gap` with no reading of a parameter.

    Computed in SQL with `lag()` between consecutive readings, the range's two ends included.
    """
    stop = min(end, now or datetime.now(timezone.utc))
    if stop <= start:
        return []
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "WITH marks AS ("
            "  SELECT parameter, ts FROM readings "
            "  WHERE series_id IN (SELECT id FROM series WHERE station_id = %(station)s AND parameter = ANY(%(params)s)) "
            "  AND ts >= %(start)s AND ts < %(stop)s "
            "  UNION ALL SELECT p, %(start)s FROM unnest(%(params)s::text[]) AS p "
            "  UNION ALL SELECT p, %(stop)s FROM unnest(%(params)s::text[]) AS p), "
            "steps AS (SELECT parameter, lag(ts) OVER (PARTITION BY parameter ORDER BY ts) AS gap_from, ts AS gap_to FROM marks) "
            "SELECT parameter, gap_from, gap_to FROM steps WHERE gap_to - gap_from > %(max_gap)s ORDER BY parameter, gap_from",
            {"station": station_id, "params": list(parameters), "start": start, "stop": stop, "max_gap": max_gap}).fetchall()


def csv_header() -> str:
    """The first line of the raw readings CSV (CRLF-terminated, like the rows the csv module writes)."""
    return ",".join(CSV_COLUMNS) + "\r\n"


def stream_raw_csv(conn: psycopg.Connection, station_id: str, parameters: Sequence[str], start: datetime,
                   end: datetime, display_zone: str) -> Iterator[str]:
    """CSV lines of the raw readings, read through a server-side cursor `CSV_FETCH_ROWS` at a time.

    Times are formatted by the server in `display_zone` (ISO 8601 with offset), so memory stays
    bounded by one fetch whatever the range.
    """
    yield csv_header()
    with conn.transaction():
        conn.execute("SELECT set_config('TimeZone', %s, true)", (display_zone,))
        with conn.cursor(name="readings_csv") as cur:
            cur.itersize = CSV_FETCH_ROWS
            cur.execute(
                "SELECT station_id, parameter, to_char(ts, 'YYYY-MM-DD\"T\"HH24:MI:SS') "
                "|| CASE WHEN date_trunc('second', ts) <> ts THEN to_char(ts, '.US') ELSE '' END "
                "|| to_char(ts, 'TZH:TZM'), value, unit, status FROM readings "
                f"WHERE series_id IN ({SERIES_OF}) AND ts >= %s AND ts < %s ORDER BY ts, parameter",
                (station_id, list(parameters), start, end))
            while rows := cur.fetchmany(CSV_FETCH_ROWS):
                buffer = io.StringIO()
                csv.writer(buffer).writerows(rows)
                yield buffer.getvalue()


PARQUET_ROW_GROUP = 50_000
"""Rows per Parquet row group: the export's memory bound (one group is built and sent at a time)."""


class _Chunks:
    """A write-only file that hands what was written to the response as it goes."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def drain(self) -> bytes:
        out, self.parts = b"".join(self.parts), []
        return out

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def stream_raw_parquet(conn: psycopg.Connection, station_id: str, parameters: Sequence[str], start: datetime,
                       end: datetime, display_zone: str) -> Iterator[bytes]:
    """A Parquet file of the raw readings (ts as timestamp[us, display_zone]), one row group per `PARQUET_ROW_GROUP` rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("station_id", pa.string()), ("parameter", pa.string()), ("ts", pa.timestamp("us", tz=display_zone)),
                        ("value", pa.float64()), ("unit", pa.string()), ("status", pa.string())])
    sink = _Chunks()
    writer = pq.ParquetWriter(sink, schema)
    with conn.transaction(), conn.cursor(name="readings_parquet") as cur:
        cur.itersize = PARQUET_ROW_GROUP
        cur.execute(f"SELECT station_id, parameter, ts, value, unit, status FROM readings WHERE series_id IN ({SERIES_OF}) "
                    "AND ts >= %s AND ts < %s ORDER BY ts, parameter",
                    (station_id, list(parameters), start, end))
        while rows := cur.fetchmany(PARQUET_ROW_GROUP):
            columns = list(zip(*rows, strict=True))
            writer.write_table(pa.Table.from_arrays([pa.array(c, type=f.type) for c, f in zip(columns, schema, strict=True)], schema=schema))
            yield sink.drain()
    writer.close()
    yield sink.drain()


def overlapping_alerts(conn: psycopg.Connection, station_id: str, parameters: Sequence[str], start: datetime,
                       end: datetime) -> list[dict[str, Any]]:
    """Alerts of the station whose event-time span [first_ts, last_ts] overlaps [start, end), for chart annotations."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT id, parameter, rule, basis, severity, status, first_ts, last_ts, peak_value, limit_value, historical, message "
            "FROM alerts WHERE station_id = %s AND (parameter = ANY(%s) OR parameter = '*' OR parameter LIKE '%%,%%') "
            "AND first_ts < %s AND last_ts >= %s ORDER BY first_ts, id",
            (station_id, list(parameters), end, start)).fetchall()


# ---- compliance -------------------------------------------------------------------------------


class HourOver(BaseModel):
    """An hour whose mean of valid readings is outside the limit, and which bound it crossed."""
    hour: datetime
    mean: float
    bound: str
    limit: float


class ParameterCompliance(BaseModel):
    """One parameter's day: mean of valid readings, hours with a mean outside the limit, and completeness so far."""
    parameter: str
    unit: str
    limit: Limit | None
    daily_mean: float | None
    hours_over: list[HourOver]
    hours_over_count: int
    valid_readings: int
    expected_readings: int
    completeness_pct: float


class Compliance(BaseModel):
    """A station's compliance on one local day, parameter by parameter; times in the display time zone."""
    station_id: str
    date: date
    timezone: str
    day_start: datetime
    day_end: datetime
    expected_interval_s: int
    parameters: list[ParameterCompliance]


@dataclass(frozen=True)
class DayWindow:
    """A local day as UTC instants [start, end), and how much of it had passed (zero before it, all of it after)."""
    start: datetime
    end: datetime
    elapsed: timedelta


def local_day(day: date, zone: ZoneInfo, now: datetime) -> DayWindow:
    """The local day as UTC instants, and how much of it has passed at `now`."""
    start = datetime.combine(day, time(0), zone).astimezone(timezone.utc)
    end = datetime.combine(day + timedelta(days=1), time(0), zone).astimezone(timezone.utc)
    elapsed = max(timedelta(0), min(end, now) - start)
    return DayWindow(start, end, elapsed)


def hours_outside(hourly: Sequence[dict[str, Any]], limit: Limit | None) -> list[HourOver]:
    """Hours whose mean of valid readings is above the high limit or below the low one."""
    over = []
    for row in hourly:
        mean = row["avg"]
        if mean is None or limit is None:
            continue
        if limit.high is not None and mean > limit.high:
            over.append(HourOver(hour=row["bucket"], mean=mean, bound="high", limit=limit.high))
        elif limit.low is not None and mean < limit.low:
            over.append(HourOver(hour=row["bucket"], mean=mean, bound="low", limit=limit.low))
    return over


def compliance(conn: psycopg.Connection, station: Station, day: date, zone: ZoneInfo,
               now: datetime | None = None) -> Compliance:
    """Per parameter: hours whose 1-hour mean is outside the limit, and completeness of the (elapsed) day."""
    window = local_day(day, zone, now or datetime.now(timezone.utc))
    parameters = sorted(station.parameters)
    with conn.cursor(row_factory=dict_row) as cur:
        hourly = cur.execute(
            "SELECT parameter, bucket, avg, count_valid FROM readings_1h WHERE station_id = %s AND bucket >= %s "
            "AND bucket < %s ORDER BY parameter, bucket", (station.id, window.start, window.end)).fetchall()
    expected = int(window.elapsed.total_seconds() // station.expected_interval_s)
    result = []
    for parameter in parameters:
        spec = station.parameters[parameter]
        rows = [r for r in hourly if r["parameter"] == parameter]
        valid = sum(r["count_valid"] for r in rows)
        weighted = sum(r["avg"] * r["count_valid"] for r in rows if r["avg"] is not None)
        over = [h.model_copy(update={"hour": h.hour.astimezone(zone)}) for h in hours_outside(rows, spec.limit)]
        result.append(ParameterCompliance(
            parameter=parameter, unit=spec.unit, limit=spec.limit, daily_mean=weighted / valid if valid else None,
            hours_over=over, hours_over_count=len(over), valid_readings=valid, expected_readings=expected,
            completeness_pct=round(min(100.0, 100.0 * valid / expected), 1) if expected else 0.0))
    return Compliance(station_id=station.id, date=day, timezone=zone.key, day_start=window.start.astimezone(zone),
                      day_end=window.end.astimezone(zone), expected_interval_s=station.expected_interval_s,
                      parameters=result)


@router.get("/{station_id}/compliance", response_model=Compliance,
            summary="A station's compliance on one local day: hours over the limit, completeness",
            responses={404: {"description": "Unknown station"}})
def station_compliance(
    station_id: str, conn: ConnDep, settings: SettingsDep,
    date_: Annotated[Day, Query(alias="date", description="Local day (YYYY-MM-DD) in the display time zone.")],
) -> Compliance:
    """Per parameter: the day's mean of valid readings, each hour whose mean is above the high limit
    or below the low one, and completeness of the part of the day elapsed."""
    station = station_row(conn, station_id)
    return compliance(conn, station, date_, ZoneInfo(settings.display_timezone))


def shown(points: Sequence[dict[str, Any]], key: str, settings: Any) -> list[dict[str, Any]]:
    """Points with `key` converted to the display time zone."""
    return [{**p, key: local_time(p[key], settings)} for p in points]
