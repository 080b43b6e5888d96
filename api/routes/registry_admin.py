"""Registry administration (role admin): create, update and retire stations, each change audited with its actor.

The bridge and the worker reload the registry every `registry_refresh_s` and at once on an unknown
station, so a change here takes effect without a restart. A retired station keeps its history;
new readings of it are refused.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Response
from pydantic import BaseModel

from api.auth import Principal, require
from api.deps import ConnDep, SettingsDep, local_time
from processors.detectors import DETECTORS
from processors.detectors.presets import check_detection
from quantrac.db import load_station_record, retire_station, save_station_audited, station_audit
from quantrac.domain import Station
from quantrac.registry import RegistryError, check_station, load_catalogue
from quantrac.station_input import StationIn

router = APIRouter(prefix="/api/v1/stations", tags=["registry"])
Admin = Annotated[Principal, Depends(require("stations.write"))]


class SavedStation(BaseModel):
    """A station as saved, and what the save did: `created`, `updated` or `unchanged` (no audit entry)."""
    action: str
    station: Station


class AuditEntry(BaseModel):
    """One change to a station's record: the action, who made it, when, and the record before and after."""
    id: int
    station_id: str
    action: str
    actor: str
    at: datetime
    before: dict[str, Any] | None
    after: dict[str, Any] | None


def _checked(station: Station, settings: Any) -> Station:
    try:
        check_station(station, load_catalogue(settings.registry_file), DETECTORS)
        check_detection(station)
    except (RegistryError, ValueError) as exc:
        raise HTTPException(422, str(exc)) from None
    return station


@router.post("", response_model=SavedStation, status_code=201, summary="Register a station (admin)",
             responses={409: {"description": "The id is taken"}, 422: {"description": "Inconsistent record"}})
def create_station(request: StationIn, conn: ConnDep, settings: SettingsDep, who: Admin) -> SavedStation:
    """Checked against the parameter catalogue, the detectors and the presets first (422 with the reason).
    The bridge and the worker accept its readings without a restart."""
    station = request.record()
    if load_station_record(conn, station.id) is not None:
        raise HTTPException(409, f"station {station.id!r} exists; change it with PUT /api/v1/stations/{station.id}")
    action = save_station_audited(conn, _checked(station, settings), who.actor)
    return SavedStation(action=action, station=station)


@router.put("/{station_id}", response_model=SavedStation, summary="Replace a station's record (admin); also un-retires it",
            responses={404: {"description": "Unknown station"}, 422: {"description": "Inconsistent record"}})
def update_station(station_id: str, request: StationIn, conn: ConnDep, settings: SettingsDep, who: Admin) -> SavedStation:
    """Replaces the whole record (the path and body ids must match) after the same checks as registration."""
    station = request.record()
    if station.id != station_id:
        raise HTTPException(422, f"the body names station {station.id!r} but the path {station_id!r}; make them equal")
    if load_station_record(conn, station_id) is None:
        raise HTTPException(404, f"station {station_id!r} is not in the registry; create it with POST /api/v1/stations")
    action = save_station_audited(conn, _checked(station, settings), who.actor)
    return SavedStation(action=action, station=station)


@router.post("/{station_id}/retire", status_code=204, summary="Retire a station (admin): history kept, new readings refused",
             responses={404: {"description": "Unknown or already retired station"}})
def retire(station_id: str, conn: ConnDep, who: Admin) -> Response:
    """Its readings are refused from the next registry reload on; its history and alerts stay."""
    if not retire_station(conn, station_id, who.actor):
        raise HTTPException(404, f"station {station_id!r} is unknown or already retired; see GET /api/v1/stations")
    return Response(status_code=204)


@router.get("/{station_id}/audit", response_model=list[AuditEntry], summary="Registry changes of a station, with their actors")
def audit(station_id: str, conn: ConnDep, settings: SettingsDep) -> list[AuditEntry]:
    """Oldest first, each with who made the change and the record before and after it."""
    return [AuditEntry(**{**row, "at": local_time(row["at"], settings)}) for row in station_audit(conn, station_id)]  # type: ignore[arg-type]  # station_audit rows are dict[str, object]; at is a non-null timestamptz column, so a datetime
