"""Alert persistence: conditions and people's actions become alert transitions and history events.

The transition logic is `alerts.lifecycle` (pure); this module loads the alert under a row lock,
applies a transition and writes the new state plus one `alert_events` row. The partial unique index
`alerts_one_active` guarantees one active alert per station + parameter + rule, so a repeat (or a
redelivered batch) updates count, last and peak value instead of opening another.

`alert_events` is also the notifier's outbox: the worker never waits for a notification channel.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Callable, Iterable

import psycopg
from psycopg.rows import dict_row

from alerts import lifecycle
from alerts.lifecycle import AlertState, Event, Policy
from alerts.rules import Condition
from quantrac.clock import utc_now
from quantrac.safe_text import TEXT_LIMIT, safe_text

Clock = Callable[[], datetime]


class AlertNotFound(LookupError):
    """No alert has the given id (the API answers 404)."""
    pass


def policy_from_settings() -> Policy:
    """The auto-resolve policy (clear hysteresis, clear hold) from the current settings."""
    from quantrac.settings import get_settings
    s = get_settings()
    return Policy(hysteresis=s.alert_clear_hysteresis, clear_hold=timedelta(seconds=s.alert_clear_hold_s))


_ACTIVE = "SELECT * FROM alerts WHERE station_id = %s AND parameter = %s AND rule = %s AND status <> 'resolved' FOR UPDATE"
_ACTIVE_OF_STATIONS = "SELECT * FROM alerts WHERE status <> 'resolved' AND station_id = ANY(%s) ORDER BY id FOR UPDATE"
_INSERT = """
INSERT INTO alerts (station_id, parameter, rule, basis, severity, status, opened_at, updated_at, first_ts, last_ts,
                    last_value, peak_value, limit_value, limit_source, count, message, zone, historical, score)
VALUES (%(station_id)s, %(parameter)s, %(rule)s, %(basis)s, %(severity)s, 'open', %(now)s, %(now)s, %(ts)s, %(ts)s,
        %(value)s, %(value)s, %(limit)s, %(limit_source)s, 1, %(message)s,
        (SELECT zone FROM stations WHERE id = %(station_id)s), %(historical)s, %(score)s)
ON CONFLICT (station_id, parameter, rule) WHERE status <> 'resolved' DO NOTHING
RETURNING *
"""
_UPDATE = """
UPDATE alerts SET status = %(status)s, count = %(count)s, last_ts = %(last_ts)s, last_value = %(last_value)s, score = %(score)s,
    peak_value = %(peak_value)s, limit_value = %(limit)s, clear_since = %(clear_since)s,
    acknowledged_at = %(acknowledged_at)s, acknowledged_by = %(acknowledged_by)s,
    resolved_at = %(resolved_at)s, resolved_by = %(resolved_by)s, updated_at = %(now)s,
    message = coalesce(%(message)s, message), limit_source = coalesce(%(limit_source)s, limit_source)
