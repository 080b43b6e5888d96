"""`GET /metrics`: the API process's Prometheus metrics, with alert counts by status read at scrape time."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.deps import ConnDep
from quantrac import metrics

router = APIRouter(tags=["operations"])


@router.get("/metrics", summary="Prometheus metrics (text exposition format)", response_class=Response)
def prometheus_metrics(conn: ConnDep) -> Response:
    counts = {status: 0 for status in metrics.ALERT_STATUSES}
    counts.update({status: int(n) for status, n in conn.execute("SELECT status, count(*) FROM alerts GROUP BY status")})
    for status, n in counts.items():
        metrics.ALERTS_BY_STATUS.labels(status).set(n)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
