"""Silences: quiet a station (or one of its parameters) for a time window; alerts still record."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query
from psycopg.rows import dict_row
from pydantic import BaseModel, Field, model_validator

from alerts import silences
from api.auth import Principal, require
from api.deps import ERRORS, ConnDep, Instant, SettingsDep, local_time
from quantrac.settings import Settings

router = APIRouter(prefix="/api/v1/silences", tags=["silences"], responses=ERRORS)


class SilenceIn(BaseModel):
    """A silence to create: the station (or one of its parameters), the window, and why."""
    station_id: str = Field(max_length=64, examples=["HD-DAIAN-WW01"])
    parameter: str | None = Field(None, max_length=32, description="Only this parameter; all of the station's when omitted.")
    starts_at: Instant | None = Field(None, description="Default: now.")
    ends_at: Instant = Field(examples=["2026-11-30T12:00:00+07:00"])
    reason: Literal["calibration", "maintenance", "device_fault", "other"]
    note: str | None = Field(None, max_length=500, pattern=r"^[^\x00]*$")

    @model_validator(mode="after")
    def _window(self) -> "SilenceIn":
        start = self.starts_at or datetime.now(timezone.utc)
        if self.ends_at <= start:
            raise ValueError(f"silence for station {self.station_id}: ends_at must be after starts_at (or after now)")
        return self


class SilenceOut(BaseModel):
    """A silence as recorded; `active` while it is in force (started, not ended, not deleted)."""
    id: int
    station_id: str
    parameter: str | None
    starts_at: datetime
    ends_at: datetime
    reason: str
    created_by: str
    created_at: datetime
    deleted_at: datetime | None
    deleted_by: str | None
    active: bool

    model_config = {"json_schema_extra": {"examples": [{
        "id": 3, "station_id": "HD-DAIAN-WW01", "parameter": "COD", "starts_at": "2026-11-30T08:00:00+07:00",
        "ends_at": "2026-11-30T12:00:00+07:00", "reason": "calibration", "created_by": "duty-1 (operator)",
        "created_at": "2026-11-30T07:55:00+07:00", "deleted_at": None, "deleted_by": None, "active": True}]}}


class SilenceList(BaseModel):
    """Silences, newest first (at most 1000)."""
    data: list[SilenceOut]
    count: int

    model_config = {"json_schema_extra": {"examples": [{
        "data": SilenceOut.model_config["json_schema_extra"]["examples"], "count": 1}]}}  # type: ignore[index]  # model_config's json_schema_extra is a union with callables; SilenceOut's is the dict with examples set in its class


def _out(row: dict[str, Any], settings: Settings) -> SilenceOut:
    now = datetime.now(timezone.utc)
    active = row["deleted_at"] is None and row["starts_at"] <= now < row["ends_at"]
    times = ("starts_at", "ends_at", "created_at", "deleted_at")
    return SilenceOut(**{**row, **{t: local_time(row[t], settings) for t in times}, "active": active})


_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No such silence (or already deleted)"}}


@router.get("", response_model=SilenceList, summary="List silences")
def list_silences(conn: ConnDep, settings: SettingsDep,
                  station: Annotated[str | None, Query(max_length=64)] = None,
                  active: Annotated[bool, Query(description="Only those in force now")] = False) -> SilenceList:
    """Newest first, at most 1000, deleted ones included; `active=true` keeps those in force now."""
    sql, params = "SELECT * FROM silences WHERE TRUE", []
    if station:
        sql += " AND station_id = %s"
        params.append(station)
    if active:
        sql += " AND deleted_at IS NULL AND starts_at <= now() AND ends_at > now()"
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(sql + " ORDER BY id DESC LIMIT 1000", params).fetchall()
    return SilenceList(data=[_out(r, settings) for r in rows], count=len(rows))


@router.post("", response_model=SilenceOut, status_code=201, summary="Create a silence (operator, admin)",
             responses={404: {"description": "Unknown station"}})
def create_silence(body: SilenceIn, conn: ConnDep, settings: SettingsDep,
                   who: Annotated[Principal, Depends(require("silences.write"))]) -> SilenceOut:
    """Holds back notifications of the station's (or the parameter's) alerts from `starts_at` to `ends_at`;
    alerts still open and are recorded."""
    if conn.execute("SELECT 1 FROM stations WHERE id = %s", (body.station_id,)).fetchone() is None:
        raise HTTPException(404, f"station {body.station_id!r} is not in the registry; see GET /api/v1/stations")
    row = silences.create(conn, station_id=body.station_id, parameter=body.parameter,
                          starts_at=body.starts_at or datetime.now(timezone.utc), ends_at=body.ends_at,
                          reason=body.reason, note=body.note, actor=who.actor)
    return _out(row, settings)


@router.get("/{silence_id}", response_model=SilenceOut, summary="One silence", responses=_NOT_FOUND)
def get_silence(silence_id: int, conn: ConnDep, settings: SettingsDep) -> SilenceOut:
    """The silence, deleted or not, and whether it is in force now."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute("SELECT * FROM silences WHERE id = %s", (silence_id,)).fetchone()
    if row is None:
        raise HTTPException(404, f"silence {silence_id} does not exist")
    return _out(row, settings)


@router.delete("/{silence_id}", response_model=SilenceOut, summary="End a silence now (operator, admin)",
               responses=_NOT_FOUND)
def delete_silence(silence_id: int, conn: ConnDep, settings: SettingsDep,
                   who: Annotated[Principal, Depends(require("silences.write"))]) -> SilenceOut:
    """Ends the silence now, recording who ended it; the record stays, with `deleted_at`."""
    row = silences.delete(conn, silence_id, who.actor)
    if row is None:
        raise HTTPException(404, f"silence {silence_id} does not exist or was already deleted")
    return _out(row, settings)
