"""The notifier on real services: webhook, MQTT and SMTP deliveries, the delivery log, silences,
inhibition of an offline station's alerts, escalation and reminders on an injected clock."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

import orjson
import paho.mqtt.client as mqtt
import psycopg
import pytest
from pydantic import SecretStr

from alerts import alerts_table, notifier, silences
from alerts.escalation import EscalationPolicy, run_escalations
from alerts.notify import webhook
from alerts.notify.channels import mqtt_topic
from ingest.producer import CONSUMER_OPTIONS
from quantrac.mqtt_accounts import tester_credential as mqtt_tester  # not `test*`: pytest would collect it as a test
from quantrac.settings import Settings
from tests.alerts_support.helpers import apply, condition, new_station
from tests.alerts_support.receivers import http_receiver, smtp_receiver
from tests.utils.poll import wait_for

pytestmark = pytest.mark.integration
SECRET = "hook-secret"


def deliveries(conn: psycopg.Connection, alert_id: int) -> list[tuple[str, str, str]]:
    return [tuple(r) for r in conn.execute("SELECT e.kind, d.channel, d.outcome FROM notification_deliveries d "
                                           "JOIN alert_events e ON e.id = d.event_id WHERE d.alert_id = %s ORDER BY d.id",
                                           (alert_id,))]


def drain(conn: psycopg.Connection, chans: list[notifier.Channel]) -> None:
    while notifier.poll_once(conn, chans):
        pass


@pytest.fixture()
def hook(stack: Settings) -> Iterator[tuple[Settings, Any]]:
    with http_receiver() as (url, got):
        yield stack.model_copy(update={"notify_webhook_url": url, "notify_webhook_secret": SecretStr(SECRET),
                                       "notify_webhook_backoff_s": 0.01, "notify_mqtt_enabled": False}), got


def test_webhook_mqtt_and_email_with_delivery_log(stack: Settings, db: psycopg.Connection) -> None:
    zone = "KCN Notify/Test"
    station = new_station(db, zone=zone)
    notifier.read_cursor(db)
    drain(db, [])
    received: list[mqtt.MQTTMessage] = []
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    tester = mqtt_tester(stack)  # no anonymous access; the test account may read the alert topics
    if tester is not None:
        sub.username_pw_set(tester.username, tester.password)
    sub.on_message = lambda c, u, m: received.append(m)
    sub.connect(stack.mqtt_host, stack.mqtt_port)
    sub.subscribe(mqtt_topic(stack.notify_mqtt_topic, zone), qos=1)
    sub.loop_start()
    try:
        with http_receiver(fail_first=1) as (url, got), smtp_receiver() as (smtp_port, mails):
            settings = stack.model_copy(update={
                "notify_webhook_url": url, "notify_webhook_secret": SecretStr(SECRET), "notify_webhook_backoff_s": 0.01,
                "smtp_host": "127.0.0.1", "smtp_port": smtp_port, "smtp_to": "duty@example.vn, chief@example.vn"})
            chans = notifier.build_channels(settings, lambda: db, kafka=False)
            [alert] = apply(stack.pg_dsn, [condition(station.id, 150.0)])
            apply(stack.pg_dsn, [condition(station.id, 160.0, minutes=5)])  # a repeat: recorded, not notified
            drain(db, chans)
            assert len(got.requests) == 2
            headers, body = got.requests[-1]
            assert webhook.verify(SECRET.encode(), headers[webhook.TIMESTAMP_HEADER], body, headers[webhook.SIGNATURE_HEADER])
            sent = orjson.loads(body)
            assert (sent["event"]["kind"], sent["alert"]["id"], sent["alert"]["zone"]) == ("opened", alert["id"], zone)
            [mail] = mails
            assert mail.rcpt_tos == ["duty@example.vn", "chief@example.vn"] and station.id.encode() in mail.content
            wait_for(lambda: received, timeout=10, what="the alert notification over MQTT")
            assert received[0].topic == "quantrac/v1/alerts/KCN Notify_Test"
            assert orjson.loads(received[0].payload)["alert"]["station_id"] == station.id
    finally:
        sub.loop_stop()
        sub.disconnect()
    assert deliveries(db, alert["id"]) == [("opened", "webhook", "failed"), ("opened", "webhook", "delivered"),
                                           ("opened", "mqtt", "delivered"), ("opened", "email", "delivered")]


def test_silenced_alert_is_recorded_not_notified(stack: Settings, db: psycopg.Connection, hook: tuple[Settings, Any]) -> None:
    settings, got = hook
    station = new_station(db)
    now = datetime.now(timezone.utc)
    silences.create(db, station_id=station.id, parameter="COD", starts_at=now - timedelta(minutes=1),
                    ends_at=now + timedelta(hours=1), reason="calibration", note=None, actor="tests")
    drain(db, [])
    chans = notifier.build_channels(settings, lambda: db, kafka=False)
    [cod] = apply(stack.pg_dsn, [condition(station.id, 150.0)])
    [ph] = apply(stack.pg_dsn, [condition(station.id, 3.0, parameter="pH", rule="below_minimum", limit=5.5)])
    drain(db, chans)
    assert db.execute("SELECT status FROM alerts WHERE id = %s", (cod["id"],)).fetchone() == ("open",)
    assert deliveries(db, cod["id"]) == [("opened", "webhook", "suppressed")]
    assert "silenced by silence" in db.execute("SELECT detail FROM notification_deliveries WHERE alert_id = %s",
                                               (cod["id"],)).fetchone()[0]
    assert deliveries(db, ph["id"]) == [("opened", "webhook", "delivered")]
    assert [orjson.loads(b)["alert"]["id"] for _, b in got.requests] == [ph["id"]]


def test_offline_station_inhibits_its_parameter_alerts(stack: Settings, db: psycopg.Connection,
                                                       hook: tuple[Settings, Any]) -> None:
    settings, got = hook
    station = new_station(db)
    drain(db, [])
    chans = notifier.build_channels(settings, lambda: db, kafka=False)
    [offline] = apply(stack.pg_dsn, [condition(station.id, 900.0, parameter="*", rule="station_offline", limit=600.0)])
    [cod] = apply(stack.pg_dsn, [condition(station.id, 150.0)])
    drain(db, chans)
    assert deliveries(db, offline["id"]) == [("opened", "webhook", "delivered")]
    assert deliveries(db, cod["id"]) == [("opened", "webhook", "suppressed")]
    alerts_table.resolve(db, offline["id"], "tests", "back online")
    [tss] = apply(stack.pg_dsn, [condition(station.id, 150.0, parameter="TSS")])
    drain(db, chans)
    assert deliveries(db, tss["id"]) == [("opened", "webhook", "delivered")]


def test_held_back_alerts_are_notified_once_when_the_station_is_back(stack: Settings, db: psycopg.Connection,
                                                                     hook: tuple[Settings, Any]) -> None:
    settings, got = hook
    station = new_station(db)
    drain(db, [])
    chans = notifier.build_channels(settings, lambda: db, kafka=False)
    [offline] = apply(stack.pg_dsn, [condition(station.id, 900.0, parameter="*", rule="station_offline", limit=600.0)])
    [cod] = apply(stack.pg_dsn, [condition(station.id, 150.0)])
    [tss] = apply(stack.pg_dsn, [condition(station.id, 150.0, parameter="TSS")])
    [nh4] = apply(stack.pg_dsn, [condition(station.id, 150.0, parameter="NH4")])
    alerts_table.acknowledge(db, tss["id"], "tests", "seen on the dashboard")  # someone saw it: no late notification
    alerts_table.resolve(db, nh4["id"], "tests", "sensor cleaned")  # over: no late notification
    drain(db, chans)
    assert [deliveries(db, a["id"]) for a in (cod, tss)] == [[("opened", "webhook", "suppressed")]] * 2
    nh4_log = [("opened", "webhook", "suppressed"), ("resolved", "webhook", "suppressed")]
    assert deliveries(db, nh4["id"]) == nh4_log
    assert [orjson.loads(b)["alert"]["id"] for _, b in got.requests] == [offline["id"]]

    alerts_table.resolve(db, offline["id"], "tests", "back online")
    drain(db, chans)
    assert deliveries(db, cod["id"]) == [("opened", "webhook", "suppressed"), ("opened", "webhook", "delivered")]
    assert deliveries(db, tss["id"]) == [("opened", "webhook", "suppressed")] and deliveries(db, nh4["id"]) == nh4_log
    late = [orjson.loads(b) for _, b in got.requests if orjson.loads(b)["alert"]["id"] == cod["id"]]
    assert len(late) == 1 and late[0]["event"]["kind"] == "opened" and late[0]["alert"]["status"] == "open"
    assert f"held back while station {station.id} was offline" in late[0]["event"]["note"]

    # Offline and back again: the alert already went out, nothing is sent twice.
    [again] = apply(stack.pg_dsn, [condition(station.id, 900.0, parameter="*", rule="station_offline", limit=600.0,
                                             minutes=30)])
    drain(db, chans)
    alerts_table.resolve(db, again["id"], "tests", "back online")
    drain(db, chans)
    assert len(deliveries(db, cod["id"])) == 2
    assert sum(orjson.loads(b)["alert"]["id"] == cod["id"] for _, b in got.requests) == 1


def test_escalation_and_reminders_on_an_injected_clock(stack: Settings, db: psycopg.Connection) -> None:
    station = new_station(db)
    policy = EscalationPolicy(ack_timeout={"warning": timedelta(hours=1), "critical": timedelta(minutes=15)},
                              reminder_first=timedelta(minutes=10), reminder_backoff=2.0, reminder_max=timedelta(hours=1))
    with http_receiver() as (main_url, main), http_receiver() as (esc_url, esc):
        settings = stack.model_copy(update={"notify_webhook_url": main_url, "notify_escalation_webhook_url": esc_url,
                                            "notify_mqtt_enabled": False})
        # Escalation looks at every open alert: settle those earlier tests left so only this one is due.
        db.execute("UPDATE alerts SET status = 'resolved', resolved_at = now(), resolved_by = 'tests' WHERE status = 'open'")
        drain(db, [])
        chans = notifier.build_channels(settings, lambda: db, kafka=False)
        [alert] = apply(stack.pg_dsn, [condition(station.id, 150.0)])
        t0 = db.execute("SELECT opened_at FROM alerts WHERE id = %s", (alert["id"],)).fetchone()[0]

        def tick(minutes: float) -> list[str]:
            return [kind for alert_id, kind in run_escalations(db, policy, t0 + timedelta(minutes=minutes))
                    if alert_id == alert["id"]]

        assert tick(14) == []
        assert tick(15) == ["escalated"]
        assert tick(24) == []
        assert tick(25) == ["reminded"]
        assert tick(44) == []
        assert tick(45) == ["reminded"]
        drain(db, chans)
        assert [orjson.loads(b)["event"]["kind"] for _, b in esc.requests
                if orjson.loads(b)["alert"]["id"] == alert["id"]] == ["escalated", "reminded", "reminded"]
        assert [orjson.loads(b)["event"]["kind"] for _, b in main.requests
                if orjson.loads(b)["alert"]["id"] == alert["id"]] == ["opened"]
        alerts_table.acknowledge(db, alert["id"], "ana (operator)", None)
        assert tick(500) == []
    kinds = [r[0] for r in db.execute("SELECT kind FROM alert_events WHERE alert_id = %s ORDER BY id", (alert["id"],))]
    assert kinds == ["opened", "escalated", "reminded", "reminded", "acknowledged"]


def test_a_failing_channel_is_logged_and_does_not_stop_the_others(stack: Settings, db: psycopg.Connection) -> None:
    station = new_station(db)
    with http_receiver(fail_first=1000) as (url, got), smtp_receiver() as (smtp_port, mails):
        settings = stack.model_copy(update={"notify_webhook_url": url, "notify_webhook_attempts": 3,
                                            "notify_webhook_backoff_s": 0.01, "notify_mqtt_enabled": False,
                                            "smtp_host": "127.0.0.1", "smtp_port": smtp_port, "smtp_to": "duty@example.vn"})
        drain(db, [])
        chans = notifier.build_channels(settings, lambda: db, kafka=False)
        [alert] = apply(stack.pg_dsn, [condition(station.id, 150.0)])
        drain(db, chans)
        assert len(mails) == 1 and len(got.requests) == 3
    assert deliveries(db, alert["id"]) == [("opened", "webhook", "failed")] * 4 + [("opened", "email", "delivered")]


def test_notifier_process_delivers_people_actions_and_new_alerts(stack: Settings, db: psycopg.Connection) -> None:
    from tests.utils.processes import NAMESPACE, Process
    station = new_station(db)
    notifier.read_cursor(db)
    with http_receiver() as (url, got):
        proc = Process("notifier", ["notifier"], stack.run_dir / "test-logs" / NAMESPACE,
                       env={"QUANTRAC_NOTIFY_WEBHOOK_URL": url, "QUANTRAC_NOTIFIER_POLL_S": "0.2",
                            "QUANTRAC_NOTIFY_MQTT_ENABLED": "false", "QUANTRAC_NOTIFY_WEBHOOK_SECRET": SECRET})
        try:
            [alert] = apply(stack.pg_dsn, [condition(station.id, 150.0)])

            def delivered() -> bool:
                assert proc.alive(), proc.tail()
                return any(orjson.loads(b)["alert"]["id"] == alert["id"] for _, b in got.requests)
            wait_for(delivered, timeout=30, what="the notifier process to deliver the new alert")
            headers, body = next((h, b) for h, b in got.requests if orjson.loads(b)["alert"]["id"] == alert["id"])
            assert webhook.verify(SECRET.encode(), headers[webhook.TIMESTAMP_HEADER], body, headers[webhook.SIGNATURE_HEADER])
        finally:
            assert proc.stop() in (0, -15), proc.tail()


def test_people_actions_and_escalations_go_to_the_kafka_alerts_topic(stack: Settings, db: psycopg.Connection) -> None:
    from kafka import KafkaConsumer

    from alerts.notify.channels import KafkaChannel
    station = new_station(db)
    drain(db, [])
    channel = KafkaChannel(stack.kafka_bootstrap, stack.alerts_topic)
    chans = [notifier.Channel("kafka", channel, lambda n: n.actor != "system" or n.escalation, subject_to_silence=False)]
    consumer = KafkaConsumer(stack.alerts_topic, bootstrap_servers=stack.kafka_bootstrap.split(","), **CONSUMER_OPTIONS,
                             auto_offset_reset="latest", consumer_timeout_ms=500, group_id=None)
    try:
        wait_for(lambda: consumer.poll(timeout_ms=200) is not None and consumer.assignment(), timeout=20,
                 what="the Kafka consumer to be assigned")
        [alert] = apply(stack.pg_dsn, [condition(station.id, 150.0)])
        alerts_table.acknowledge(db, alert["id"], "ana (operator)", "on it")
        drain(db, chans)
        seen: list[dict[str, Any]] = []

        def got_ack() -> bool:
            for records in consumer.poll(timeout_ms=500).values():
                seen.extend(orjson.loads(r.value) for r in records)
            return any(r["id"] == alert["id"] for r in seen)
        wait_for(got_ack, timeout=20, what="the acknowledgement on the alerts topic")
    finally:
        consumer.close()
        channel.close()
    mine = [r for r in seen if r["id"] == alert["id"]]
    assert [(r["transition"], r["actor"], r["status"]) for r in mine] == [("acknowledged", "ana (operator)", "acknowledged")]
    assert deliveries(db, alert["id"]) == [("acknowledged", "kafka", "delivered")]
