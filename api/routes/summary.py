"""Station status summary for the supervision centre: stations by zone, online or offline, open alerts."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from psycopg.rows import dict_row
from pydantic import BaseModel, Field

from alerts.inhibition import OFFLINE_RULE
from api.deps import ERRORS, ConnDep, SettingsDep, local_time

router = APIRouter(prefix="/api/v1/summary", tags=["summary"], responses=ERRORS)

LATE_FACTOR = 2
"""A station heard of neither by a delivery nor by a stored reading for this many expected intervals counts as offline."""


class StationState(BaseModel):
    """A station's state: offline when silent for LATE_FACTOR expected intervals or its offline alert is open.

    Silence is judged on the newer of its last delivery and its newest reading's event time: a gateway whose clock is
    stuck or behind still delivers (its `station_clock` alert says what is wrong), and is not offline."""
    id: str
    name: str
    zone: str
    facility: str
    kind: str
    state: Literal["online", "offline"]
    last_reading_at: datetime | None = Field(description="Event time of its newest reading (last 7 days).")
    last_received_at: datetime | None = Field(None, description="When the bridge received its newest live delivery, as "
                                              "the worker last recorded it (null: none since the worker's state began).")
    open_alerts: int = Field(description="Alerts not resolved (open or acknowledged).")
    deadletters_24h: int = Field(0, description="Dead letters of its data in the last 24 h: messages, readings, files or "
                                 "records refused or set aside on arrival or in the worker, not the alerts' own quarantines "
                                 "(GET /api/v1/deadletters?station=…). A gateway that sends something broken keeps "
                                 "a station online while part of its data is lost to it.")
    open_critical: int
    unacknowledged: int


class ZoneSummary(BaseModel):
    """The stations of one industrial zone, with online/offline and open-alert totals."""
    zone: str
    stations: list[StationState]
    online: int
    offline: int
    open_alerts: int
    open_critical: int


class Summary(BaseModel):
    """Every active station grouped by zone, with totals over all zones."""
    zones: list[ZoneSummary]
    stations: int
    offline: int
    open_alerts: int
    generated_at: datetime

    model_config = {"json_schema_extra": {"examples": [{
        "zones": [{"zone": "KCN Đại An", "online": 1, "offline": 0, "open_alerts": 1, "open_critical": 1,
                   "stations": [{"id": "HD-DAIAN-WW01", "name": "Trạm nước thải KCN Đại An", "zone": "KCN Đại An",
                                 "facility": "KCN Đại An", "kind": "wastewater", "state": "online",
                                 "last_reading_at": "2026-11-29T21:05:00+07:00", "deadletters_24h": 0, "open_alerts": 1,
                                 "open_critical": 1, "unacknowledged": 1}]}],
        "stations": 1, "offline": 0, "open_alerts": 1, "generated_at": "2026-11-29T21:06:00+07:00"}]}}


ALERT_STAGES = ("notifier", "escalation")
"""The loops whose quarantines concern an alert's delivery, not a station's data."""

# One pass over the week's readings: a max(ts) per station in a correlated subquery becomes a scan of the
# ts index filtered by station, which reads the whole week for every station that sent nothing in it.
_SQL = f"""
SELECT s.id, s.name, s.zone, s.facility, s.kind, s.expected_interval_s, r.last_reading_at, l.received_at AS last_received_at,
  coalesce(d.refused, 0) AS deadletters_24h,
  count(a.id) AS open_alerts,
  count(a.id) FILTER (WHERE a.severity = 'critical') AS open_critical,
  count(a.id) FILTER (WHERE a.status = 'open') AS unacknowledged,
  bool_or(a.rule = '{OFFLINE_RULE}') AS offline_alert
FROM stations s
LEFT JOIN (SELECT station_id, max(ts) AS last_reading_at FROM readings WHERE ts > now() - interval '7 days'
           GROUP BY station_id) r ON r.station_id = s.id
LEFT JOIN station_liveness l ON l.station_id = s.id
LEFT JOIN (SELECT station_id, count(*) AS refused FROM deadletters
           WHERE received_at > now() - interval '24 hours' AND NOT stage = ANY(%s) GROUP BY station_id) d
  ON d.station_id = s.id
LEFT JOIN alerts a ON a.station_id = s.id AND a.status <> 'resolved'
WHERE s.retired_at IS NULL {{zone}}
GROUP BY s.id, r.last_reading_at, l.received_at, d.refused ORDER BY s.zone, s.id
"""


@router.get("/stations", response_model=Summary, summary="Every station's state and open alerts, grouped by zone")
def station_summary(conn: ConnDep, settings: SettingsDep,
                    zone: Annotated[str | None, Query(max_length=200)] = None) -> Summary:
    """A station is offline when it sent nothing for twice its expected interval (looking back at most 7 days)
    or its offline alert is open. `unacknowledged` counts the alerts still `open`."""
    now = datetime.now(timezone.utc)
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(_SQL.format(zone="AND s.zone = %s" if zone else ""),
                           [list(ALERT_STAGES), *([zone] if zone else [])]).fetchall()
    zones: dict[str, list[StationState]] = {}
    for r in rows:
        heard = max((t for t in (r["last_reading_at"], r["last_received_at"]) if t is not None), default=None)
        late = heard is None or now - heard > timedelta(seconds=LATE_FACTOR * r["expected_interval_s"])
        state = "offline" if (late or r["offline_alert"]) else "online"
        zones.setdefault(r["zone"], []).append(StationState(
            id=r["id"], name=r["name"], zone=r["zone"], facility=r["facility"], kind=r["kind"], state=state,
            last_reading_at=local_time(r["last_reading_at"], settings),
            last_received_at=local_time(r["last_received_at"], settings), deadletters_24h=r["deadletters_24h"],
            open_alerts=r["open_alerts"],
            open_critical=r["open_critical"], unacknowledged=r["unacknowledged"]))
    out = [ZoneSummary(zone=z, stations=ss, online=sum(s.state == "online" for s in ss),
                       offline=sum(s.state == "offline" for s in ss), open_alerts=sum(s.open_alerts for s in ss),
                       open_critical=sum(s.open_critical for s in ss)) for z, ss in zones.items()]
    return Summary(zones=out, stations=len(rows), offline=sum(z.offline for z in out),
                   open_alerts=sum(z.open_alerts for z in out), generated_at=local_time(now, settings))
