"""The station registry and each station's readings."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from pydantic import AwareDatetime, BaseModel
from psycopg.rows import dict_row

from api.deps import ConnDep, SettingsDep, local_time
from quantrac.domain import Station

router = APIRouter(prefix="/api/v1/stations", tags=["stations"])


class StationList(BaseModel):
    data: list[Station]
    count: int


class ReadingOut(BaseModel):
    parameter: str
    ts: datetime
    value: float | None
    unit: str
    status: str


class ReadingList(BaseModel):
    station_id: str
    data: list[ReadingOut]
    count: int


@router.get("", response_model=StationList, summary="List the stations of the registry")
def list_stations(conn: ConnDep, zone: str | None = None) -> StationList:
    sql = "SELECT spec FROM stations WHERE retired_at IS NULL"
    params: list[object] = []
    if zone:
        sql += " AND zone = %s"
        params.append(zone)
    rows = conn.execute(sql + " ORDER BY zone, id", params).fetchall()
    stations = [Station.model_validate(r[0]) for r in rows]
    return StationList(data=stations, count=len(stations))


@router.get("/{station_id}/readings", response_model=ReadingList, summary="Readings of a station over a time range",
            responses={404: {"description": "Unknown station"}})
def station_readings(
    station_id: str, conn: ConnDep, settings: SettingsDep,
    parameter: Annotated[list[str] | None, Query(description="One or more parameter symbols; all when omitted.")] = None,
    from_: Annotated[AwareDatetime | None, Query(alias="from", description="Start (inclusive); default 24 h before `to`.")] = None,
    to: Annotated[AwareDatetime | None, Query(description="End (exclusive); default now.")] = None,
    limit: Annotated[int, Query(ge=1, le=100_000)] = 10_000,
) -> ReadingList:
    if conn.execute("SELECT 1 FROM stations WHERE id = %s", (station_id,)).fetchone() is None:
        raise HTTPException(404, f"station {station_id!r} is not in the registry")
    end = to or datetime.now(timezone.utc)
    start = from_ or end - timedelta(hours=24)
    sql = "SELECT parameter, ts, value, unit, status FROM readings WHERE station_id = %s AND ts >= %s AND ts < %s"
    params: list[object] = [station_id, start, end]
    if parameter:
        sql += " AND parameter = ANY(%s)"
        params.append(parameter)
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(sql + " ORDER BY ts, parameter LIMIT %s", [*params, limit]).fetchall()
    data = [ReadingOut(**{**r, "ts": local_time(r["ts"], settings)}) for r in rows]
    return ReadingList(station_id=station_id, data=data, count=len(data))
