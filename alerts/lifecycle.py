"""Alert lifecycle as pure transitions: open → acknowledged → resolved, with comments.

Every function takes the current state and the instant (`now`, from an injectable clock) and
returns the new state and the event to record in the alert's history; none does I/O. An illegal
transition raises `TransitionError`, whose message says what to do instead.

Clearing has hysteresis: a value counts as clear only once it is back inside the limit by a
margin (`limit × (1 − h)` for a maximum, `limit × (1 + h)` for a minimum), and an alert resolves
by itself only after its condition has stayed clear for the hold time, measured in event time.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from alerts.rules import Condition

SYSTEM_ACTOR = "system"
LOW_RULES = frozenset({"below_minimum"})
"""Rules whose limit is a minimum: the value must rise above it to clear."""


class TransitionError(ValueError):
    """The requested transition is not allowed from the alert's current status."""


@dataclass(frozen=True)
class Policy:
    """When an active condition opens an alert and when a clear one resolves it."""
    hysteresis: float = 0.05
    """Fraction of the limit a value must be back inside before it counts as clear."""
    clear_hold: timedelta = timedelta(minutes=15)
    """How long the condition must stay clear (event time) before the alert resolves by itself."""


@dataclass(frozen=True)
class AlertState:
    """What the lifecycle knows of one alert: its status, counts and the values it has seen."""
    rule: str
    status: str
    count: int
    last_ts: datetime
    last_value: float | None
    peak_value: float | None
    limit: float | None
    clear_since: datetime | None = None
    score: float | None = None
    """The detector score of the latest condition (anomaly rules)."""
    message: str | None = None
    """The words of the newest condition by event time: a late repeat keeps them, as it keeps `last_value`."""
    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = None
    resolved_at: datetime | None = None
    resolved_by: str | None = None


@dataclass(frozen=True)
class Event:
    """One entry of an alert's history (opened, updated, acknowledged, resolved, commented, clearing, escalated, reminded)."""
    kind: str
    actor: str
    status: str
    at: datetime
    value: float | None = None
    note: str | None = None


def clear_threshold(rule: str, limit: float, hysteresis: float) -> float:
    """The value a reading must get past (downwards for a maximum, upwards for a minimum) to count as clear."""
    margin = abs(limit) * hysteresis
    return limit + margin if rule in LOW_RULES else limit - margin


def is_clear(condition: Condition, hysteresis: float) -> bool:
    """True when the condition is inactive and, if it has a value and a limit, back past the hysteresis band."""
    if condition.active:
        return False
    judged = condition.score if condition.score is not None else condition.value
    if judged is None or condition.limit is None:
        return True
    threshold = clear_threshold(condition.rule, condition.limit, hysteresis)
    return judged >= threshold if condition.rule in LOW_RULES else judged <= threshold


def open_alert(condition: Condition, now: datetime) -> tuple[AlertState, Event]:
    """A new open alert for an active condition, with its `opened` event."""
    state = AlertState(rule=condition.rule, status="open", count=1, last_ts=condition.ts, last_value=condition.value,
                       peak_value=condition.value, limit=condition.limit, score=condition.score, message=condition.message)
    return state, Event("opened", SYSTEM_ACTOR, "open", now, condition.value, condition.message)


def _peak(rule: str, peak: float | None, value: float | None) -> float | None:
    if peak is None or value is None:
        return value if peak is None else peak
    return min(peak, value) if rule in LOW_RULES else max(peak, value)


def repeat(state: AlertState, condition: Condition, now: datetime) -> tuple[AlertState, Event]:
    """The condition is active again: count it, keep the latest and the worst value, forget any clearing."""
    _require_active(state, "update")
    newer = condition.ts >= state.last_ts
    new = replace(state, count=state.count + 1, last_ts=max(state.last_ts, condition.ts),
                  last_value=condition.value if newer else state.last_value,
                  peak_value=_peak(state.rule, state.peak_value, condition.value),
                  limit=condition.limit, clear_since=None, score=condition.score if newer else state.score,
                  message=condition.message if newer else state.message)
    return new, Event("updated", SYSTEM_ACTOR, new.status, now, condition.value)


