"""Unit tests of the pure alert lifecycle and escalation timing (injected clock, no services)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alerts import lifecycle
from alerts.escalation import EscalationPolicy, due, reminder_delay
from alerts.inhibition import OFFLINE_RULE, inhibited
from alerts.lifecycle import Policy, TransitionError
from alerts.rules import Condition
from alerts.silences import Silence, first_match, matches
from quantrac.domain import Severity

T0 = datetime(2026, 11, 29, 14, 0, tzinfo=timezone.utc)
POLICY = Policy(hysteresis=0.1, clear_hold=timedelta(minutes=10))


def cond(value: float, *, minutes: float = 0, active: bool | None = None, rule: str = "exceedance",
         limit: float = 100.0) -> Condition:
    if active is None:
        active = value < limit if rule == "below_minimum" else value > limit
    return Condition("S1", "COD", rule, "instant", Severity.CRITICAL, value, limit, "test", T0 + timedelta(minutes=minutes),
                     f"value {value}", active)


def opened(value: float = 150.0) -> lifecycle.AlertState:
    return lifecycle.open_alert(cond(value), T0)[0]


def test_open_records_value_and_event() -> None:
    state, event = lifecycle.open_alert(cond(150.0), T0)
    assert (state.status, state.count, state.last_value, state.peak_value) == ("open", 1, 150.0, 150.0)
    assert (event.kind, event.actor, event.value, event.at) == ("opened", "system", 150.0, T0)


def test_repeat_counts_and_keeps_latest_and_peak() -> None:
    state, _ = lifecycle.repeat(opened(150.0), cond(180.0, minutes=5), T0)
    state, event = lifecycle.repeat(state, cond(120.0, minutes=10), T0)
    assert (state.count, state.last_value, state.peak_value) == (3, 120.0, 180.0)
    assert event.kind == "updated"


def test_repeat_out_of_order_keeps_the_newest_as_last() -> None:
    state, _ = lifecycle.repeat(opened(150.0), cond(180.0, minutes=10), T0)
    state, _ = lifecycle.repeat(state, cond(130.0, minutes=5), T0)
    assert (state.last_value, state.peak_value, state.last_ts) == (180.0, 180.0, T0 + timedelta(minutes=10))


def test_below_minimum_peak_is_the_lowest() -> None:
    state = lifecycle.open_alert(cond(5.0, rule="below_minimum", limit=5.5), T0)[0]
    state, _ = lifecycle.repeat(state, cond(4.0, rule="below_minimum", limit=5.5, minutes=5), T0)
    assert state.peak_value == 4.0


def test_acknowledge_then_resolve_by_hand() -> None:
    state, event = lifecycle.acknowledge(opened(), "ana (operator)", "on it", T0 + timedelta(minutes=1))
    assert (state.status, state.acknowledged_by, event.kind, event.note) == ("acknowledged", "ana (operator)", "acknowledged", "on it")
    state, event = lifecycle.resolve(state, "ana (operator)", "fixed", T0 + timedelta(minutes=2))
    assert (state.status, state.resolved_by, event.kind, event.value) == ("resolved", "ana (operator)", "resolved", 150.0)


def test_repeat_of_acknowledged_alert_stays_acknowledged() -> None:
    state, _ = lifecycle.acknowledge(opened(), "ana", None, T0)
    state, _ = lifecycle.repeat(state, cond(200.0, minutes=5), T0)
    assert (state.status, state.count) == ("acknowledged", 2)


def test_resolve_from_open_directly() -> None:
    assert lifecycle.resolve(opened(), "bob", None, T0)[0].status == "resolved"


@pytest.mark.parametrize("action", ["acknowledge", "resolve", "repeat", "clear"])
def test_nothing_changes_a_resolved_alert(action: str) -> None:
    resolved = lifecycle.resolve(opened(), "bob", None, T0)[0]
    with pytest.raises(TransitionError, match="resolved"):
        if action == "acknowledge":
            lifecycle.acknowledge(resolved, "ana", None, T0)
        elif action == "resolve":
            lifecycle.resolve(resolved, "ana", None, T0)
        elif action == "repeat":
            lifecycle.repeat(resolved, cond(150.0), T0)
        else:
            lifecycle.observe_clear(resolved, cond(10.0), POLICY, T0)


def test_acknowledging_twice_is_refused_with_who_did_it() -> None:
    state = lifecycle.acknowledge(opened(), "ana", None, T0)[0]
    with pytest.raises(TransitionError, match="already acknowledged by ana"):
        lifecycle.acknowledge(state, "bob", None, T0)


def test_comment_in_every_status_but_not_empty() -> None:
    state = opened()
    for s in (state, lifecycle.acknowledge(state, "a", None, T0)[0], lifecycle.resolve(state, "a", None, T0)[0]):
        event = lifecycle.comment(s, "ana", "sample taken", T0)
        assert (event.kind, event.status, event.note) == ("commented", s.status, "sample taken")
    with pytest.raises(TransitionError):
        lifecycle.comment(state, "ana", "   ", T0)


def test_auto_resolve_after_hold_in_event_time() -> None:
    state, event = lifecycle.observe_clear(opened(), cond(80.0, minutes=1), POLICY, T0)
    assert event is None and state.clear_since == T0 + timedelta(minutes=1)
    state, event = lifecycle.observe_clear(state, cond(85.0, minutes=10), POLICY, T0)
    assert event is None and state.status == "open"
    state, event = lifecycle.observe_clear(state, cond(85.0, minutes=11), POLICY, T0 + timedelta(hours=1))
    assert event is not None and (event.kind, event.actor, state.status, state.resolved_by) == ("resolved", "system", "resolved", "system")
    assert state.resolved_at == T0 + timedelta(hours=1)


def test_value_inside_hysteresis_band_is_not_clear_and_restarts_the_hold() -> None:
    state, _ = lifecycle.observe_clear(opened(), cond(80.0, minutes=1), POLICY, T0)
    state, event = lifecycle.observe_clear(state, cond(95.0, minutes=5), POLICY, T0)  # below limit, above 90
    assert event is None and state.clear_since is None
    state, event = lifecycle.observe_clear(state, cond(80.0, minutes=12), POLICY, T0)
    assert event is None and state.clear_since == T0 + timedelta(minutes=12)


def test_clearing_events_say_when_a_hold_starts_and_when_the_band_restarts_it() -> None:
    state, _ = lifecycle.observe_clear(opened(), cond(80.0, minutes=1), POLICY, T0)
    started = lifecycle.clearing(opened(), state, cond(80.0, minutes=1), POLICY, T0)
    assert started is not None and (started.kind, started.actor, started.status, started.value) == ("clearing", "system", "open", 80.0)
    assert (T0 + timedelta(minutes=1)).isoformat() in (started.note or "")
    assert (T0 + timedelta(minutes=1) + POLICY.clear_hold).isoformat() in (started.note or "")
    held, _ = lifecycle.observe_clear(state, cond(85.0, minutes=2), POLICY, T0)
    assert lifecycle.clearing(state, held, cond(85.0, minutes=2), POLICY, T0) is None
    broken, _ = lifecycle.observe_clear(held, cond(95.0, minutes=3), POLICY, T0)
    restarted = lifecycle.clearing(held, broken, cond(95.0, minutes=3), POLICY, T0)
    assert restarted is not None and "hold restarts" in (restarted.note or "")
    resolved, _ = lifecycle.observe_clear(held, cond(85.0, minutes=30), POLICY, T0)
    assert resolved.status == "resolved" and lifecycle.clearing(held, resolved, cond(85.0, minutes=30), POLICY, T0) is None


def test_repeat_cancels_clearing() -> None:
    state, _ = lifecycle.observe_clear(opened(), cond(80.0, minutes=1), POLICY, T0)
    state, _ = lifecycle.repeat(state, cond(150.0, minutes=2), T0)
    assert state.clear_since is None


def test_zero_hold_resolves_on_first_clear_reading() -> None:
    state, event = lifecycle.observe_clear(opened(), cond(50.0), Policy(0.1, timedelta(0)), T0)
    assert event is not None and state.status == "resolved"


@given(limit=st.floats(0.1, 1e4), h=st.floats(0, 0.5), ratio=st.floats(0, 2))
def test_hysteresis_threshold_for_maximum_and_minimum(limit: float, h: float, ratio: float) -> None:
    value = limit * ratio
    high = cond(value, limit=limit, active=False)
    low = cond(value, limit=limit, active=False, rule="below_minimum")
    assert lifecycle.is_clear(high, h) == (value <= limit - limit * h)
    assert lifecycle.is_clear(low, h) == (value >= limit + limit * h)
    assert not lifecycle.is_clear(cond(value, limit=limit, active=True), h)


ESC = EscalationPolicy(ack_timeout={"warning": timedelta(minutes=60), "critical": timedelta(minutes=15)},
                       reminder_first=timedelta(minutes=10), reminder_backoff=2.0, reminder_max=timedelta(minutes=60))


def _due(now_min: float, *, severity: str = "critical", status: str = "open", escalated: float | None = None,
         reminders: int = 0, last: float | None = None) -> str | None:
    at = lambda m: None if m is None else T0 + timedelta(minutes=m)  # noqa: E731
    return due(status=status, severity=severity, opened_at=T0, escalated_at=at(escalated), reminders_sent=reminders,
               last_notified_at=at(last), policy=ESC, now=T0 + timedelta(minutes=now_min))


def test_escalates_after_the_severity_timeout() -> None:
    assert _due(14.9) is None
    assert _due(15) == "escalated"
    assert _due(59, severity="warning") is None
    assert _due(60, severity="warning") == "escalated"


def test_acknowledged_or_resolved_alerts_never_escalate() -> None:
    assert _due(1000, status="acknowledged") is None
    assert _due(1000, status="resolved") is None


def test_reminders_back_off_to_a_ceiling() -> None:
    assert [reminder_delay(ESC, n) for n in range(4)] == [timedelta(minutes=m) for m in (10, 20, 40, 60)]
    assert _due(24.9, escalated=15, last=15) is None
    assert _due(25, escalated=15, last=15) == "reminded"
    assert _due(44.9, escalated=15, reminders=1, last=25) is None
    assert _due(45, escalated=15, reminders=1, last=25) == "reminded"
    assert _due(25 + 20 + 60, escalated=15, reminders=5, last=45) == "reminded"


def test_silence_window_and_parameter() -> None:
    s = Silence(1, "S1", "COD", T0, T0 + timedelta(hours=1), "calibration")
    whole = Silence(2, "S1", None, T0, T0 + timedelta(hours=1), "maintenance")
    assert matches(s, "S1", "COD", T0) and not matches(s, "S1", "pH", T0)
    assert not matches(s, "S1", "COD", T0 + timedelta(hours=1)) and not matches(s, "S1", "COD", T0 - timedelta(seconds=1))
    assert not matches(s, "S2", "COD", T0)
    assert first_match([s, whole], "S1", "pH", T0) == whole


def test_inhibition_spares_the_offline_alert_itself() -> None:
    assert inhibited("exceedance", True) and not inhibited("exceedance", False)
    assert not inhibited(OFFLINE_RULE, True)
