"""`GET /metrics`: the API process's Prometheus metrics, with alert counts by status and bridge sessions read at scrape time."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.deps import ConnDep, SettingsDep
from quantrac import metrics
from quantrac.bridge_sessions import known_sessions

router = APIRouter(tags=["operations"])


@router.get("/metrics", summary="Prometheus metrics (text exposition format)", response_class=Response)
def prometheus_metrics(conn: ConnDep, settings: SettingsDep) -> Response:
    """Sets the alert-count and bridge-session gauges from the database at each scrape, then exposes every metric of the
    API process; a session whose row is gone leaves no series."""
    counts = {status: 0 for status in metrics.ALERT_STATUSES}
    counts.update({status: int(n) for status, n in conn.execute("SELECT status, count(*) FROM alerts GROUP BY status")})
    for status, n in counts.items():
        metrics.ALERTS_BY_STATUS.labels(status).set(n)
    # A session that ended (its row deleted) must leave no series behind.
    metrics.BRIDGE_SILENT_SECONDS.clear()
    metrics.BRIDGE_STRANDED.clear()
    for session in known_sessions(conn):
        metrics.BRIDGE_SILENT_SECONDS.labels(session.client_id).set(round(session.silent_s, 1))
        metrics.BRIDGE_STRANDED.labels(session.client_id).set(int(session.stranded(settings.bridge_stranded_after_s)))
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
