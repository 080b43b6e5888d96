"""The station registry and each station's readings."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any, Callable, Iterator, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from api.deps import ConnDep, Instant, SettingsDep, local_time
from api.routes import history
from api.routes.history import GAP_FACTOR
from quantrac.domain import Station

router = APIRouter(prefix="/api/v1/stations", tags=["stations"])


class StationList(BaseModel):
    """The active stations of the registry, by zone then id."""
    data: list[Station]
    count: int


class ReadingOut(BaseModel):
    """One raw reading; `status` is the device status sent with it: only 00 (measuring) with a finite value counts as valid."""
    parameter: str
    ts: datetime
    value: float | None
    unit: str
    status: str


class Gap(BaseModel):
    """A stretch with no reading of a parameter, from `from` to `to`."""
    parameter: str
    gap_from: datetime = Field(serialization_alias="from")
    gap_to: datetime = Field(serialization_alias="to")


class ReadingList(BaseModel):
    """Raw readings of a station over a range, oldest first, and the gaps in them."""
    station_id: str
    bucket: Literal["raw"] = "raw"
    data: list[ReadingOut]
    count: int
    truncated: bool = Field(False, description="True when `limit` cut the list; narrow the range or export CSV.")
    gaps: list[Gap] = Field([], description=f"Stretches with no reading longer than {GAP_FACTOR} x the station's expected interval.")
    alerts: list[dict[str, Any]] | None = Field(None, description="With `include=alerts`: alerts overlapping the range (event time).")


class BucketOut(BaseModel):
    """One parameter over one bucket; avg, min and max of its valid readings, null when it had none."""
    parameter: str
    bucket: datetime
    avg: float | None
    min: float | None
    max: float | None
    count: int
    count_valid: int
    missing: bool = Field(description="No valid reading in this bucket (expected data missing).")


class BucketList(BaseModel):
    """Aggregated readings of a station over a range, by parameter and bucket, missing buckets marked."""
    station_id: str
    bucket: Literal["5m", "1h", "1d"]
    data: list[BucketOut]
    count: int
    alerts: list[dict[str, Any]] | None = Field(None, description="With `include=alerts`: alerts overlapping the range (event time).")


@router.get("", response_model=StationList, summary="List the stations of the registry")
def list_stations(conn: ConnDep, zone: str | None = None) -> StationList:
    """Retired stations are left out; `zone` keeps one industrial zone."""
    sql = "SELECT spec FROM stations WHERE retired_at IS NULL"
    params: list[object] = []
    if zone:
        sql += " AND zone = %s"
        params.append(zone)
    rows = conn.execute(sql + " ORDER BY zone, id", params).fetchall()
    stations = [Station.model_validate(r[0]) for r in rows]
    return StationList(data=stations, count=len(stations))


@router.get("/{station_id}", response_model=Station, summary="One station's registry record (active or retired)",
            responses={404: {"description": "Unknown station"}})
def get_station(station_id: str, conn: ConnDep) -> Station:
    """The record as registered, with the detector preset or channels it runs; `quantrac detect --station-file` takes it."""
    from api.routes.history import station_row
    return station_row(conn, station_id)


@router.get("/{station_id}/readings", response_model=ReadingList | BucketList, response_model_by_alias=True,
            summary="Readings of a station over a time range: raw or in buckets, JSON or CSV",
            responses={404: {"description": "Unknown station"}, 422: {"description": "Unknown parameter or bad range"},
                       200: {"content": {"text/csv": {}}}})
def station_readings(
    station_id: str, request: Request, conn: ConnDep, settings: SettingsDep,
    parameter: Annotated[list[str] | None, Query(description="One or more parameter symbols; all when omitted.")] = None,
    from_: Annotated[Instant | None, Query(alias="from", description="Start (inclusive); default 24 h before `to`.")] = None,
    to: Annotated[Instant | None, Query(description="End (exclusive); default now.")] = None,
    bucket: Annotated[Literal["raw", "5m", "1h", "1d", "auto"], Query(
        description="raw readings, or 5m/1h/1d buckets (days are local days); auto: raw up to 1 day, 5m up to 7, 1h up to 90, else 1d.")] = "auto",
    format_: Annotated[Literal["json", "csv", "parquet"] | None, Query(alias="format", description="csv streams any range; also `Accept: text/csv`. parquet streams the raw readings of any range (whatever `bucket`), one row group per 50,000 rows.")] = None,
    include: Annotated[list[Literal["alerts"]] | None, Query(description="`alerts`: add the alerts overlapping the range (JSON answers).")] = None,
    limit: Annotated[int, Query(ge=1, le=100_000, description="Most raw readings in a JSON answer.")] = 10_000,
) -> ReadingList | BucketList | StreamingResponse:
    """Raw readings or 5m/1h/1d aggregates of [`from`, `to`); `auto` picks by the range's length.
    JSON answers stop at `limit` raw readings; CSV and Parquet stream the whole range."""
    station = history.station_row(conn, station_id)
    parameters = history.checked_parameters(station, parameter)
    end = to or datetime.now(timezone.utc)
    start = from_ or end - timedelta(hours=24)
    if start >= end:
        raise HTTPException(422, f"`from` ({start.isoformat()}) must be before `to` ({end.isoformat()})")
    chosen = history.choose_bucket(bucket, start, end)
    as_csv = format_ == "csv" or (format_ is None and "text/csv" in request.headers.get("accept", ""))
    if format_ == "parquet":
        return _download(request, history.stream_raw_parquet, station_id, parameters, start, end, "parquet",
                         "application/vnd.apache.parquet")
    if chosen != "raw":
        history.within_bucket_limit(start, end, chosen)
    annotations = history.shown(history.overlapping_alerts(conn, station_id, parameters, start, end), "first_ts", settings) \
        if include and "alerts" in include else None
    if annotations is not None:
        annotations = [{**a, "last_ts": local_time(a["last_ts"], settings)} for a in annotations]
    if chosen == "raw" and as_csv:
        return _download(request, history.stream_raw_csv, station_id, parameters, start, end, "csv",
                         "text/csv; charset=utf-8")
    if chosen == "raw":
        rows = history.raw_rows(conn, station_id, parameters, start, end, limit)
        gaps = history.raw_gaps(conn, station_id, parameters, start, end,
                                timedelta(seconds=history.GAP_FACTOR * station.expected_interval_s))
        data = [ReadingOut(**{**r, "ts": local_time(r["ts"], settings)}) for r in rows]
        return ReadingList(station_id=station_id, data=data, count=len(data), truncated=len(data) == limit, alerts=annotations,
                           gaps=[Gap(parameter=g["parameter"], gap_from=local_time(g["gap_from"], settings),
                                     gap_to=local_time(g["gap_to"], settings)) for g in gaps])
    points = history.shown(history.bucket_series(conn, station_id, parameters, chosen, start, end), "bucket", settings)
    if as_csv:
        return StreamingResponse(_bucket_csv(points), media_type="text/csv; charset=utf-8")
    return BucketList(station_id=station_id, bucket=chosen, data=[BucketOut(**p) for p in points], count=len(points),
                      alerts=annotations)


def _bucket_csv(points: list[dict[str, Any]]) -> Iterator[str]:
    columns = ("parameter", "bucket", "avg", "min", "max", "count", "count_valid", "missing")
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    writer.writerows([p[c].isoformat() if c == "bucket" else p[c] for c in columns] for p in points)
    yield buffer.getvalue()


def _download(request: Request, stream: Callable[..., Iterator[Any]], station_id: str, parameters: list[str],
              start: datetime, end: datetime, extension: str, media_type: str) -> StreamingResponse:
    """A raw-readings file streamed from its own pooled connection, never held whole in memory."""
    pool = request.app.state.pool
    zone = request.app.state.settings.display_timezone

    def chunks() -> Iterator[Any]:
        with pool.connection() as stream_conn:
            yield from stream(stream_conn, station_id, parameters, start, end, zone)

    name = f"{station_id}-{start:%Y%m%dT%H%M}-{end:%Y%m%dT%H%M}.{extension}"
    return StreamingResponse(chunks(), media_type=media_type, headers={"Content-Disposition": f'attachment; filename="{name}"'})
