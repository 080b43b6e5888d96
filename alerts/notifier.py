"""The notifier process: sends alert events to the notification channels, runs escalations on a timer.

It reads `alert_events` (the outbox the worker and the API write in their own transactions) from
its cursor onwards, so a slow or failing channel delays only notifications, never the pipeline.
Silenced and inhibited alerts are recorded in the delivery log as suppressed, not sent.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable

import orjson
import psycopg
import structlog
from psycopg.rows import dict_row

from alerts import escalation, inhibition, silences
from alerts.lifecycle import SYSTEM_ACTOR
from alerts.notify import channels, webhook
from alerts.notify.message import Notification
from quantrac import metrics
from quantrac.clock import utc_now
from quantrac.deadletter_rows import insert_quarantine
from quantrac.failures import Attempts, RateLimitedLog, describe, is_record_failure
from quantrac.safe_text import safe_text
from quantrac.settings import Settings

log = structlog.get_logger(__name__)
_log = RateLimitedLog(log)

NOTIFY_KINDS = frozenset({"opened", "resolved", "escalated", "reminded"})
"""Event kinds people are told about; repeats, clearing holds, acknowledgements and comments are only recorded."""
CURSOR = "notifier"

Send = Callable[[Notification], tuple[bool, str]]


@dataclass(frozen=True)
class Channel:
    """A named notification route: how to send, and which notifications it wants."""
    name: str
    send: Send
    wants: Callable[[Notification], bool]
    subject_to_silence: bool = True


def suppression(conn: psycopg.Connection[Any], n: Notification) -> str | None:
    """Why this notification must not go out (a silence, an offline station), or None."""
    a = n.alert
    if a.get("historical"):
        return "historical: raised on imported readings, never notified"
    found = silences.first_match(silences.for_station(conn, a["station_id"]), a["station_id"], a["parameter"], n.at)
    if found is not None:
        return f"silenced by silence {found.id} ({found.reason}) until {found.ends_at.isoformat()}"
    if a["rule"] != inhibition.OFFLINE_RULE:
        offline = inhibition.offline_alert(conn, a["station_id"])
        if inhibition.inhibited(a["rule"], offline is not None):
            return f"{inhibition.HELD_BACK}: station {a['station_id']} is offline (alert {offline})"
    return None


def _log_delivery(conn: psycopg.Connection[Any], n: Notification, channel: str, attempt: int, outcome: str, detail: str) -> None:
    conn.execute("INSERT INTO notification_deliveries (alert_id, event_id, channel, attempt, outcome, detail) "
                 "VALUES (%s, %s, %s, %s, %s, %s)", (n.alert["id"], n.event_id, channel, attempt, outcome, safe_text(detail)))


def webhook_channel(name: str, url: str, settings: Settings, conn_for_log: Callable[[], psycopg.Connection[Any]]) -> Send:
    """A sender that posts notifications to `url`, signed when a webhook secret is set, logging each delivery."""
    secret = settings.notify_webhook_secret.get_secret_value().encode() if settings.notify_webhook_secret else None

    def send(n: Notification) -> tuple[bool, str]:
        def on_attempt(number: int, ok: bool, detail: str) -> None:
            if not ok:
                _log_delivery(conn_for_log(), n, name, number, "failed", detail)
                log.warning("notify.webhook_attempt_failed", alert_id=n.alert["id"], station=n.alert["station_id"],
                            parameter=n.alert["parameter"], attempt=number, detail=detail, url=url)
        return webhook.deliver(url, n.body(), secret=secret, attempts=settings.notify_webhook_attempts,
                               backoff_s=settings.notify_webhook_backoff_s, timeout_s=settings.notify_webhook_timeout_s,
                               on_attempt=on_attempt)
    return send


def build_channels(settings: Settings, conn_for_log: Callable[[], psycopg.Connection[Any]], *, kafka: bool = True) -> list[Channel]:
    """The channels the settings configure."""
    found: list[Channel] = []
    if settings.notify_webhook_url:
        escalation_url = settings.notify_escalation_webhook_url
        found.append(Channel("webhook", webhook_channel("webhook", settings.notify_webhook_url, settings, conn_for_log),
                             lambda n: n.kind in NOTIFY_KINDS and not (n.escalation and escalation_url)))
    if settings.notify_escalation_webhook_url:
        found.append(Channel("webhook-escalation",
                             webhook_channel("webhook-escalation", settings.notify_escalation_webhook_url, settings, conn_for_log),
                             lambda n: n.escalation))
    if settings.notify_mqtt_enabled:
        from quantrac.mqtt_accounts import notifier_auth

        auth = notifier_auth(settings)  # its own account: may write the alert topics only
        found.append(Channel("mqtt", lambda n: channels.send_mqtt(n, host=settings.mqtt_host, port=settings.mqtt_port,
                                                                   template=settings.notify_mqtt_topic, auth=auth),
                             lambda n: n.kind in NOTIFY_KINDS))
    recipients = [r.strip() for r in settings.smtp_to.split(",") if r.strip()]
    if settings.smtp_host and recipients:
        password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
        found.append(Channel("email", lambda n: channels.send_email(
            n, host=settings.smtp_host, port=settings.smtp_port, sender=settings.smtp_from,  # type: ignore[arg-type]  # smtp_host is checked non-empty by the `if` above; mypy does not carry that narrowing into the lambda
            recipients=recipients, starttls=settings.smtp_starttls, username=settings.smtp_username, password=password),
            lambda n: n.kind in NOTIFY_KINDS))
    if kafka:
        producer = channels.KafkaChannel(settings.kafka_bootstrap, settings.alerts_topic)
        found.append(Channel("kafka", producer, lambda n: n.actor != SYSTEM_ACTOR or n.escalation,
                             subject_to_silence=False))
    return found


def dispatch(conn: psycopg.Connection[Any], n: Notification, chans: list[Channel]) -> None:
    """Send one notification on every channel that wants it, logging each outcome; never raises for a channel."""
    wanted = [c for c in chans if c.wants(n)]
    if not wanted:
        return
    reason = suppression(conn, n) if any(c.subject_to_silence for c in wanted) else None
    for c in wanted:
        if reason is not None and c.subject_to_silence:
            _log_delivery(conn, n, c.name, 0, "suppressed", reason)
            continue
        try:
            ok, detail = c.send(n)
        except Exception as exc:
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        _log_delivery(conn, n, c.name, 1 if c.name not in ("webhook", "webhook-escalation") else 0,
                      "delivered" if ok else "failed", detail)
        if not ok:
            log.error("notify.failed", channel=c.name, alert_id=n.alert["id"], station=n.alert["station_id"],
                      parameter=n.alert["parameter"], detail=detail,
                      fix=f"check the {c.name} settings (quantrac settings) and that the receiver is up")


def read_cursor(conn: psycopg.Connection[Any]) -> int:
    """The last event handled; on the first start, the newest event (history is not re-sent)."""
    row = conn.execute("SELECT event_id FROM notifier_cursor WHERE name = %s", (CURSOR,)).fetchone()
    if row is not None:
        return int(row[0])
    newest = conn.execute("SELECT coalesce(max(id), 0) FROM alert_events").fetchone()
    start = int(newest[0]) if newest else 0
    conn.execute("INSERT INTO notifier_cursor (name, event_id) VALUES (%s, %s) ON CONFLICT (name) DO NOTHING", (CURSOR, start))
    return start


_ATTEMPTS = Attempts()
"""Failed tries per alert event, across polls."""


def poll_once(conn: psycopg.Connection[Any], chans: list[Channel], batch: int = 100, attempts: Attempts = _ATTEMPTS) -> int:
    """Handle the events after the cursor; returns how many.

    An event the notifier fails on for its content (a bug of ours on it, a text PostgreSQL
    refuses) is tried `attempts.most` times over as many polls, then quarantined (a `deadletters`
    row, stage `notifier`) and passed, so the events behind it still go out. PostgreSQL being
    unavailable raises, and the cursor stays.
    """
    cursor = read_cursor(conn)
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute("SELECT e.id AS event_id, e.kind, e.actor, e.at, e.note, a.* FROM alert_events e "
                           "JOIN alerts a ON a.id = e.alert_id WHERE e.id > %s ORDER BY e.id LIMIT %s",
                           (cursor, batch)).fetchall()
    for r in rows:
        n = _notification(r)
        try:
            dispatch(conn, n, chans)
            if n.kind == "resolved" and n.alert["rule"] == inhibition.OFFLINE_RULE:
                release_held_back(conn, n.alert["station_id"], chans)
        except Exception as exc:
            if not is_record_failure(exc) or not attempts.failed(n.event_id):
                raise
            _quarantine(conn, n, exc)
        attempts.forget(n.event_id)
        conn.execute("UPDATE notifier_cursor SET event_id = %s WHERE name = %s", (n.event_id, CURSOR))
    return len(rows)


def _quarantine(conn: psycopg.Connection[Any], n: Notification, exc: BaseException) -> None:
    metrics.QUARANTINED.labels("notifier").inc()
    log.error("notifier.event_quarantined", event_id=n.event_id, alert_id=n.alert.get("id"),
              station=safe_text(str(n.alert.get("station_id")), 200), error=safe_text(describe(exc), 300),
              fix="GET /api/v1/deadletters?stage=notifier shows it; the alert itself is unchanged in the dashboard")
    raw = orjson.dumps({"event_id": n.event_id, "kind": n.kind, "alert": n.alert}, default=str)
    insert_quarantine(conn, stage="notifier", raw=raw, error=describe(exc), topic=f"alert_events:{n.event_id}",
                      station_id=n.alert.get("station_id"))


def _notification(row: dict[str, Any]) -> Notification:
    """An event row joined with its alert (`a.*`) as a notification."""
    return Notification(row.pop("event_id"), row.pop("kind"), row.pop("actor"), row.pop("at"), row.pop("note"), row)


def release_held_back(conn: psycopg.Connection[Any], station_id: str, chans: list[Channel]) -> int:
    """The station is back: notify, once, its alerts held back while it was offline that are still open
    and unacknowledged (their `opened` event, with a note saying why it comes late). Returns how many."""
    rows = inhibition.held_back(conn, station_id)
    for r in rows:
        n = _notification(r)
        note = f"held back while station {station_id} was offline; sent on its recovery"
        dispatch(conn, Notification(n.event_id, n.kind, n.actor, n.at, note, n.alert), chans)
    if rows:
        log.info("notify.released_held_back", station=station_id, alerts=[r["id"] for r in rows])
    return len(rows)



@dataclass
class _Session:
    """The notifier's database connection and channels, made when first needed and remade after a loss."""

    settings: Settings
    conn: psycopg.Connection[Any] | None = None
    chans: list[Channel] | None = None
    escalation_attempts: Attempts = field(default_factory=Attempts)

    def connection(self) -> psycopg.Connection[Any]:
        if self.conn is None or self.conn.closed:
            self.conn = psycopg.connect(self.settings.pg_dsn, autocommit=True)
        return self.conn

    def channels(self) -> list[Channel]:
        if self.chans is None:
            self.chans = build_channels(self.settings, self.connection)
            log.info("notifier.started", channels=[c.name for c in self.chans])
        return self.chans

    def drop_connection(self) -> None:
        self.conn = None

    def close(self) -> None:
        for c in self.chans or []:
            close = getattr(c.send, "close", None)
            if close:
                close()
        if self.conn is not None:
            self.conn.close()


def run(settings: Settings, stop: threading.Event, clock: Callable[[], datetime] = utc_now) -> None:
    """Poll events and tick escalations until `stop` is set; a lost database connection is retried."""
    policy = escalation.policy_from_settings()
    session = _Session(settings)
    next_tick = 0.0
    while not stop.is_set():
        try:
            handled = poll_once(session.connection(), session.channels())
            if time.monotonic() >= next_tick:
                escalation.run_escalations(session.connection(), policy, clock(), session.escalation_attempts)
                next_tick = time.monotonic() + settings.notifier_tick_s
            if handled:
                continue
        except psycopg.OperationalError as exc:
            _log("warning", "notifier.db_unavailable", key=type(exc).__name__, error=safe_text(str(exc), 300),
                 fix="check PostgreSQL (quantrac stack status)")
            session.drop_connection()
        except Exception as exc:  # an event failing is retried a bounded number of times (poll_once), then passed
            _log("exception", "notifier.error", key=type(exc).__name__, error=safe_text(describe(exc), 300))
        stop.wait(settings.notifier_poll_s)
    session.close()
