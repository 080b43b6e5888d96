"""Alerts for the supervision centre: list, filter and page; history; acknowledge, resolve, comment; export."""

from __future__ import annotations

import csv
import io
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Response
from psycopg.rows import dict_row
from pydantic import BaseModel, Field

from alerts import alerts_table
from alerts.inhibition import OFFLINE_RULE
from alerts.lifecycle import TransitionError
from api.auth import Principal, require
from api.deps import ERRORS, ConnDep, Instant, SettingsDep, local_time
from quantrac.domain import Alert, AlertStatus, Severity
from quantrac.settings import Settings

router = APIRouter(prefix="/api/v1/alerts", tags=["alerts"], responses=ERRORS)

_COLUMNS = ("id, station_id, parameter, rule, basis, severity, status, zone, opened_at, updated_at, first_ts, last_ts, "
            "last_value, peak_value, limit_value AS limit, limit_source, count, message, acknowledged_at, "
            "acknowledged_by, resolved_at, resolved_by, escalated_at, historical, score, clear_since")


class AlertOut(Alert):
    """An alert with its station's zone and its lifecycle times, shown in the display time zone."""
    zone: str | None = Field(None, description="Industrial zone of the station.")
    first_ts: datetime | None = Field(None, description="Event time of the first reading that raised it.")
    last_ts: datetime | None = Field(None, description="Event time of the latest reading that raised it.")
    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = None
    resolved_at: datetime | None = None
    resolved_by: str | None = None
    escalated_at: datetime | None = None
    clear_since: datetime | None = Field(None, description="Event time since which its condition has been clear: it "
                                         "resolves once clear for QUANTRAC_ALERT_CLEAR_HOLD_S, and a return of the "
                                         "condition before that keeps it open. Null while the condition holds.")

    model_config = {"json_schema_extra": {"examples": [{
        "id": 42, "station_id": "HD-DAIAN-WW01", "parameter": "COD", "rule": "exceedance", "basis": "instant",
        "severity": "critical", "status": "open", "zone": "KCN Đại An", "opened_at": "2026-11-29T21:05:03+07:00",
        "updated_at": "2026-11-29T21:10:02+07:00", "last_value": 182.0, "peak_value": 190.5, "limit": 135.0,
        "limit_source": "QCVN 40:2011/BTNMT col. B x Kq 0.9 x Kf 1.0", "count": 2,
        "message": "station HD-DAIAN-WW01 (…), COD: 182 mg/L is above the limit 135 mg/L (instant)"}]}}


class AlertPage(BaseModel):
    """One page of alerts, newest first, and where the live stream continues from it."""
    data: list[AlertOut]
    count: int
    next_cursor: int | None = Field(None, description="Pass as `cursor` to get the next (older) page; null on the last page.")
    last_event_id: int = Field(0, description="Newest alert event id when this page was read: open "
                               "`GET /api/v1/alerts/stream?after=<it>` (or send it as Last-Event-ID) to get every "
                               "transition since, with no gap between the list and the stream.")

    model_config = {"json_schema_extra": {"examples": [{"data": [], "count": 0, "next_cursor": None, "last_event_id": 1041}]}}


class AlertEventOut(BaseModel):
    """One entry of an alert's history: a transition or a comment, who made it and when."""
    id: int = Field(description="Also the SSE event id of this transition.")
    alert_id: int
    at: datetime
    kind: str = Field(description="opened, updated, acknowledged, resolved, commented, escalated, reminded, or clearing (the condition started to clear, or a value inside the hysteresis band restarted the clear hold; never notified).")
    actor: str
    status: str = Field(description="The alert's status after this event.")
    value: float | None
    note: str | None


class DeliveryOut(BaseModel):
    """One attempt to deliver a notification of an alert event through one channel."""
    id: int
    event_id: int
    channel: str
    attempt: int
    outcome: str = Field(description="delivered, failed or suppressed (silenced or inhibited).")
    detail: str
    at: datetime