WHERE id = %(id)s RETURNING *
"""
_EVENT = ("INSERT INTO alert_events (alert_id, at, kind, actor, status, value, note) "
          "VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id")


def state_of(row: dict[str, Any]) -> AlertState:
    """An `alerts` row as the lifecycle's `AlertState` (the row's `limit_value` becomes `limit`)."""
    return AlertState(rule=row["rule"], status=row["status"], count=row["count"], last_ts=row["last_ts"],
                      last_value=row["last_value"], peak_value=row["peak_value"], limit=row["limit_value"], score=row.get("score"),
                      clear_since=row["clear_since"], message=row.get("message"), acknowledged_at=row["acknowledged_at"],
                      acknowledged_by=row["acknowledged_by"], resolved_at=row["resolved_at"], resolved_by=row["resolved_by"])


def _update_params(row_id: int, state: AlertState, now: datetime, condition: Condition | None = None) -> dict[str, Any]:
    return {"id": row_id, "status": state.status, "count": state.count, "last_ts": state.last_ts,
            "last_value": state.last_value, "peak_value": state.peak_value, "limit": state.limit, "score": state.score,
            "clear_since": state.clear_since, "acknowledged_at": state.acknowledged_at,
            "acknowledged_by": state.acknowledged_by, "resolved_at": state.resolved_at,
            "resolved_by": state.resolved_by, "now": now,
            "message": None if state.message is None else safe_text(state.message, 4 * TEXT_LIMIT),
            "limit_source": condition.limit_source if condition is not None else None}


def _event_params(alert_id: int, e: Event) -> tuple[Any, ...]:
    return alert_id, e.at, e.kind, e.actor, e.status, e.value, e.note


async def apply_conditions(conn: psycopg.AsyncConnection[Any], conditions: Iterable[Condition], *,
                           policy: Policy | None = None, clock: Clock = utc_now) -> list[dict[str, Any]]:
    """Open, update or (once clear for the hold time) resolve one alert per condition, in the caller's transaction.

    Returns the alert rows that changed, each with `transition` (`opened`, `updated` or `resolved`)
    and `opened` (bool) for the Kafka record. Repeats of an open alert within one call are folded:
    a station over its limit reading after reading makes one `updated` row and event per call
    (count, last and peak value include every repeat), not one per reading, and every such
    update is written in one pipelined round trip at the end.
    """
    conditions = list(conditions)
    if not conditions:
        return []
    async with conn.cursor(row_factory=dict_row) as cur:
        writer = _AlertWriter(cur, policy or policy_from_settings(), clock)
        # One query locks every active alert of the stations concerned (in id order, as any other
        # writer would meet them); a key missing from it has no active alert.
        await cur.execute(_ACTIVE_OF_STATIONS, (sorted({c.station_id for c in conditions}),))
        for found in await cur.fetchall():
            writer.locked[(found["station_id"], found["parameter"], found["rule"])] = found
        for c in conditions:
            await writer.apply(c)
        await writer.write_pending(list(writer.pending))
        await writer.note_clearing()
    return writer.rows


Key = tuple[str, str, str]
"""(station, parameter, rule): at most one active alert each."""


class _AlertWriter:
    """One `apply_conditions` call: the alerts it has locked and changed, and the repeats not written yet."""

    def __init__(self, cur: psycopg.AsyncCursor[dict[str, Any]], policy: Policy, clock: Clock) -> None:
        self.cur, self.policy, self.clock = cur, policy, clock
        self.rows: list[dict[str, Any]] = []
        self.locked: dict[Key, dict[str, Any] | None] = {}
        """The active alert of each key, as locked (FOR UPDATE) and since changed in this call."""
        self.pending: dict[Key, tuple[int, AlertState, Condition, Event]] = {}
        """Repeats not written yet: key -> (alert id, state, latest condition, latest event)."""
        self.clearing: dict[Key, tuple[AlertState, Condition]] = {}
        """Alerts whose clear hold changed in this call: key -> (state before the first change, latest condition)."""

    async def active(self, key: Key) -> dict[str, Any] | None:
        if key not in self.locked:
            await self.cur.execute(_ACTIVE, key)
            self.locked[key] = await self.cur.fetchone()
        return self.locked[key]

    async def write_pending(self, keys: Iterable[Key]) -> None:
        """Write the folded repeats of `keys`: one pipelined round trip for all of them."""
        folded = [self.pending.pop(k) for k in list(keys) if k in self.pending]
        if not folded:
            return
        now = self.clock()
        await self.cur.executemany(_UPDATE, [_update_params(i, state, now, c) for i, state, c, _ in folded], returning=True)
        updated = []
        while True:
            updated.extend(await self.cur.fetchall())
            if not self.cur.nextset():
                break
        await self.cur.executemany(_EVENT, [_event_params(i, ev) for i, _, _, ev in folded])
        self.rows.extend({**row, "opened": False, "transition": "updated"} for row in updated)

    async def apply(self, c: Condition) -> None:
        key = (c.station_id, c.parameter, c.rule)
        row = self.locked.setdefault(key, None)
        if row is None and not c.active:
            return
        now = self.clock()
        if row is not None and c.active and row.get("historical") and not c.historical:
            await self._supersede(key, row, now)
            row = None
        if row is None and c.active:
            row = await self._open(key, c, now)
        if row is None:
            return
        if c.active:
            self.clearing.pop(key, None)  # its `updated` event says the condition is back
            new, ev = lifecycle.repeat(state_of(row), c, now)
            self.pending[key] = (row["id"], new, c, ev)
            self.locked[key] = _with_state(row, new)
            return
        await self._clear(key, row, c, now)

    async def _supersede(self, key: Key, row: dict[str, Any], now: datetime) -> None:
        """Live data meets an alert raised on imported history (never notified): close that one; a live one follows."""
        await self.write_pending([key])
        closed, ev = lifecycle.resolve(state_of(row), "system", "superseded by live data", now)
        await self.cur.execute(_UPDATE, _update_params(row["id"], closed, now))
        superseded = await self.cur.fetchone()
        await self.cur.execute(_EVENT, _event_params(row["id"], ev))
        self.rows.append({**(superseded or {}), "opened": False, "transition": "resolved"})
        self.locked[key] = None

    async def _open(self, key: Key, c: Condition, now: datetime) -> dict[str, Any] | None:
        """Open an alert; None when opened, else the alert another transaction opened meanwhile (to update)."""
        _state, event = lifecycle.open_alert(c, now)
        await self.cur.execute(_INSERT, {"station_id": c.station_id, "parameter": c.parameter, "rule": c.rule,
                                         "basis": c.basis, "severity": c.severity.value, "now": now, "ts": c.ts,
                                         "value": c.value, "limit": c.limit, "limit_source": c.limit_source,
                                         "message": safe_text(c.message, 4 * TEXT_LIMIT), "historical": c.historical,
                                         "score": c.score})
        inserted = await self.cur.fetchone()
        if inserted is not None:
            await self.cur.execute(_EVENT, _event_params(inserted["id"], event))
            self.locked[key] = inserted
            self.rows.append({**inserted, "opened": True, "transition": "opened"})
            return None
        del self.locked[key]
        return await self.active(key)

    async def _clear(self, key: Key, row: dict[str, Any], c: Condition, now: datetime) -> None:
        """A clear condition on an active alert: start or continue its hold, or resolve it once held."""
        state = state_of(row)
        new, maybe = lifecycle.observe_clear(state, c, self.policy, now)
        if maybe is None:
            if new != state:
                self.locked[key] = _with_state(row, new)
                if key in self.pending:
                    self.pending[key] = (row["id"], new, *self.pending[key][2:])
                else:
                    await self.cur.execute("UPDATE alerts SET clear_since = %s WHERE id = %s", (new.clear_since, row["id"]))
                self.clearing[key] = (self.clearing.get(key, (state,))[0], c)
            return
        await self.write_pending([key])
        await self.cur.execute(_UPDATE, _update_params(row["id"], new, now, c))
        updated = await self.cur.fetchone()
        self.locked[key] = updated if updated is not None and updated["status"] != "resolved" else None
        await self.cur.execute(_EVENT, _event_params(row["id"], maybe))
        self.rows.append({**(updated or {}), "opened": False, "transition": maybe.kind})

    async def note_clearing(self) -> None:
        """One `clearing` event (`lifecycle.clearing`) per alert whose hold started or broke in this call, for the net
        change: a batch whose readings flicker about the hysteresis band does not fill the history. It is not a
        transition of the Kafka record."""
        now = self.clock()
        for key, (before, c) in self.clearing.items():
            row = self.locked.get(key)
            if row is None:  # resolved in this call: its `resolved` event says so
                continue
            event = lifecycle.clearing(before, state_of(row), c, self.policy, now)
            if event is not None:
                await self.cur.execute(_EVENT, _event_params(row["id"], event))


def _with_state(row: dict[str, Any], state: AlertState) -> dict[str, Any]:
    """An alert row with a state not written yet."""
    return {**row, "status": state.status, "count": state.count, "last_ts": state.last_ts, "last_value": state.last_value,
            "score": state.score, "message": state.message,
            "peak_value": state.peak_value, "limit_value": state.limit, "clear_since": state.clear_since,
            "acknowledged_at": state.acknowledged_at, "acknowledged_by": state.acknowledged_by,
            "resolved_at": state.resolved_at, "resolved_by": state.resolved_by}


def _locked(conn: psycopg.Connection[Any], alert_id: int) -> dict[str, Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute("SELECT * FROM alerts WHERE id = %s FOR UPDATE", (alert_id,)).fetchone()
    if row is None:
        raise AlertNotFound(f"alert {alert_id} does not exist; list alerts with GET /api/v1/alerts")
    return row


def _write(conn: psycopg.Connection[Any], row: dict[str, Any], new: AlertState, event: Event) -> tuple[dict[str, Any], int]:
    with conn.cursor(row_factory=dict_row) as cur:
        updated = cur.execute(_UPDATE, _update_params(row["id"], new, event.at)).fetchone()
        event_row = cur.execute(_EVENT, _event_params(row["id"], event)).fetchone()
    assert updated is not None and event_row is not None
    return updated, int(event_row["id"])


def acknowledge(conn: psycopg.Connection[Any], alert_id: int, actor: str, note: str | None,
                clock: Clock = utc_now) -> dict[str, Any]:
    """Acknowledge alert `alert_id` as `actor` and record the event, under a row lock; returns the updated row.

    Raises AlertNotFound for an unknown id, TransitionError when the alert is resolved or already acknowledged.
    """
    with conn.transaction():
        row = _locked(conn, alert_id)
        new, event = lifecycle.acknowledge(state_of(row), actor, note, clock())
        return _write(conn, row, new, event)[0]


def resolve(conn: psycopg.Connection[Any], alert_id: int, actor: str, note: str | None,
            clock: Clock = utc_now) -> dict[str, Any]:
    """Resolve alert `alert_id` by hand as `actor` and record the event, under a row lock; returns the updated row.

    Raises AlertNotFound for an unknown id, TransitionError when the alert is already resolved.
    """
    with conn.transaction():
        row = _locked(conn, alert_id)
        new, event = lifecycle.resolve(state_of(row), actor, note, clock())
        return _write(conn, row, new, event)[0]


def comment(conn: psycopg.Connection[Any], alert_id: int, actor: str, note: str, clock: Clock = utc_now) -> int:
    """Add a comment to the alert's history; returns the event id."""
    with conn.transaction():
        row = _locked(conn, alert_id)
        event = lifecycle.comment(state_of(row), actor, note, clock())
        with conn.cursor() as cur:
            found = cur.execute(_EVENT, _event_params(row["id"], event)).fetchone()
        assert found is not None
        return int(found[0])


def record_event(conn: psycopg.Connection[Any], alert_id: int, event: Event) -> int:
    """Append an event (escalation, reminder) to an alert's history, in the caller's transaction."""
    with conn.cursor() as cur:
        found = cur.execute(_EVENT, _event_params(alert_id, event)).fetchone()
    assert found is not None
    return int(found[0])
