"""Dead letters: every rejected message or reading, with its reason, kept whole (see ingest/deadletter.py)."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from psycopg.rows import dict_row
from pydantic import BaseModel, Field

from api.deps import ConnDep, Instant, SettingsDep, local_time
from quantrac.db import where_clause

router = APIRouter(prefix="/api/v1/deadletters", tags=["ingest"])


class DeadLetter(BaseModel):
    """A rejected message or reading, or a record a loop quarantined, with its payload kept for inspection and replay."""
    id: int
    received_at: datetime
    source: str
    stage: str = Field(description="Who set it aside: `ingest` (validation at the edge) or the loop that quarantined it "
                                   "(bridge, deadletter-keeper, worker, notifier, tt10, import, replay).")
    topic: str
    reason: str
    message: str
    station_id: str | None
    parameter: str | None
    index: int | None
    payload_text: str | None = Field(description="The kept payload as text, when it is UTF-8.")
    payload_b64: str = Field(description="The kept payload: whole, or its head when `truncated`.")
    payload_size: int | None = Field(description="Size in bytes of the whole original payload.")
    payload_sha256: str | None = Field(description="SHA-256 (hex) of the whole original payload.")
    truncated: bool = Field(description="True when only the head of the payload was kept (QUANTRAC_DEADLETTER_PAYLOAD_CAP_BYTES).")
    replayed_at: datetime | None
    replay_result: str | None


class DeadLetterPage(BaseModel):
    """One page of dead letters: `total` of them match the filters; `next_offset` is null on the last page."""
    data: list[DeadLetter]
    count: int
    total: int
    next_offset: int | None


@router.get("", response_model=DeadLetterPage, summary="List dead letters, newest first")
def list_deadletters(
    conn: ConnDep, settings: SettingsDep,
    station: Annotated[str | None, Query(description="Station id")] = None,
    reason: Annotated[str | None, Query(description="Reason code, e.g. unknown_station, or quarantined")] = None,
    stage: Annotated[str | None, Query(description="Loop that set it aside, e.g. ingest, bridge, worker, notifier")] = None,
    since: Annotated[Instant | None, Query(description="Received at or after this instant")] = None,
    replayed: Annotated[bool | None, Query(description="Only replayed (true) or only pending (false)")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> DeadLetterPage:
    """Newest first, filtered by station, reason, stage, time and replay state; page on with `offset=next_offset`."""
    where, params = where_clause(("station_id = %s", station or None), ("reason = %s", reason or None),
                                 ("stage = %s", stage or None),
                                 ("received_at >= %s", since),
                                 ("replayed_at IS NOT NULL" if replayed else "replayed_at IS NULL", replayed))
    with conn.cursor(row_factory=dict_row) as cur:
        total = cur.execute(f"SELECT count(*) AS n FROM deadletters {where}", params).fetchone()["n"]  # type: ignore[index]  # fetchone() is typed Optional; SELECT count(*) always returns one row
        rows = cur.execute(
            f"SELECT id, received_at, source, stage, topic, reason, message, station_id, parameter, item_index, payload, "
            f"payload_size, payload_sha256, truncated, replayed_at, replay_result FROM deadletters {where} "
            f"ORDER BY received_at DESC, id DESC LIMIT %s OFFSET %s",
            [*params, limit, offset]).fetchall()
    data = [DeadLetter(
        id=r["id"], received_at=local_time(r["received_at"], settings), source=r["source"], stage=r["stage"], topic=r["topic"],
        reason=r["reason"], message=r["message"], station_id=r["station_id"], parameter=r["parameter"], index=r["item_index"],
        payload_text=_text(bytes(r["payload"])), payload_b64=base64.b64encode(bytes(r["payload"])).decode("ascii"),
        payload_size=r["payload_size"], payload_sha256=r["payload_sha256"], truncated=r["truncated"],
        replayed_at=local_time(r["replayed_at"], settings), replay_result=r["replay_result"]) for r in rows]
    more = offset + len(data) < total
    return DeadLetterPage(data=data, count=len(data), total=total, next_offset=offset + len(data) if more else None)


class DeadLetterCount(BaseModel):
    """How many dead letters one stage set aside for one reason, and when the newest arrived."""
    stage: str
    reason: str
    count: int
    newest: datetime


@router.get("/counts", response_model=list[DeadLetterCount], summary="Dead letters counted by stage and reason")
def count_deadletters(
    conn: ConnDep, settings: SettingsDep,
    since: Annotated[Instant | None, Query(description="Received at or after this instant")] = None,
) -> list[DeadLetterCount]:
    """How many rejections and quarantined records there are, per stage and reason (`quarantined` ones need a look)."""
    where, params = where_clause(("received_at >= %s", since))
    rows = conn.execute(f"SELECT stage, reason, count(*), max(received_at) FROM deadletters {where} "
                        f"GROUP BY stage, reason ORDER BY stage, reason", params).fetchall()
    return [DeadLetterCount(stage=stage, reason=reason, count=n, newest=local_time(newest, settings))
            for stage, reason, n, newest in rows]


def _text(payload: bytes) -> str | None:
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        return None