class AlertDetail(BaseModel):
    """An alert with its whole history, oldest first, and every notification delivery attempt."""
    alert: AlertOut
    events: list[AlertEventOut]
    deliveries: list[DeliveryOut]

    model_config = {"json_schema_extra": {"examples": [{
        "alert": AlertOut.model_config["json_schema_extra"]["examples"][0],  # type: ignore[index]  # model_config's json_schema_extra is a union with callables; AlertOut's is the dict with an examples list set in its class
        "events": [{"id": 1041, "alert_id": 42, "at": "2026-11-29T21:05:03+07:00", "kind": "opened",
                    "actor": "quantrac", "status": "open", "value": 182.0, "note": None}],
        "deliveries": [{"id": 7, "event_id": 1041, "channel": "webhook", "attempt": 1, "outcome": "delivered",
                        "detail": "200", "at": "2026-11-29T21:05:04+07:00"}]}]}}


class ActionBody(BaseModel):
    """An optional note kept in the alert's history with an acknowledgement or a manual resolution."""
    note: str | None = Field(None, max_length=2000, pattern=r"^[^\x00]*$", description="Why, what was done.", examples=["Called the plant; aerator restarted."])


class CommentBody(BaseModel):
    """A comment for an alert's history; it does not change the alert's status."""
    text: str = Field(min_length=1, max_length=2000, pattern=r"^[^\x00]*\S[^\x00]*$", examples=["Sample taken for the lab at 21:30."])


class CommentOut(BaseModel):
    """Where the comment was recorded in the alert's history."""
    event_id: int = Field(description="The comment's alert event id.", examples=[1042])


def alert_out(row: dict[str, Any], settings: Settings) -> AlertOut:
    """An `alerts` row (or stream row) as AlertOut: `limit_value` read as `limit`, times in the display time zone."""
    if "limit" not in row:
        row = {**row, "limit": row.get("limit_value")}
    times = ("opened_at", "updated_at", "first_ts", "last_ts", "acknowledged_at", "resolved_at", "escalated_at", "clear_since")
    return AlertOut(**{k: v for k, v in row.items() if k in AlertOut.model_fields and k not in times},
                    **{t: local_time(row.get(t), settings) for t in times})


def _not_found(alert_id: int) -> HTTPException:
    return HTTPException(404, f"alert {alert_id} does not exist; list alerts with GET /api/v1/alerts")


