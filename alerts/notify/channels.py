"""MQTT, Kafka and SMTP channels: each sends one notification and reports (ok, detail)."""

from __future__ import annotations

import smtplib
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any

import paho.mqtt.publish as mqtt_publish

from alerts.notify.message import Notification

if TYPE_CHECKING:
    from paho.mqtt.publish import AuthParameter


def mqtt_topic(template: str, zone: str | None) -> str:
    """The zone as one topic level: MQTT wildcards and separators in its name become '_'."""
    level = (zone or "unknown").translate(str.maketrans("/+#", "___"))
    return template.format(zone=level)


def send_mqtt(n: Notification, *, host: str, port: int, template: str, auth: AuthParameter | None) -> tuple[bool, str]:
    """Publish the notification on the zone's MQTT topic (QoS 1); returns (delivered, detail)."""
    topic = mqtt_topic(template, n.alert.get("zone"))
    mqtt_publish.single(topic, n.body(), qos=1, hostname=host, port=port, auth=auth,
                        client_id="", keepalive=10)
    return True, f"published to {topic}"


def send_email(n: Notification, *, host: str, port: int, sender: str, recipients: list[str], starttls: bool,
               username: str | None, password: str | None, timeout_s: float = 10.0) -> tuple[bool, str]:
    """Mail the notification through SMTP; returns (delivered, detail) and never raises on a refusal."""
    msg = EmailMessage()
    msg["Subject"] = n.subject()
    msg["From"] = sender
    msg["To"] = ", ".join(recipients)
    a = n.alert
    msg.set_content(f"{a['message']}\n\nevent: {n.kind} by {n.actor} at {n.at}\nnote: {n.note or '-'}\n"
                    f"status: {a['status']}, count {a['count']}, last {a['last_value']}, peak {a['peak_value']}, "
                    f"limit {a['limit_value']} ({a['limit_source']})\nalert id: {a['id']}\n")
    with smtplib.SMTP(host, port, timeout=timeout_s) as smtp:
        if starttls:
            smtp.starttls()
        if username:
            smtp.login(username, password or "")
        refused = smtp.send_message(msg)
    return not refused, f"sent to {len(recipients) - len(refused)} of {len(recipients)} recipients"


class KafkaChannel:
    """Publishes transitions the worker does not publish itself (people's actions, escalations) to `quantrac.alerts`."""

    def __init__(self, bootstrap: str, topic: str, timeout_s: float = 10.0) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.timeout_s = timeout_s
        self.producer: Any = None

    def _producer(self) -> Any:
        """Connected on first use, so Kafka being down fails only this channel, not the notifier's start."""
        if self.producer is None:
            from kafka import KafkaProducer
            self.producer = KafkaProducer(bootstrap_servers=self.bootstrap.split(","), acks="all", linger_ms=5,
                                          max_block_ms=int(self.timeout_s * 1000))
        return self.producer

    def __call__(self, n: Notification) -> tuple[bool, str]:
        """Publish the alert and this transition, keyed by station; raises if Kafka does not confirm within `timeout_s`."""
        import orjson
        producer = self._producer()
        body = orjson.loads(n.body())
        record = {**body["alert"], "transition": n.kind, "actor": n.actor, "event_id": n.event_id, "note": n.note}
        producer.send(self.topic, key=str(n.alert["station_id"]).encode(), value=orjson.dumps(record)).get(timeout=self.timeout_s)
        return True, f"published to {self.topic}"

    def close(self) -> None:
        """Close the producer, waiting up to 5 s for records still in flight; nothing to do if it never connected."""
        if self.producer is not None:
            self.producer.close(timeout=5)
