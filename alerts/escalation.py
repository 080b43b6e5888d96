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

import orjson
import psycopg
import structlog
from psycopg.rows import dict_row

from alerts.alerts_table import record_event
from alerts.lifecycle import SYSTEM_ACTOR, Event
from quantrac import metrics
from quantrac.deadletter_rows import insert_quarantine
from quantrac.failures import Attempts, RateLimitedLog, describe, is_record_failure
from quantrac.safe_text import safe_text

log = structlog.get_logger(__name__)
_log = RateLimitedLog(log)


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


def record_escalation(conn: psycopg.Connection[Any], alert: dict[str, Any], kind: str, now: datetime) -> None:
    """Mark one alert escalated or reminded and add the event the notifier will send."""
    if kind == "escalated":
        conn.execute("UPDATE alerts SET escalated_at = %s, last_notified_at = %s WHERE id = %s", (now, now, alert["id"]))
        note = "not acknowledged in time: escalated"
    else:
        conn.execute("UPDATE alerts SET reminders_sent = reminders_sent + 1, last_notified_at = %s WHERE id = %s",
                     (now, alert["id"]))
        note = f"reminder {alert['reminders_sent'] + 1}: still not acknowledged"
    record_event(conn, alert["id"], Event(kind, SYSTEM_ACTOR, "open", now, alert["last_value"], note))


Record = Callable[[psycopg.Connection[Any], dict[str, Any], str, datetime], None]


def run_escalations(conn: psycopg.Connection[Any], policy: EscalationPolicy, now: datetime, attempts: Attempts | None = None,
                    record: Record = record_escalation) -> list[tuple[int, str]]:
    """Escalate or remind every due open alert; returns (alert id, kind) of each event recorded.

    Each alert is recorded in its own savepoint, so one that fails for its content does not hold
    back the others; after `attempts.most` failed ticks it is set aside (a quarantine row, stage
    `escalation`) and no longer tried by this process. PostgreSQL being unavailable raises.
    """
    attempts = attempts if attempts is not None else Attempts()
    done: list[tuple[int, str]] = []
    with conn.transaction():
        with conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute("SELECT id, status, severity, opened_at, escalated_at, reminders_sent, last_notified_at, "
                               "last_value, station_id FROM alerts WHERE status = 'open' AND NOT historical "
                               "FOR UPDATE SKIP LOCKED").fetchall()
        for r in rows:
            kind = due(status=r["status"], severity=r["severity"], opened_at=r["opened_at"],
                       escalated_at=r["escalated_at"], reminders_sent=r["reminders_sent"],
                       last_notified_at=r["last_notified_at"], policy=policy, now=now)
            if kind is None or attempts.count(r["id"]) >= attempts.most:
                continue
            try:
                with conn.transaction():
                    record(conn, r, kind, now)
            except Exception as exc:
                if not is_record_failure(exc):
                    raise
                _failed(conn, r, kind, exc, attempts)
                continue
            attempts.forget(r["id"])
            log.info("alerts.escalation", alert_id=r["id"], kind=kind)
            done.append((r["id"], kind))
    return done


def _failed(conn: psycopg.Connection[Any], alert: dict[str, Any], kind: str, exc: BaseException, attempts: Attempts) -> None:
    if not attempts.failed(alert["id"]):
        _log("warning", "alerts.escalation_failed", key=alert["id"], alert_id=alert["id"], kind=kind,
             error=safe_text(describe(exc), 300), tries=attempts.count(alert["id"]))
        return
    log.error("alerts.escalation_set_aside", alert_id=alert["id"], station=alert["station_id"], kind=kind,
              error=safe_text(describe(exc), 300),
              fix="the alert stays open in the dashboard; GET /api/v1/deadletters?stage=escalation shows why")
    metrics.QUARANTINED.labels("escalation").inc()
    raw = orjson.dumps({"alert_id": alert["id"], "kind": kind, "alert": alert}, default=str)
    insert_quarantine(conn, stage="escalation", raw=raw, error=describe(exc), topic=f"alerts:{alert['id']}",
                      station_id=alert["station_id"])