def observe_clear(state: AlertState, condition: Condition, policy: Policy, now: datetime) -> tuple[AlertState, Event | None]:
    """An evaluation found the condition inactive: start or continue the hold, resolving once it has passed.

    A value inside the hysteresis band is not clear: it restarts the hold. A condition whose data
    stopped (a gap) resolves at once, clear since the last reading before the gap.
    """
    _require_active(state, "clear")
    if condition.data_stopped:
        closed = replace(state, status="resolved", clear_since=condition.ts, resolved_at=now, resolved_by=SYSTEM_ACTOR)
        return closed, Event("resolved", SYSTEM_ACTOR, "resolved", now, condition.value, condition.message)
    if not is_clear(condition, policy.hysteresis):
        return (replace(state, clear_since=None) if state.clear_since is not None else state), None
    since = state.clear_since if state.clear_since is not None and state.clear_since <= condition.ts else condition.ts
    if condition.ts - since >= policy.clear_hold:
        resolved = replace(state, status="resolved", clear_since=since, resolved_at=now, resolved_by=SYSTEM_ACTOR)
        note = f"condition clear since {since.isoformat()} (hold {policy.clear_hold}, hysteresis {policy.hysteresis:g})"
        return resolved, Event("resolved", SYSTEM_ACTOR, "resolved", now, condition.value, note)
    return replace(state, clear_since=since), None


def clearing(before: AlertState, after: AlertState, condition: Condition, policy: Policy, now: datetime) -> Event | None:
    """The `clearing` event of an alert whose hold started or broke in `observe_clear` (None: neither).

    It is never notified; it puts the change on the alert's history and on the live stream, so a duty officer
    sees an alert on its way to resolving, and since when, without reloading."""
    if after.status != before.status or after.clear_since == before.clear_since:
        return None
    if after.clear_since is None:
        note = f"a value inside the hysteresis band ({policy.hysteresis:g} of the limit): the clear hold restarts"
    elif before.clear_since is None:
        note = (f"condition clear since {after.clear_since.isoformat()}; resolves at "
                f"{(after.clear_since + policy.clear_hold).isoformat()} if it stays clear (hold {policy.clear_hold})")
    else:
        return None
    return Event("clearing", SYSTEM_ACTOR, after.status, now, condition.value, note)


def holding_clear(since: str | None, at: datetime, hold_s: float) -> str | None:
    """For a condition judged only when its station delivers (the station-wide rules), whose clear must be observed
    again and again for `observe_clear` to resolve its alert: when it was first found clear (ISO 8601, `at` when
    `since` is None), to keep and go on reporting it clear while `at` is within `hold_s` of it; None once the hold has
    passed, this clear being the one that resolves the alert."""
    since = since or at.isoformat()
    return since if (at - datetime.fromisoformat(since)).total_seconds() < hold_s else None


def acknowledge(state: AlertState, actor: str, note: str | None, now: datetime) -> tuple[AlertState, Event]:
    """Mark an active alert as seen by `actor`; an alert is acknowledged once."""
    if state.status == "acknowledged":
        raise TransitionError(f"the alert was already acknowledged by {state.acknowledged_by}; add a comment instead")
    _require_active(state, "acknowledge")
    new = replace(state, status="acknowledged", acknowledged_at=now, acknowledged_by=actor)
    return new, Event("acknowledged", actor, "acknowledged", now, state.last_value, note)


def resolve(state: AlertState, actor: str, note: str | None, now: datetime) -> tuple[AlertState, Event]:
    """Close an active alert by hand, keeping the last value it had."""
    _require_active(state, "resolve")
    new = replace(state, status="resolved", resolved_at=now, resolved_by=actor)
    return new, Event("resolved", actor, "resolved", now, state.last_value, note)


def comment(state: AlertState, actor: str, note: str, now: datetime) -> Event:
    """A note on an alert's history that does not change its status."""
    if not note.strip():
        raise TransitionError("a comment needs text")
    return Event("commented", actor, state.status, now, state.last_value, note)


def _require_active(state: AlertState, action: str) -> None:
    if state.status == "resolved":
        raise TransitionError(f"cannot {action} a resolved alert (resolved by {state.resolved_by}); "
                              "a new alert opens if the condition returns")
