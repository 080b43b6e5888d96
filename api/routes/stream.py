"""`GET /api/v1/alerts/stream`: server-sent events of every alert transition, resumable.

Each SSE event's id is the `alert_events` id; a client that reconnects with `Last-Event-ID` gets
every transition after it, so nothing is missed across a dropped connection. Without it the
stream starts with the next transition.

Ids come from a sequence, so a transaction that took its id first may commit after a later one:
the stream waits at a hole in the ids (`sse_gap_grace_s`) instead of stepping past an event that
is still committing; a hole older than that is a rolled-back transaction and is stepped over.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any, AsyncIterator

import anyio
import orjson
from fastapi import APIRouter, Header, Query, Request
from psycopg.rows import dict_row
from sse_starlette import EventSourceResponse, ServerSentEvent

from api.deps import ERRORS, local_time
from api.routes.alerts import _COLUMNS, alert_out, newest_event_id

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
        return newest_event_id(conn)


class HoleWait:
    """Decides whether the stream may step past a hole in the event ids (`now` in seconds, monotonic)."""

    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        self._hole: int | None = None
        self._since = 0.0

    def may_pass(self, cursor: int, next_id: int, now: float, next_age_s: float) -> bool:
        """`next_age_s`: how long ago the event after the hole was written; an old one means an old hole."""
        if next_id == cursor + 1 or next_age_s >= self.grace_s:
            self._hole = None
            return True
        if self._hole != cursor + 1:
            self._hole, self._since = cursor + 1, now
        if now - self._since >= self.grace_s:
            self._hole = None
            return True
        return False


@router.get("/stream", summary="Server-sent events of every alert transition (resume with Last-Event-ID)",
            response_class=EventSourceResponse,
            responses={200: {"content": {"text/event-stream": {"example": 'id: 1041\nevent: alert\ndata: {"kind": "acknowledged", ...}\n\n'}},
                             "description": "An endless stream; each event's id is its alert_events id."}})
async def stream(request: Request,
                 last_event_id: Annotated[int | None, Header(ge=0, le=2**62, description="Resume after this event id.")] = None,
                 after: Annotated[int | None, Query(ge=0, le=2**62, description="Same as Last-Event-ID, for clients that cannot set headers.")] = None,
                 ) -> EventSourceResponse:
    """The events after `start`, polled every `sse_poll_s`; waits at a hole in the ids, ends when the client disconnects."""
    settings = request.app.state.settings
    pool = request.app.state.pool
    start = last_event_id if last_event_id is not None else after
    if start is None:
        start = await anyio.to_thread.run_sync(_newest, pool)

    async def events() -> AsyncIterator[ServerSentEvent]:
        cursor = start
        holes = HoleWait(settings.sse_gap_grace_s)
        while True:
            rows = await anyio.to_thread.run_sync(_fetch, pool, cursor)
            waiting = False
            for r in rows:
                age = (datetime.now(timezone.utc) - r["at"]).total_seconds()
                if not holes.may_pass(cursor, r["event_id"], anyio.current_time(), age):
                    waiting = True
                    break
                cursor = r["event_id"]
                body = {"event_id": r["event_id"], "kind": r["kind"], "actor": r["actor"],
                        "at": local_time(r["at"], settings).isoformat(),  # type: ignore[union-attr]  # local_time returns None only for None; at is a non-null column
                        "note": r["note"], "value": r["event_value"],
                        "alert": alert_out(r, settings).model_dump(mode="json")}
                yield ServerSentEvent(data=orjson.dumps(body).decode(), event="alert", id=str(r["event_id"]))
            if waiting or len(rows) < _BATCH:
                if await request.is_disconnected():
                    return
                await anyio.sleep(settings.sse_poll_s)

    return EventSourceResponse(events(), ping=15)
