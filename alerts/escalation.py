"""Escalation and reminders of alerts nobody acknowledges.

`due` is pure (the clock is a parameter): an open alert escalates once it has gone unacknowledged
for its severity's timeout, then reminders repeat with exponential backoff up to a ceiling until
someone acknowledges or it resolves. `run_escalations` applies it to the open alerts and records
each escalation or reminder as an alert event, which the notifier then sends.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Callable, Mapping

import psycopg
import structlog
from psycopg.rows import dict_row

from alerts.lifecycle import SYSTEM_ACTOR, Event
from alerts.store import record_event

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class EscalationPolicy:
    """How long an alert may stay unacknowledged per severity, and how often it is reminded."""
    ack_timeout: Mapping[str, timedelta] = field(default_factory=lambda: {
        "warning": timedelta(hours=1), "critical": timedelta(minutes=15)})
    reminder_first: timedelta = timedelta(minutes=15)
    reminder_backoff: float = 2.0
    reminder_max: timedelta = timedelta(hours=4)


def policy_from_settings() -> EscalationPolicy:
    """The escalation policy configured by the `QUANTRAC_ESCALATION_*` settings."""
    from quantrac.settings import get_settings
    s = get_settings()
    return EscalationPolicy(
        ack_timeout={"warning": timedelta(seconds=s.escalation_warning_after_s),
                     "critical": timedelta(seconds=s.escalation_critical_after_s)},
        reminder_first=timedelta(seconds=s.reminder_first_s), reminder_backoff=s.reminder_backoff,
        reminder_max=timedelta(seconds=s.reminder_max_s))


def reminder_delay(policy: EscalationPolicy, reminders_sent: int) -> timedelta:
    """Wait before reminder number `reminders_sent + 1`: first × backoff^n, at most the ceiling."""
    seconds = policy.reminder_first.total_seconds() * policy.reminder_backoff ** min(reminders_sent, 64)
    return min(timedelta(seconds=seconds), policy.reminder_max)


def due(*, status: str, severity: str, opened_at: datetime, escalated_at: datetime | None, reminders_sent: int,
        last_notified_at: datetime | None, policy: EscalationPolicy, now: datetime) -> str | None:
    """'escalated', 'reminded' or None for one alert at `now`."""
    if status != "open":
        return None
    if escalated_at is None:
        timeout = policy.ack_timeout.get(severity, policy.ack_timeout.get("critical", timedelta(minutes=15)))
        return "escalated" if now - opened_at >= timeout else None
    last = max(escalated_at, last_notified_at) if last_notified_at else escalated_at
    return "reminded" if now - last >= reminder_delay(policy, reminders_sent) else None


def run_escalations(conn: psycopg.Connection[Any], policy: EscalationPolicy, now: datetime) -> list[tuple[int, str]]:
    """Escalate or remind every due open alert; returns (alert id, kind) of each event recorded."""
    done: list[tuple[int, str]] = []
    with conn.transaction():
        with conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute("SELECT id, status, severity, opened_at, escalated_at, reminders_sent, last_notified_at, "
                               "last_value FROM alerts WHERE status = 'open' AND NOT historical FOR UPDATE SKIP LOCKED").fetchall()
            for r in rows:
                kind = due(status=r["status"], severity=r["severity"], opened_at=r["opened_at"],
                           escalated_at=r["escalated_at"], reminders_sent=r["reminders_sent"],
                           last_notified_at=r["last_notified_at"], policy=policy, now=now)
                if kind is None:
                    continue
                if kind == "escalated":
                    cur.execute("UPDATE alerts SET escalated_at = %s, last_notified_at = %s WHERE id = %s", (now, now, r["id"]))
                    note = "not acknowledged in time: escalated"
                else:
                    cur.execute("UPDATE alerts SET reminders_sent = reminders_sent + 1, last_notified_at = %s WHERE id = %s",
                                (now, r["id"]))
                    note = f"reminder {r['reminders_sent'] + 1}: still not acknowledged"
                record_event(conn, r["id"], Event(kind, SYSTEM_ACTOR, "open", now, r["last_value"], note))
                log.info("alerts.escalation", alert_id=r["id"], kind=kind)
                done.append((r["id"], kind))
    return done
