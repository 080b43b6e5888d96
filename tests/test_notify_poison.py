"""The notifier passes an alert event, or an alert escalation, it keeps failing on: three tries, then a quarantine row, then the rest."""

from __future__ import annotations

from datetime import datetime, timedelta

import psycopg
import pytest

from alerts import escalation, notifier
from alerts.escalation import EscalationPolicy
from alerts.notify.message import Notification
from quantrac.failures import Attempts
from quantrac.settings import Settings
from tests.alerts_support.helpers import apply, condition, new_station

pytestmark = pytest.mark.integration


def test_an_event_the_notifier_fails_on_is_quarantined_and_the_next_ones_are_sent(stack: Settings, db: psycopg.Connection) -> None:
    station = new_station(db)
    notifier.read_cursor(db)
    while notifier.poll_once(db, []):  # start after every event so far
        pass
    [poison] = apply(stack.pg_dsn, [condition(station.id, 150.0)])
    [after] = apply(stack.pg_dsn, [condition(station.id, 7.0, parameter="pH", limit=5.0)])
    sent: list[int] = []

    def wants(n: Notification) -> bool:
        if n.alert["id"] == poison["id"]:  # a bug of ours on this one event's content
            raise KeyError("zone")
        return True

    channel = notifier.Channel("test", lambda n: (sent.append(n.alert["id"]) or True, "ok"), wants)
    attempts = Attempts()
    for _ in range(2):  # the first tries fail and hold the cursor: nothing behind the event goes out yet
        with pytest.raises(KeyError):
            notifier.poll_once(db, [channel], attempts=attempts)
        assert sent == []
    assert notifier.poll_once(db, [channel], attempts=attempts) == 2  # third try: set aside, and the next event sent
    assert sent == [after["id"]]
    row = db.execute("SELECT reason, stage, station_id, message, payload_size, payload_sha256, kafka_topic FROM deadletters "
                     "WHERE stage = 'notifier' AND station_id = %s", (station.id,)).fetchone()
    assert row is not None
    reason, stage, station_id, message, size, sha, kafka_topic = row
    assert (reason, stage, station_id, kafka_topic) == ("quarantined", "notifier", station.id, None)
    assert "KeyError" in message and size > 0 and len(sha) == 64


def test_an_alert_escalation_fails_on_is_set_aside_and_the_others_escalate(stack: Settings, db: psycopg.Connection) -> None:
    station = new_station(db)
    [poison] = apply(stack.pg_dsn, [condition(station.id, 150.0)])
    [other] = apply(stack.pg_dsn, [condition(station.id, 7.0, parameter="pH", limit=5.0)])
    mine = {poison["id"], other["id"]}
    policy = EscalationPolicy(ack_timeout={"critical": timedelta(minutes=15)}, reminder_first=timedelta(minutes=10),
                              reminder_backoff=2.0, reminder_max=timedelta(hours=1))
    opened = db.execute("SELECT max(opened_at) FROM alerts WHERE id = ANY(%s)", (list(mine),)).fetchone()[0]

    def record(conn: psycopg.Connection, alert: dict, kind: str, now: datetime) -> None:
        if alert["id"] == poison["id"]:  # a bug of ours on this one alert's content
            raise KeyError("severity")
        escalation.record_escalation(conn, alert, kind, now)

    attempts = Attempts()

    def tick(minutes: float) -> list[tuple[int, str]]:
        done = escalation.run_escalations(db, policy, opened + timedelta(minutes=minutes), attempts, record)
        return sorted(d for d in done if d[0] in mine)

    assert tick(15) == [(other["id"], "escalated")]  # the failing alert does not hold the other back
    assert attempts.count(poison["id"]) == 1
    tick(16)
    assert tick(17) == []  # third failure: set aside
    assert attempts.count(poison["id"]) == attempts.most
    assert tick(60) == [(other["id"], "reminded")]  # and no longer tried
    assert attempts.count(poison["id"]) == attempts.most
    rows = db.execute("SELECT reason, topic, message FROM deadletters WHERE stage = 'escalation' AND station_id = %s",
                      (station.id,)).fetchall()
    assert rows == [("quarantined", f"alerts:{poison['id']}", rows[0][2])] and "KeyError" in rows[0][2]
    kinds = [r[0] for r in db.execute("SELECT kind FROM alert_events WHERE alert_id = %s ORDER BY id", (poison["id"],))]
    assert kinds == ["opened"]
