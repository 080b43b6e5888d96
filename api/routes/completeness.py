"""Data completeness of a station per hour or per local day: expected vs received and valid readings."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel

from api.deps import ConnDep, Instant, SettingsDep, local_time
from api.routes.history import within_bucket_limit
from quantrac.completeness import PERIODS, expected_readings
from quantrac.domain import Station
from quantrac.timebuckets import bucket_end, bucket_start

router = APIRouter(prefix="/api/v1/stations", tags=["completeness"])


class CompletenessOut(BaseModel):
    """One hour or local day of a station: readings expected from its interval, received, valid, and late."""
    start: datetime
    end: datetime
    expected: int
    received: int
    valid: int
    late: int
    completeness: float
    """valid / expected (0 when nothing was expected)."""
    interval_note: str | None = None
    """Set when the station sent more than twice what its registry interval allows: it reports more often than
    registered, so `completeness` overstates and its window means complete only at their ends."""


class CompletenessList(BaseModel):
    """A station's completeness over a range, one entry per hour or local day, oldest first."""
    station_id: str
    period: str
    data: list[CompletenessOut]
    count: int


@router.get("/{station_id}/completeness", response_model=CompletenessList,
            summary="Expected vs received valid readings per hour or per local day",
            responses={404: {"description": "Unknown station"}, 422: {"description": "Bad range"}})
def station_completeness(
    station_id: str, conn: ConnDep, settings: SettingsDep,
    period: Annotated[Literal["hour", "day"], Query(description="`hour` (UTC-aligned) or `day` (local day, Asia/Ho_Chi_Minh).")] = "hour",
    from_: Annotated[Instant | None, Query(alias="from", description="Start; default 24 h (hour) or 7 days (day) before `to`.")] = None,
    to: Annotated[Instant | None, Query(description="End (exclusive); default now.")] = None,
) -> CompletenessList:
    """One entry per bucket of [`from`, `to`), buckets that received nothing included (completeness 0); at most 8784 buckets."""
    row = conn.execute("SELECT spec FROM stations WHERE id = %s", (station_id,)).fetchone()
    if row is None:
        raise HTTPException(404, f"station {station_id!r} is not in the registry")
    station = Station.model_validate(row[0])
    bucket = PERIODS[period]
    end = to or datetime.now(timezone.utc)
    start = bucket_start(from_ or end - (timedelta(hours=24) if period == "hour" else timedelta(days=7)), bucket)
    if start >= end:
        raise HTTPException(422, f"'from' ({start.isoformat()}) must be before 'to' ({end.isoformat()})")
    within_bucket_limit(start, end, bucket, period)
    starts: list[datetime] = []
    cursor = start
    while cursor < end:
        starts.append(cursor)
        cursor = bucket_end(cursor, bucket)
    stored = {r[0]: r[1:] for r in conn.execute(
        "SELECT bucket, received, valid, late FROM completeness WHERE station_id = %s AND period = %s AND bucket >= %s AND bucket < %s",
        (station_id, period, start, end)).fetchall()}
    data = []
    for s in starts:
        received, valid, late = stored.get(s, (0, 0, 0))
        expected = expected_readings(station, s, period)
        data.append(CompletenessOut(start=local_time(s, settings), end=local_time(bucket_end(s, bucket), settings),
                                    expected=expected, received=received, valid=valid, late=late,
                                    completeness=round(valid / expected, 4) if expected else 0.0,
                                    interval_note=_interval_note(station, expected, received)))
    return CompletenessList(station_id=station_id, period=period, data=data, count=len(data))


def _interval_note(station: Station, expected: int, received: int) -> str | None:
    """What to fix when the station sent more than twice what its registry interval allows, else None."""
    if not expected or received <= 2 * expected:
        return None
    observed_s = station.expected_interval_s * expected / received
    return (f"received {received} readings where its registry interval ({station.expected_interval_s} s) allows {expected}: "
            f"the station reports about every {observed_s:.3g} s. Set its expected_interval_s to that "
            f"(PUT /api/v1/stations/{station.id}), or its gateway to report every {station.expected_interval_s} s")
