"""Alerts for the supervision centre."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import AwareDatetime, BaseModel
from psycopg.rows import dict_row

from api.deps import ConnDep, SettingsDep, local_time
from quantrac.domain import Alert, AlertStatus

router = APIRouter(prefix="/api/v1/alerts", tags=["alerts"])


class AlertList(BaseModel):
    data: list[Alert]
    count: int


@router.get("", response_model=AlertList, summary="List alerts, newest first")
def list_alerts(
    conn: ConnDep, settings: SettingsDep,
    status: AlertStatus | None = None,
    station: Annotated[str | None, Query(description="Station id")] = None,
    since: Annotated[AwareDatetime | None, Query(description="Only alerts opened or updated at or after this instant")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AlertList:
    clauses, params = [], []
    if status is not None:
        clauses.append("status = %s")
        params.append(status.value)
    if station:
        clauses.append("station_id = %s")
        params.append(station)
    if since is not None:
        clauses.append("updated_at >= %s")
        params.append(since)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            f"SELECT id, station_id, parameter, rule, basis, severity, status, opened_at, updated_at, last_value, "
            f"peak_value, limit_value AS limit, limit_source, count, message FROM alerts {where} "
            f"ORDER BY updated_at DESC, id DESC LIMIT %s", [*params, limit]).fetchall()
    alerts = [Alert(**{**r, "opened_at": local_time(r["opened_at"], settings),
                       "updated_at": local_time(r["updated_at"], settings)}) for r in rows]
    return AlertList(data=alerts, count=len(alerts))
