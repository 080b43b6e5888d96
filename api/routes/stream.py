"""`GET /api/v1/alerts/stream`: server-sent events of every alert transition, resumable.

Each SSE event's id is the `alert_events` id; a client that reconnects with `Last-Event-ID` gets
every transition after it, so nothing is missed across a dropped connection. Without it the
stream starts with the next transition.
"""

from __future__ import annotations

from typing import Annotated, Any, AsyncIterator

import anyio
import orjson
from fastapi import APIRouter, Header, Query, Request
from psycopg.rows import dict_row
from sse_starlette import EventSourceResponse, ServerSentEvent

from api.deps import ERRORS, local_time
from api.routes.alerts import _COLUMNS, alert_out

router = APIRouter(prefix="/api/v1/alerts", tags=["alerts"], responses=ERRORS)

_BATCH = 200
_EVENTS = (f"SELECT e.id AS event_id, e.kind, e.actor, e.at, e.note, e.value AS event_value, "
           f"{', '.join('a.' + c.strip() for c in _COLUMNS.split(','))} "
           f"FROM alert_events e JOIN alerts a ON a.id = e.alert_id WHERE e.id > %s ORDER BY e.id LIMIT %s")


def _fetch(pool: Any, after: int) -> list[dict[str, Any]]:
    with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(_EVENTS, (after, _BATCH)).fetchall()


def _newest(pool: Any) -> int:
    with pool.connection() as conn:
        row = conn.execute("SELECT coalesce(max(id), 0) FROM alert_events").fetchone()
    return int(row[0]) if row else 0


@router.get("/stream", summary="Server-sent events of every alert transition (resume with Last-Event-ID)",
            response_class=EventSourceResponse,
            responses={200: {"content": {"text/event-stream": {"example": 'id: 1041\nevent: alert\ndata: {"kind": "acknowledged", ...}\n\n'}},
                             "description": "An endless stream; each event's id is its alert_events id."}})
async def stream(request: Request,
                 last_event_id: Annotated[int | None, Header(ge=0, le=2**62, description="Resume after this event id.")] = None,
                 after: Annotated[int | None, Query(ge=0, le=2**62, description="Same as Last-Event-ID, for clients that cannot set headers.")] = None,
                 ) -> EventSourceResponse:
    settings = request.app.state.settings
    pool = request.app.state.pool
    start = last_event_id if last_event_id is not None else after
    if start is None:
        start = await anyio.to_thread.run_sync(_newest, pool)

    async def events() -> AsyncIterator[ServerSentEvent]:
        cursor = start
        while True:
            rows = await anyio.to_thread.run_sync(_fetch, pool, cursor)
            for r in rows:
                cursor = r["event_id"]
                body = {"event_id": r["event_id"], "kind": r["kind"], "actor": r["actor"],
                        "at": local_time(r["at"], settings).isoformat(),  # type: ignore[union-attr]
                        "note": r["note"], "value": r["event_value"],
                        "alert": alert_out(r, settings).model_dump(mode="json")}
                yield ServerSentEvent(data=orjson.dumps(body).decode(), event="alert", id=str(r["event_id"]))
            if len(rows) < _BATCH:
                if await request.is_disconnected():
                    return
                await anyio.sleep(settings.sse_poll_s)

    return EventSourceResponse(events(), ping=15)
