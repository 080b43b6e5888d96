"""Per-station delivery accounting: received, forwarded, dead-lettered by reason, late, stored, duplicates."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, Field

from api.deps import ConnDep, Instant
from quantrac.delivery_accounting import delivery_summary

router = APIRouter(tags=["ingest"])


class Delivery(BaseModel):
    """What became of one station's messages and readings over the range, from the bridge to the store."""
    station_id: str
    received: int = Field(description="MQTT messages the bridge received for the station.")
    forwarded: int = Field(description="Readings the bridge forwarded, confirmed by Kafka.")
    deadlettered: dict[str, int] = Field(description="Rejections kept in the dead-letter topic, by reason code.")
    late: int = Field(description="Forwarded readings received later than QUANTRAC_DELIVERY_LATE_AFTER_S after their event time.")
    stored: int = Field(description="Readings stored for the first time by the worker.")
    duplicate: int = Field(description="Readings the worker received again (redelivery) and did not store twice.")
    conflict: int = Field(0, description="Readings that repeated a stored reading's station, parameter and time with another "
                                         "value or status: the stored one is kept, these are dead-lettered as `conflict`.")


class DeliveryList(BaseModel):
    """Delivery accounting of every station that had anything counted in the range."""
    data: list[Delivery]
    count: int


Since = Annotated[Instant | None, Query(description="From this instant (counts are hourly; the hour containing it is included)")]
Until = Annotated[Instant | None, Query(description="Before this instant")]


@router.get("/api/v1/delivery", response_model=DeliveryList, summary="Delivery accounting of every station")
def list_delivery(conn: ConnDep, since: Since = None, until: Until = None) -> DeliveryList:
    """Stations with nothing counted in the range are left out. Counts are hourly, so `since` takes in its whole hour."""
    data = [Delivery(station_id=s, **c) for s, c in delivery_summary(conn, None, since, until).items()]
    return DeliveryList(data=data, count=len(data))


@router.get("/api/v1/stations/{station_id}/delivery", response_model=Delivery, summary="Delivery accounting of one station")
def station_delivery(station_id: str, conn: ConnDep, since: Since = None, until: Until = None) -> Delivery:
    """Zeros for a registered station that received nothing in the range; 404 for an id neither registered nor counted."""
    found = delivery_summary(conn, station_id, since, until).get(station_id)
    if found is None:
        known = conn.execute("SELECT 1 FROM stations WHERE id = %s", (station_id,)).fetchone()
        if known is None:
            raise HTTPException(404, f"station {station_id} is not in the registry and nothing was received for it; "
                                     "check the id (GET /api/v1/stations)")
        return Delivery(station_id=station_id, received=0, forwarded=0, deadlettered={}, late=0, stored=0, duplicate=0)
    return Delivery(station_id=station_id, **found)
