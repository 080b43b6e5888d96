"""The MQTT → Kafka bridge: nothing acknowledged to the broker before Kafka has it.

Threads:
- paho's network loop calls `_on_message`, which validates the message and queues the Kafka
  records it becomes, so the network loop never blocks (keep-alives keep flowing);
- the producer thread sends queued records with an idempotent `acks=all` producer; when every
  record of a message is confirmed, kafka-python's callback acknowledges the message to the
  broker (paho `manual_ack`). A failed send goes back on the queue; while Kafka is down the
  bridge simply stops acknowledging, and the broker keeps the messages in our persistent session.

So a reading is lost only if the broker loses it; a crash between the Kafka write and the
PUBACK redelivers it, and the store's primary key makes the duplicate harmless.
"""

from __future__ import annotations

import queue
import threading
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Callable, Mapping

import paho.mqtt.client as mqtt
import structlog
from kafka import KafkaProducer
from kafka.errors import KafkaError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ingest.payload import SUBSCRIPTION, Limits, MessageRejected, decode_message, now_utc, station_from_topic
from quantrac.domain import Station
from quantrac.registry import RegistryCache
from quantrac.settings import Settings
from quantrac.wire import encode_deadletter, encode_readings

log = structlog.get_logger(__name__)


@dataclass
class PendingMessage:
    """One MQTT message waiting for all of its Kafka records to be confirmed."""

    mid: int
    qos: int
    remaining: int
    lock: threading.Lock = field(default_factory=threading.Lock)

    def confirm_one(self) -> bool:
        """Count one confirmed record; True when it was the last."""
        with self.lock:
            self.remaining -= 1
            return self.remaining == 0


@dataclass(frozen=True)
class OutgoingRecord:
    topic: str
    key: bytes | None
    value: bytes
    message: PendingMessage


@dataclass
class DeliveryCounts:
    """Per-station accounting of what the bridge did with each message."""

    received: Counter[str] = field(default_factory=Counter)
    forwarded: Counter[str] = field(default_factory=Counter)
    deadlettered: defaultdict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    retried: int = 0

    def snapshot(self) -> dict[str, object]:
        return {"received": dict(self.received), "forwarded": dict(self.forwarded),
                "deadlettered": {k: dict(v) for k, v in self.deadlettered.items()}, "retried": self.retried}