@router.get("", response_model=AlertPage, summary="List alerts, newest first, filtered and paged")
def list_alerts(
    conn: ConnDep, settings: SettingsDep,
    status: Annotated[list[AlertStatus] | None, Query(description="One or more statuses.")] = None,
    severity: Severity | None = None,
    zone: Annotated[str | None, Query(max_length=200, description="Industrial zone, e.g. `KCN Đại An`.")] = None,
    station: Annotated[str | None, Query(max_length=64, description="Station id")] = None,
    parameter: Annotated[str | None, Query(max_length=32)] = None,
    rule: Annotated[str | None, Query(max_length=64)] = None,
    since: Annotated[Instant | None, Query(description="Only alerts updated at or after this instant")] = None,
    from_: Annotated[Instant | None, Query(alias="from", description="Opened at or after")] = None,
    to: Annotated[Instant | None, Query(description="Opened before")] = None,
    cursor: Annotated[int | None, Query(ge=1, le=2**62, description="`next_cursor` of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AlertPage:
    """Filters combine with AND. For the next (older) page pass `next_cursor` as `cursor`;
    `last_event_id` is where `GET /api/v1/alerts/stream` continues without a gap."""
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in (("severity", severity.value if severity else None), ("zone", zone), ("station_id", station),
                          ("parameter", parameter), ("rule", rule)):
        if value is not None:
            clauses.append(f"{column} = %s")
            params.append(value)
    if status:
        clauses.append("status = ANY(%s)")
        params.append([s.value for s in status])
    bounds: tuple[tuple[str, Any], ...] = (("updated_at >= %s", since), ("opened_at >= %s", from_), ("opened_at < %s", to),
                                           ("id < %s", cursor))
    for clause, value in bounds:
        if value is not None:
            clauses.append(clause)
            params.append(value)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    # Read before the alerts: a transition committed in between is then both in the page and after
    # this id in the stream (the client keeps the newest), never in neither.
    last_event_id = newest_event_id(conn)
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(f"SELECT {_COLUMNS} FROM alerts {where} ORDER BY id DESC LIMIT %s",
                           [*params, limit + 1]).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    data = [alert_out(r, settings) for r in rows]
    return AlertPage(data=data, count=len(data), next_cursor=rows[-1]["id"] if more else None, last_event_id=last_event_id)


def newest_event_id(conn: Any) -> int:
    """The newest `alert_events` id (0 when there is none): where a live stream picks up."""
    row = conn.execute("SELECT coalesce(max(id), 0) FROM alert_events").fetchone()
    return int(row[0]) if row else 0


@router.get("/export.csv", summary="Export alerts as CSV (analyst, admin)", response_class=Response,
            responses={200: {"content": {"text/csv": {"example": "id,station_id,parameter,rule,...\n42,HD-DAIAN-WW01,COD,exceedance,...\n"}},
                             "description": "One alert a line"}},
            dependencies=[Depends(require("export"))])
def export_alerts(
    conn: ConnDep, settings: SettingsDep,
    from_: Annotated[Instant | None, Query(alias="from", description="Opened at or after")] = None,
    to: Annotated[Instant | None, Query(description="Opened before")] = None,
    limit: Annotated[int, Query(ge=1, le=100_000)] = 10_000,
) -> Response:
    """One line per alert opened in [`from`, `to`), oldest first, at most `limit` lines; times in the display time zone."""
    clauses, params = ["TRUE"], []
    if from_ is not None:
        clauses.append("opened_at >= %s")
        params.append(from_)
    if to is not None:
        clauses.append("opened_at < %s")
        params.append(to)
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(f"SELECT {_COLUMNS} FROM alerts WHERE {' AND '.join(clauses)} ORDER BY id LIMIT %s",
                           [*params, limit]).fetchall()
    out = io.StringIO()
    fields = list(AlertOut.model_fields)
    writer = csv.DictWriter(out, fieldnames=fields)
    writer.writeheader()
    for r in rows:
        writer.writerow(alert_out(r, settings).model_dump(mode="json"))
    return Response(out.getvalue(), media_type="text/csv")


class SuppressedAlert(BaseModel):
    """An active alert whose notifications are held back now, and what holds them back."""
    alert_id: int
    station_id: str
    zone: str | None
    parameter: str
    rule: str
    why: str = Field(description="`silenced` (a silence covers it now) or `inhibited` (its station is offline).")
    detail: str = Field(description="The silence (id, reason, end) or the station's offline alert.")


class SuppressedAlerts(BaseModel):
    """Every active alert held back now, with how many are silenced and how many inhibited."""
    silenced: int
    inhibited: int
    data: list[SuppressedAlert]


_SUPPRESSED = f"""
SELECT a.id AS alert_id, a.station_id, a.zone, a.parameter, a.rule,
       CASE WHEN s.id IS NOT NULL THEN 'silenced' ELSE 'inhibited' END AS why,
       CASE WHEN s.id IS NOT NULL THEN 'silence ' || s.id || ' (' || s.reason || ') until ' || to_char(s.ends_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
            ELSE 'station offline (alert ' || o.id || ')' END AS detail
FROM alerts a
LEFT JOIN LATERAL (SELECT id, reason, ends_at FROM silences WHERE station_id = a.station_id AND deleted_at IS NULL
                   AND (parameter IS NULL OR parameter = a.parameter) AND starts_at <= now() AND now() < ends_at
                   ORDER BY id LIMIT 1) s ON TRUE
LEFT JOIN LATERAL (SELECT id FROM alerts WHERE station_id = a.station_id AND rule = '{OFFLINE_RULE}' AND status <> 'resolved'
                   AND a.rule <> '{OFFLINE_RULE}' LIMIT 1) o ON TRUE
WHERE a.status <> 'resolved' AND NOT a.historical AND (s.id IS NOT NULL OR o.id IS NOT NULL)
ORDER BY a.station_id, a.id
"""


@router.get("/suppressed", response_model=SuppressedAlerts,
            summary="Active alerts whose notifications are held back now: silenced, or inhibited by their station being offline")
def suppressed_alerts(conn: ConnDep) -> SuppressedAlerts:
    """What the duty officer is not being told about, and why (the same rules as the notifier's `suppression`)."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(_SUPPRESSED).fetchall()
    data = [SuppressedAlert(**r) for r in rows]
    return SuppressedAlerts(silenced=sum(a.why == "silenced" for a in data), inhibited=sum(a.why == "inhibited" for a in data),
                            data=data)


@router.get("/{alert_id}", response_model=AlertDetail, summary="One alert with its full history and delivery log",
            responses={404: {"description": "No such alert"}})
def get_alert(alert_id: int, conn: ConnDep, settings: SettingsDep) -> AlertDetail:
    """The alert, its events oldest first, and every notification delivery attempt; times in the display time zone."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(f"SELECT {_COLUMNS} FROM alerts WHERE id = %s", (alert_id,)).fetchone()
        if row is None:
            raise _not_found(alert_id)
        events = cur.execute("SELECT * FROM alert_events WHERE alert_id = %s ORDER BY id", (alert_id,)).fetchall()
        deliveries = cur.execute("SELECT id, event_id, channel, attempt, outcome, detail, at FROM notification_deliveries "
                                 "WHERE alert_id = %s ORDER BY id", (alert_id,)).fetchall()
    return AlertDetail(alert=alert_out(row, settings),
                       events=[AlertEventOut(**{**e, "at": local_time(e["at"], settings)}) for e in events],
                       deliveries=[DeliveryOut(**{**d, "at": local_time(d["at"], settings)}) for d in deliveries])


_ACTION_ERRORS: dict[int | str, dict[str, Any]] = {404: {"description": "No such alert"},
                                                   409: {"description": "Not allowed in the alert's current status"}}


def _act(action: Any, conn: Any, alert_id: int, *args: Any) -> Any:
    try:
        return action(conn, alert_id, *args)
    except alerts_table.AlertNotFound:
        raise _not_found(alert_id) from None
    except TransitionError as exc:
        raise HTTPException(409, f"alert {alert_id}: {exc}") from None


@router.post("/{alert_id}/ack", response_model=AlertOut, summary="Acknowledge an alert (operator, admin)",
             responses=_ACTION_ERRORS)
def acknowledge(alert_id: int, conn: ConnDep, settings: SettingsDep,
                who: Annotated[Principal, Depends(require("alerts.write"))], body: ActionBody | None = None) -> AlertOut:
    """Records that someone has seen the alert, with the key's name and role and the optional note.
    409 if it is resolved or already acknowledged."""
    row = _act(alerts_table.acknowledge, conn, alert_id, who.actor, body.note if body else None)
    return alert_out(row, settings)


@router.post("/{alert_id}/resolve", response_model=AlertOut, summary="Resolve an alert by hand (operator, admin)",
             responses=_ACTION_ERRORS)
def resolve(alert_id: int, conn: ConnDep, settings: SettingsDep,
            who: Annotated[Principal, Depends(require("alerts.write"))], body: ActionBody | None = None) -> AlertOut:
    """Closes an active alert before its condition clears by itself; a new alert opens if the condition returns.
    409 if it is already resolved."""
    row = _act(alerts_table.resolve, conn, alert_id, who.actor, body.note if body else None)
    return alert_out(row, settings)


@router.post("/{alert_id}/comments", response_model=CommentOut, status_code=201,
             summary="Comment on an alert (operator, admin)", responses=_ACTION_ERRORS)
def add_comment(alert_id: int, body: CommentBody, conn: ConnDep,
                who: Annotated[Principal, Depends(require("alerts.write"))]) -> CommentOut:
    """Adds a note to the alert's history without changing its status; resolved alerts take comments too."""
    return CommentOut(event_id=_act(alerts_table.comment, conn, alert_id, who.actor, body.text))
