"""API keys (admin only): create, list, revoke."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException
from psycopg.rows import dict_row
from pydantic import BaseModel, Field

from api.auth import Principal, create_key, require
from api.deps import ERRORS, ConnDep

router = APIRouter(prefix="/api/v1/keys", tags=["keys"], responses=ERRORS, dependencies=[Depends(require("keys"))])


class KeyIn(BaseModel):
    """A key to create: the name people know it by, and its role."""
    name: str = Field(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f]*\S[^\x00-\x1f]*$", examples=["duty-officer-1"])
    role: Literal["operator", "analyst", "admin"]


class KeyOut(BaseModel):
    """An API key as listed: `prefix` (`qk_<prefix>_...`) identifies it; the key itself is never shown again."""
    id: int
    name: str
    role: str
    prefix: str
    created_by: str
    created_at: datetime
    revoked_at: datetime | None


class NewKey(KeyOut):
    """A key just created, with the key itself: the only time it is returned."""
    key: str = Field(description="The key itself: shown this once, store it safely.")


class KeyList(BaseModel):
    """Every API key, revoked ones included, oldest first."""
    data: list[KeyOut]
    count: int


_COLS = "id, name, role, prefix, created_by, created_at, revoked_at"


@router.get("", response_model=KeyList, summary="List API keys (never the keys themselves)")
def list_keys(conn: ConnDep) -> KeyList:
    """Revoked keys included (`revoked_at` set), oldest first. Only a hash of each key is stored."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(f"SELECT {_COLS} FROM api_keys ORDER BY id").fetchall()
    return KeyList(data=[KeyOut(**r) for r in rows], count=len(rows))


@router.post("", response_model=NewKey, status_code=201, summary="Create an API key")
def new_key(body: KeyIn, conn: ConnDep, who: Annotated[Principal, Depends(require("keys"))]) -> NewKey:
    """Answers with the key itself, once: only its hash is stored. `created_by` records the admin's key."""
    key, key_id = create_key(conn, body.name, body.role, who.actor)
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(f"SELECT {_COLS} FROM api_keys WHERE id = %s", (key_id,)).fetchone()
    return NewKey(**row, key=key)  # type: ignore[arg-type]  # fetchone() is typed Optional; the key was inserted by create_key just above, so its row exists


@router.delete("/{key_id}", response_model=KeyOut, summary="Revoke an API key",
               responses={404: {"description": "No such key, or already revoked"}})
def revoke_key(key_id: int, conn: ConnDep, who: Annotated[Principal, Depends(require("keys"))]) -> KeyOut:
    """The key stops working at once; its record stays, with `revoked_at` and who revoked it."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(f"UPDATE api_keys SET revoked_at = now(), revoked_by = %s WHERE id = %s AND revoked_at IS NULL "
                          f"RETURNING {_COLS}", (who.actor, key_id)).fetchone()
    if row is None:
        raise HTTPException(404, f"key {key_id} does not exist or is already revoked")
    return KeyOut(**row)