class Bridge:
    """Owns the MQTT client, the Kafka producer and the queue between them."""

    def __init__(self, settings: Settings, load_stations: Callable[[], Mapping[str, Station]]) -> None:
        self.settings = settings
        self.stations: Mapping[str, Station] = RegistryCache(load_stations, settings.registry_refresh_s,
                                                           settings.registry_miss_reload_s)
        self.limits = Limits(settings.max_payload_bytes, timedelta(seconds=settings.max_future_s),
                             timedelta(days=settings.retention_days))
        self.counts = DeliveryCounts()
        self._outbox: queue.Queue[OutgoingRecord] = queue.Queue()
        self._stop = threading.Event()
        self.connected = threading.Event()
        self.producer = KafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap.split(","),
            acks="all", enable_idempotence=True, linger_ms=5, batch_size=256 * 1024,
            max_block_ms=10_000, client_id="quantrac-bridge",
        )
        self.client = self._make_client()

    def _make_client(self) -> mqtt.Client:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.settings.mqtt_bridge_client_id,
                             protocol=mqtt.MQTTv5, manual_ack=True)
        if self.settings.mqtt_username:
            password = self.settings.mqtt_password.get_secret_value() if self.settings.mqtt_password else None
            client.username_pw_set(self.settings.mqtt_username, password)
        client.max_inflight_messages_set(1000)
        client.reconnect_delay_set(min_delay=1, max_delay=10)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    # --- MQTT side (paho network thread) -------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, _userdata: object, flags: mqtt.ConnectFlags,
                    reason_code: mqtt.ReasonCode, _properties: Properties | None) -> None:
        if reason_code.is_failure:
            log.error("bridge.mqtt_refused", reason=str(reason_code),
                      fix="check QUANTRAC_MQTT_USERNAME/QUANTRAC_MQTT_PASSWORD and the broker's ACL")
            return
        client.subscribe(SUBSCRIPTION, qos=1)
        self.connected.set()
        log.info("bridge.mqtt_connected", session_present=flags.session_present, subscription=SUBSCRIPTION)

    def _on_disconnect(self, _client: mqtt.Client, _userdata: object, _flags: mqtt.DisconnectFlags,
                       reason_code: mqtt.ReasonCode, _properties: Properties | None) -> None:
        self.connected.clear()
        if not self._stop.is_set():
            log.warning("bridge.mqtt_disconnected", reason=str(reason_code), action="reconnecting")

    def _on_message(self, _client: mqtt.Client, _userdata: object, msg: mqtt.MQTTMessage) -> None:
        try:
            self._route(msg)
        except Exception:  # one bad message must never stop the network loop
            log.exception("bridge.route_failed", topic=msg.topic)
            self._queue_deadletter(msg, "internal", "the bridge failed on this message; see its log", None)

    def _route(self, msg: mqtt.MQTTMessage) -> None:
        received_at = now_utc()
        station_key = station_from_topic(msg.topic)
        self.counts.received[station_key or "?"] += 1
        records: list[tuple[str, bytes | None, bytes]] = []
        try:
            batch = decode_message(msg.topic, msg.payload, self.stations, received_at, self.limits)
        except MessageRejected as rejected:
            r = rejected.rejection
            self.counts.deadlettered[station_key or "?"][r.reason] += 1
            log.warning("bridge.rejected", station=r.station_id, reason=r.reason, error=r.message)
            records.append(self._deadletter_record(msg, r.reason, r.message, received_at, r.station_id, None, None))
        else:
            key = batch.station_id.encode()
            if batch.readings:
                records.append((self.settings.readings_topic, key,
                                encode_readings(batch.station_id, batch.readings, received_at, "mqtt")))
                self.counts.forwarded[batch.station_id] += len(batch.readings)
            for r in batch.rejections:
                self.counts.deadlettered[batch.station_id][r.reason] += 1
                log.warning("bridge.rejected", station=r.station_id, parameter=r.parameter, reason=r.reason, error=r.message)
                records.append(self._deadletter_record(msg, r.reason, r.message, received_at, r.station_id, r.parameter, r.index))
        self._enqueue(msg, records)

    def _deadletter_record(self, msg: mqtt.MQTTMessage, reason: str, message: str, received_at: object,
                           station_id: str | None, parameter: str | None, index: int | None) -> tuple[str, bytes | None, bytes]:
        value = encode_deadletter(topic=msg.topic, payload=msg.payload, reason=reason, message=message,
                                  received_at=received_at, station_id=station_id, parameter=parameter, index=index)  # type: ignore[arg-type]
        return self.settings.deadletter_topic, station_id.encode() if station_id else None, value

    def _queue_deadletter(self, msg: mqtt.MQTTMessage, reason: str, message: str, station_id: str | None) -> None:
        self._enqueue(msg, [self._deadletter_record(msg, reason, message, now_utc(), station_id, None, None)])

    def _enqueue(self, msg: mqtt.MQTTMessage, records: list[tuple[str, bytes | None, bytes]]) -> None:
        if not records:
            self._ack(msg.mid, msg.qos)
            return
        pending = PendingMessage(mid=msg.mid, qos=msg.qos, remaining=len(records))
        for topic, key, value in records:
            self._outbox.put(OutgoingRecord(topic, key, value, pending))

    def _ack(self, mid: int, qos: int) -> None:
        if qos > 0:
            self.client.ack(mid, qos)

    # --- Kafka side (producer thread) ----------------------------------------------------------

    def _produce_forever(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                record = self._outbox.get(timeout=0.5)
            except queue.Empty:
                continue
            while not self._stop.is_set():
                try:
                    future = self.producer.send(record.topic, key=record.key, value=record.value)
                except KafkaError as exc:
                    log.warning("bridge.kafka_unavailable", error=str(exc), retry_in_s=backoff,
                                fix=f"start Kafka at {self.settings.kafka_bootstrap} (quantrac stack up)")
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, 10.0)
                    continue
                backoff = 0.5
                future.add_callback(self._on_delivered, record)
                future.add_errback(self._on_failed, record)
                break

    def _on_delivered(self, record: OutgoingRecord, _metadata: object) -> None:
        if record.message.confirm_one():
            self._ack(record.message.mid, record.message.qos)

    def _on_failed(self, record: OutgoingRecord, exc: BaseException) -> None:
        self.counts.retried += 1
        log.warning("bridge.send_failed", topic=record.topic, error=str(exc), action="requeued")
        self._outbox.put(record)

    # --- lifecycle -------------------------------------------------------------------------------

    def run(self) -> None:
        """Run until `stop()`; reconnects to both sides by itself."""
        producer_thread = threading.Thread(target=self._produce_forever, name="kafka-producer", daemon=True)
        producer_thread.start()
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = self.settings.mqtt_session_expiry_s
        self.client.connect_async(self.settings.mqtt_host, self.settings.mqtt_port, keepalive=30,
                                  clean_start=False, properties=properties)
        self.client.loop_start()
        log.info("bridge.started", mqtt=f"{self.settings.mqtt_host}:{self.settings.mqtt_port}",
                 kafka=self.settings.kafka_bootstrap, stations=len(self.stations))
        while not self._stop.wait(30.0):
            log.info("bridge.counts", **self.counts.snapshot())
        self.client.disconnect()
        self.client.loop_stop()
        producer_thread.join(timeout=5)
        self.producer.flush(timeout=10)
        self.producer.close(timeout=5)
        log.info("bridge.stopped", **self.counts.snapshot())

    def stop(self) -> None:
        self._stop.set()
