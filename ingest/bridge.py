"""The MQTT → Kafka bridge: nothing acknowledged to the broker before Kafka has it.

Threads:
- paho's network loop calls `_on_message`, which validates the message and queues the Kafka
  records it becomes, so the network loop never blocks (keep-alives keep flowing);
- the producer thread sends queued records with an idempotent `acks=all` producer; when every
  record of a message is confirmed, kafka-python's callback acknowledges the message to the
  broker (paho `manual_ack`). A failed send goes back on the queue; while Kafka is down the
  bridge simply stops acknowledging, and the broker keeps the messages in our persistent session.
  The readings records of one station that wait together are joined into one Kafka record
  (`join_records`, up to `bridge_record_max_bytes`): Kafka's cost is per record, and a backlog
  drains in far fewer of them. A joined record Kafka refuses for what it is goes back as the
  records it joined, each then tried and quarantined on its own.

PUBACKs go out in the order the messages arrived (MQTT-4.6.0-2): a message confirmed early waits
for the ones before it. The MQTT 5 receive maximum (`bridge_max_inflight`) bounds how many
unacknowledged messages the bridge holds, so memory stays bounded while Kafka is down.

So a reading is lost only if the broker loses it; a crash between the Kafka write and the
PUBACK redelivers it, and the store's primary key makes the duplicate harmless. Delivery counts
(quantrac/delivery_accounting.py) are taken when Kafka confirms, per station.
"""

from __future__ import annotations

import struct
import threading
from collections import deque
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Callable, Iterable, Mapping, NamedTuple

import paho.mqtt.client as mqtt
import structlog
from kafka.errors import KafkaError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ingest.deadletter import start_keeper
from ingest.mqtt_buffered import BufferedClient
from ingest.payload import SUBSCRIPTION, Limits, MessageRejected, Rejection, decode_wire, station_from_topic
from ingest.producer import make_producer
from quantrac import metrics
from quantrac.clock import utc_now
from quantrac.delivery_accounting import UNKNOWN_STATION, CounterName, DeliveryCounts
from quantrac.domain import Station
from quantrac.failures import RECORD_ATTEMPTS, RateLimitedLog, describe, is_record_failure
from quantrac.mqtt_accounts import bridge_login, bridge_session_id
from quantrac.safe_text import safe_optional, safe_text
from quantrac.settings import Settings
from quantrac.wire import encode_deadletter, encode_quarantine, encode_wire_readings, join_wire_readings

log = structlog.get_logger(__name__)

OutgoingRecordSpec = tuple[str, bytes | None, bytes, tuple["Count", ...]]
"""(Kafka topic, key, value, delivery counts to take when Kafka confirms it)."""


def subscription_for(group: str) -> str:
    """The bridge's topic filter: a shared subscription when several bridges split the messages."""
    return f"$share/{group}/{SUBSCRIPTION}" if group else SUBSCRIPTION


class Count(NamedTuple):
    """A delivery count to take once Kafka has confirmed the record it belongs to."""

    station_id: str
    counter: CounterName
    n: int = 1
    reason: str = ""


@dataclass(slots=True)
class PendingMessage:
    """One MQTT message waiting for all of its Kafka records to be confirmed."""

    mid: int
    qos: int
    remaining: int
    done: bool = False


@dataclass(slots=True)
class OutgoingRecord:
    """A Kafka record the bridge will send for one MQTT message: a reading batch or a dead letter."""
    topic: str
    key: bytes | None
    value: bytes
    message: PendingMessage
    counts: tuple[Count, ...] = ()
    failures: int = 0
    """Record failures so far (Kafka refused this record for what it is); at RECORD_ATTEMPTS it is quarantined."""
    quarantine: bool = False
    """This is the small stand-in of a record that was set aside."""
    parts: tuple[OutgoingRecord, ...] = ()
    """The records of single messages this joined record stands for (empty: it is one message's record)."""
    alone: bool = False
    """Never joined with others (it was part of a joined record Kafka refused)."""

    def messages(self) -> list[PendingMessage]:
        """The MQTT messages this record belongs to, in arrival order."""
        return [part.message for part in self.parts] if self.parts else [self.message]


JOIN_WAIT_S = 0.1
"""Longest the producer thread gathers records while Kafka has some unconfirmed (it is answered in milliseconds)."""


def join_records(records: list[OutgoingRecord], topic: str, max_bytes: int) -> list[OutgoingRecord]:
    """`records` with the readings records (`topic`) of each station joined, up to `max_bytes` a record.

    A joined record takes the place of its station's first record, and a station's record that is
    not joined ends its run, so a station's readings stay in the order they were taken. Dead letters,
    records that failed before, quarantine stand-ins and joined records are left alone. Delivery
    counts are added up.
    """
    out: list[OutgoingRecord] = []
    runs: list[tuple[int, list[OutgoingRecord]]] = []
    open_runs: dict[bytes | None, tuple[int, int]] = {}  # station key → (its run in `runs`, the run's bytes)
    for record in records:
        if record.topic != topic or record.failures or record.alone or record.parts or record.quarantine:
            if record.topic == topic:  # what follows of this station may not overtake it
                open_runs.pop(record.key, None)
            out.append(record)
            continue
        run = open_runs.get(record.key)
        size = len(record.value)
        if run is None or run[1] + size > max_bytes:
            open_runs[record.key] = (len(runs), size)
            runs.append((len(out), [record]))
            out.append(record)
            continue
        runs[run[0]][1].append(record)
        open_runs[record.key] = (run[0], run[1] + size)
    for position, parts in runs:
        if len(parts) > 1:
            out[position] = OutgoingRecord(topic, parts[0].key, join_wire_readings([p.value for p in parts]), parts[-1].message,
                                           _added_counts(parts), parts=tuple(parts))
    return out


def _added_counts(parts: list[OutgoingRecord]) -> tuple[Count, ...]:
    totals: dict[tuple[str, CounterName, str], int] = {}
    for part in parts:
        for c in part.counts:
            totals[(c.station_id, c.counter, c.reason)] = totals.get((c.station_id, c.counter, c.reason), 0) + c.n
    return tuple(Count(station, counter, n, reason) for (station, counter, reason), n in totals.items())


class AckQueue:
    """PUBACKs in arrival order: a message is acknowledged once it and every earlier one is confirmed."""

    def __init__(self, send_ack: Callable[[int, int], object],
                 send_acks: Callable[[list[PendingMessage]], object] | None = None) -> None:
        """`send_ack(mid, qos)` acknowledges one message; `send_acks`, when given, all those completed at once, in order."""
        self._send_acks = send_acks or (lambda ready: [send_ack(m.mid, m.qos) for m in ready])
        self._lock = threading.Lock()
        self._arrived: deque[PendingMessage] = deque()

    def arrived(self, message: PendingMessage) -> None:
        """Queue a message for acknowledgement in arrival order; one that produced no records is confirmed at once."""
        with self._lock:
            self._arrived.append(message)
        if message.remaining == 0:
            self.confirm(message, 0)

    def confirm(self, message: PendingMessage, records: int = 1) -> None:
        """Count `records` confirmed records of message, then acknowledge the completed prefix."""
        self._settle(((message, records),))

    def confirm_all(self, messages: list[PendingMessage]) -> None:
        """`confirm(m)` for each of messages (one record each), acknowledging the completed prefix once."""
        self._settle([(message, 1) for message in messages])

    def _settle(self, confirmed: Iterable[tuple[PendingMessage, int]]) -> None:
        ready = []
        with self._lock:
            for message, records in confirmed:
                message.remaining -= records
                if message.remaining <= 0:
                    message.done = True
            while self._arrived and self._arrived[0].done:
                ready.append(self._arrived.popleft())
        if ready:
            self._send_acks(ready)

    def reset(self) -> int:
        """Forget the messages of a previous connection; returns how many were still unacknowledged.

        The broker redelivers them on the new connection, and a PUBACK sent now could acknowledge a
        different message that reuses the packet id. Their records still reach Kafka (duplicates
        are harmless downstream); they are simply never acknowledged.
        """
        with self._lock:
            dropped = len(self._arrived)
            self._arrived.clear()
        return dropped

    def __len__(self) -> int:
        return len(self._arrived)


class Outbox:
    """Records from the network thread to the producer thread, handed over in bulk.

    A `queue.Queue` costs a lock and a condition notify per record on the MQTT network thread,
    which is the bridge's busiest thread; here a record costs a deque append, and the producer
    takes everything waiting at once.
    """

    def __init__(self) -> None:
        self._records: deque[OutgoingRecord] = deque()
        self._ready = threading.Event()

    def put(self, record: OutgoingRecord) -> None:
        """Hand a record to the producer thread; called on the MQTT network thread, so it never blocks."""
        self._records.append(record)
        if not self._ready.is_set():
            self._ready.set()

    def take(self, timeout: float) -> list[OutgoingRecord]:
        """Everything waiting, oldest first; waits up to `timeout` for something when empty."""
        self._ready.clear()
        records = self._drain()
        if not records and self._ready.wait(timeout):
            records = self._drain()
        return records

    def _drain(self) -> list[OutgoingRecord]:
        records = []
        try:
            while True:
                records.append(self._records.popleft())
        except IndexError:
            return records

    def qsize(self) -> int:
        """Records waiting for the producer thread (a snapshot: both threads change it)."""
        return len(self._records)


class InKafka:
    """How many records Kafka has not settled yet (confirmed or failed), so the producer thread can gather meanwhile.

    kafka-python sends one request at a time to a broker (idempotence), so what arrives while a
    request is out waits anyway: taken when the request is answered, it goes as fewer, joined records.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._unsettled = 0
        self._settled = threading.Event()

    def sent(self) -> None:
        """A record was handed to the producer (before its callbacks are added)."""
        with self._lock:
            self._unsettled += 1

    def settled(self, _result: object) -> None:
        """A record was confirmed or failed (kafka-python's callback and errback)."""
        with self._lock:
            self._unsettled -= 1
        self._settled.set()

    def wait_while_busy(self, timeout: float) -> None:
        """While records are out, wait until one is settled or `timeout`; returns at once when none are."""
        self._settled.clear()
        if self._unsettled > 0:
            self._settled.wait(timeout)


class Bridge:
    """Owns the MQTT client, the Kafka producer and the queue between them."""

    def __init__(self, settings: Settings, stations: Mapping[str, Station], session_id: str | None = None) -> None:
        """`stations`: the registry, usually `quantrac.db.live_registry` (reloads itself, knows retired ids);
        `session_id`: the MQTT client id to connect as (default `bridge_session_id` of the settings' bridge name)."""
        self.settings = settings
        self.stations = stations
        self.session_id = session_id or bridge_session_id(settings)
        self.limits = Limits.from_settings(settings)
        self.counts = DeliveryCounts()
        self.late_after = timedelta(seconds=settings.delivery_late_after_s)
        self.kafka_retries = 0
        self.quarantined = 0
        self._log = RateLimitedLog(log, settings.log_repeat_interval_s)
        self._retry_pause = threading.Event()
        self.acks = AckQueue(self._ack, self._ack_all)
        self.subscription = subscription_for(settings.mqtt_shared_group)
        self._outbox = Outbox()
        self._in_kafka = InKafka()
        self._join_max_bytes = min(settings.bridge_record_max_bytes, settings.kafka_max_request_bytes // 2)
        self._stop = threading.Event()
        self._stopping = threading.Event()  # SIGTERM: leave gracefully (ingest/drain.py, `stop_gracefully`)
        self.refusing = threading.Event()  # while set, new messages stay unacknowledged (redelivered to the next connection)
        self.subscribe_on_connect = True  # False while draining (ingest/drain.py): empty the session, never join again
        self.session_present = False
        self.connected = threading.Event()
        self._producer_thread: threading.Thread | None = None
        self.producer = make_producer(settings, "quantrac-bridge")
        self.client = self._make_client()

    def _make_client(self) -> mqtt.Client:
        client = BufferedClient(mqtt.CallbackAPIVersion.VERSION2, client_id=self.session_id,
                                protocol=mqtt.MQTTv5, manual_ack=True)
        if self.settings.mqtt_username:
            password = self.settings.mqtt_password.get_secret_value() if self.settings.mqtt_password else None
            client.username_pw_set(self.settings.mqtt_username, password)
        if self.settings.mqtt_tls_ca_file is not None:
            client.tls_set(ca_certs=str(self.settings.mqtt_tls_ca_file))
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
        stale = self.acks.reset()
        self.session_present = bool(flags.session_present)
        # Subscribing on every connect covers a session the broker lost or expired (session_present
        # false); with the session present it is a no-op for the broker.
        if self.subscribe_on_connect:
            client.subscribe(self.subscription, qos=1)
        self.connected.set()
        metrics.BRIDGE_MQTT_CONNECTED.set(1)
        log.info("bridge.mqtt_connected", session_present=flags.session_present, subscription=self.subscription,
                 redelivery_expected=stale)

    def _on_disconnect(self, _client: mqtt.Client, _userdata: object, _flags: mqtt.DisconnectFlags,
                       reason_code: mqtt.ReasonCode, _properties: Properties | None) -> None:
        self.connected.clear()
        metrics.BRIDGE_MQTT_CONNECTED.set(0)
        if not self._stop.is_set():
            log.warning("bridge.mqtt_disconnected", reason=str(reason_code), action="reconnecting")

    def _on_message(self, _client: mqtt.Client, _userdata: object, msg: mqtt.MQTTMessage) -> None:
        if self.refusing.is_set():
            return  # neither forwarded nor acknowledged: the broker keeps it in the session and sends it again
        try:
            self._route(msg)
        except Exception as exc:  # a bug of ours on one message must never stop the network loop
            self._log("exception", "bridge.route_failed", key=type(exc).__name__, topic=safe_text(_topic_of(msg), 200),
                      error=describe(exc), action="quarantined")
            self._quarantine_message(msg, exc)

    def _route(self, msg: mqtt.MQTTMessage) -> None:
        received_at = utc_now()
        station_key = station_from_topic(msg.topic) or UNKNOWN_STATION
        self.counts.add(station_key, "received", at=received_at)
        metrics.BRIDGE_MESSAGES_RECEIVED.inc()
        records: list[OutgoingRecordSpec] = []
        try:
            batch = decode_wire(msg.topic, msg.payload, self.stations, received_at, self.limits)
        except MessageRejected as rejected:
            r = rejected.rejection
            metrics.DEADLETTERS.labels(r.reason).inc()
            self._log("warning", "bridge.rejected", key=self._log_key(r), station=safe_optional(r.station_id, 200),
                      reason=r.reason, error=safe_text(r.message, 500))
            records.append(self._deadletter_record(msg, r.reason, r.message, received_at, r.station_id, None, None)
                           + ((Count(station_key, "deadlettered", reason=r.reason),),))
        else:
            if batch.readings:
                forwarded = len(batch.readings)
                counts: tuple[Count, ...] = (Count(batch.station_id, "forwarded", forwarded),)
                if received_at - batch.ts > self.late_after:  # every reading of a message has its time
                    counts += (Count(batch.station_id, "late", forwarded),)
                records.append((self.settings.readings_topic, batch.station_id.encode(),
                                encode_wire_readings(batch.station_id, batch.readings, received_at, "mqtt"), counts))
                metrics.BRIDGE_READINGS_FORWARDED.inc(forwarded)
            for r in batch.rejections:
                metrics.DEADLETTERS.labels(r.reason).inc()
                self._log("warning", "bridge.rejected", key=self._log_key(r), station=r.station_id,
                          parameter=safe_optional(r.parameter, 200), reason=r.reason, error=safe_text(r.message, 500))
                records.append(self._deadletter_record(msg, r.reason, r.message, received_at, r.station_id, r.parameter, r.index)
                               + ((Count(batch.station_id, "deadlettered", reason=r.reason),),))
        self._enqueue(msg, records)

    @staticmethod
    def _log_key(r: Rejection) -> tuple[str | None, str]:
        """Repeats of a rejection fold per registered station and reason; invented station ids fold together.

        Decided from the rejection alone: asking the registry would reload it for every unknown id.
        """
        invented = r.reason in ("unknown_station", "station_retired", "topic_mismatch")
        return (None if invented else r.station_id), r.reason

    def _deadletter_record(self, msg: mqtt.MQTTMessage, reason: str, message: str, received_at: datetime,
                           station_id: str | None, parameter: str | None, index: int | None) -> tuple[str, bytes | None, bytes]:
        value = encode_deadletter(topic=msg.topic, payload=msg.payload, reason=reason, message=message,
                                  received_at=received_at, station_id=station_id, parameter=parameter, index=index,
                                  cap=self.limits.deadletter_payload_cap)
        return self.settings.deadletter_topic, _key(station_id), value

    def _quarantine_message(self, msg: mqtt.MQTTMessage, exc: BaseException) -> None:
        """Set aside a message the bridge failed on: a small quarantine dead letter, then the usual PUBACK."""
        topic = _topic_of(msg)
        station_id = station_from_topic(topic)
        value = encode_quarantine(stage="bridge", raw=msg.payload, error=describe(exc), received_at=utc_now(),
                                  topic=topic, source="mqtt", station_id=station_id)
        self._count_quarantine()
        count = Count(station_id or UNKNOWN_STATION, "deadlettered", reason="quarantined")
        self._enqueue(msg, [(self.settings.deadletter_topic, _key(station_id), value, (count,))])

    def _count_quarantine(self) -> None:
        self.quarantined += 1
        metrics.DEADLETTERS.labels("quarantined").inc()
        metrics.QUARANTINED.labels("bridge").inc()

    def _enqueue(self, msg: mqtt.MQTTMessage, records: list[OutgoingRecordSpec]) -> None:
        pending = PendingMessage(mid=msg.mid, qos=msg.qos, remaining=len(records))
        self.acks.arrived(pending)
        for topic, key, value, counts in records:
            self._outbox.put(OutgoingRecord(topic, key, value, pending, counts))

    def _ack(self, mid: int, qos: int) -> None:
        if qos > 0:
            self.client.ack(mid, qos)
        metrics.BRIDGE_MESSAGES_ACKED.inc()

    def _ack_all(self, messages: list[PendingMessage]) -> None:
        queue_pubacks(self.client, [m.mid for m in messages if m.qos == 1])
        for m in messages:
            if m.qos > 1:
                self.client.ack(m.mid, m.qos)
        metrics.BRIDGE_MESSAGES_ACKED.inc(len(messages))

    # --- Kafka side (producer thread) ----------------------------------------------------------

    def _produce_forever(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            if self._retry_pause.is_set():  # a send failed for Kafka's sake: give it a moment, not a hot loop
                self._retry_pause.clear()
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)
            if self._join_max_bytes:
                self._in_kafka.wait_while_busy(JOIN_WAIT_S)
            records = self._outbox.take(timeout=0.5)
            if self._join_max_bytes and len(records) > 1:
                records = join_records(records, self.settings.readings_topic, self._join_max_bytes)
            for record in records:
                backoff = self._send(record, backoff)

    def _send(self, record: OutgoingRecord, backoff: float) -> float:
        """Hand one record to the producer, waiting out Kafka being unreachable; returns the next backoff."""
        while not self._stop.is_set():
            try:
                future = self.producer.send(record.topic, key=record.key, value=record.value)
            except KafkaError as exc:
                if is_record_failure(exc):
                    self._on_failed(record, exc)
                    return backoff
                self._log("warning", "bridge.kafka_unavailable", key=type(exc).__name__, error=str(exc), retry_in_s=backoff,
                          fix=f"start Kafka at {self.settings.kafka_bootstrap} (quantrac stack up)")
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            self._in_kafka.sent()
            future.add_callback(self._on_delivered, record)
            future.add_errback(self._on_failed, record)
            future.add_both(self._in_kafka.settled)
            return 0.5
        return backoff

    def _on_delivered(self, record: OutgoingRecord, _metadata: object) -> None:
        now = utc_now()
        for c in record.counts:
            self.counts.add(c.station_id, c.counter, c.n, reason=c.reason, at=now)
        if record.parts:
            self.acks.confirm_all(record.messages())
        else:
            self.acks.confirm(record.message)

    def _on_failed(self, record: OutgoingRecord, exc: BaseException) -> None:
        """A send failed: Kafka's state is waited out; a record Kafka refuses is tried RECORD_ATTEMPTS times, then set aside."""
        self.kafka_retries += 1
        metrics.BRIDGE_KAFKA_RETRIES.inc()
        if not is_record_failure(exc):
            self._log("warning", "bridge.send_failed", key=(record.topic, type(exc).__name__), topic=record.topic,
                      error=describe(exc), action="requeued after a pause")
            self._retry_pause.set()
            self._outbox.put(record)
            return
        if record.parts:  # which message Kafka refused is not known: each is tried on its own
            self._log("warning", "bridge.joined_record_refused", key=(record.topic, type(exc).__name__), topic=record.topic,
                      size=len(record.value), messages=len(record.parts), error=describe(exc), action="split and retried")
            for part in record.parts:
                self._outbox.put(replace(part, alone=True))
            return
        failures = record.failures + 1
        if failures < RECORD_ATTEMPTS:
            self._log("warning", "bridge.record_refused", key=(record.topic, type(exc).__name__), topic=record.topic,
                      size=len(record.value), attempt=failures, error=describe(exc), action="retried")
            self._outbox.put(replace(record, failures=failures))
            return
        if record.quarantine:  # even the small stand-in was refused: nothing smaller to keep; let the message go
            self._log("error", "bridge.quarantine_refused", key=record.topic, topic=record.topic, error=describe(exc),
                      action="acknowledged without a record", fix="check the dead-letter topic's configuration in Kafka")
            self.acks.confirm(record.message)
            return
        self._log("error", "bridge.record_quarantined", key=(record.topic, type(exc).__name__), topic=record.topic,
                  size=len(record.value), error=describe(exc), attempts=failures,
                  fix="see the `quarantined` dead letter (GET /api/v1/deadletters?reason=quarantined)")
        self._count_quarantine()
        station = record.key.decode("utf-8", "replace") if record.key else None
        value = encode_quarantine(stage="bridge", raw=record.value, error=describe(exc), received_at=utc_now(),
                                  topic=f"kafka:{record.topic}", source="mqtt", station_id=station)
        count = Count(station or UNKNOWN_STATION, "deadlettered", reason="quarantined")
        self._outbox.put(OutgoingRecord(self.settings.deadletter_topic, record.key, value, record.message, (count,),
                                        quarantine=True))

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the producer thread and connect with the persistent session; returns at once."""
        self._producer_thread = threading.Thread(target=self._produce_forever, name="kafka-producer", daemon=True)
        self._producer_thread.start()
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = self.settings.mqtt_session_expiry_s
        properties.ReceiveMaximum = self.settings.bridge_max_inflight
        self.client.connect_async(self.settings.mqtt_host, self.settings.mqtt_port, keepalive=30,
                                  clean_start=False, properties=properties)
        self.client.loop_start()

    def run(self) -> None:
        """Run until `stop()`; reconnects to both sides by itself. On stop, leaves the session as
        QUANTRAC_BRIDGE_ON_STOP says (ingest/drain.py, `stop_gracefully`)."""
        from ingest.drain import stop_gracefully
        from ingest.heartbeat import Heartbeat

        keeper = start_keeper(self.settings, self._stop)
        metrics.BRIDGE_OUTBOX.set_function(self._outbox.qsize)
        metrics.serve(self.settings.bridge_metrics_port, "bridge", self.settings.metrics_host)
        heartbeat_stop = threading.Event()
        heartbeat = Heartbeat(self.settings.pg_dsn, self.settings.mqtt_bridge_client_id, self.subscription,
                              self.settings.bridge_heartbeat_s, heartbeat_stop)
        heartbeat.beat()  # known before it connects: from now on its session can be found if it dies
        heartbeat.start()
        self.start()
        log.info("bridge.started", mqtt=f"{self.settings.mqtt_host}:{self.settings.mqtt_port}",
                 kafka=self.settings.kafka_bootstrap, stations=len(self.stations))
        while not self._stopping.wait(self.settings.bridge_counts_flush_s):
            self.counts.flush(self.settings.pg_dsn)
            log.info("bridge.counts", unacked=len(self.acks), kafka_retries=self.kafka_retries, **self.counts.snapshot())
        heartbeat_stop.set()
        heartbeat.join(timeout=5)
        end = stop_gracefully(self)
        self.close(end_session=end)
        keeper.join(timeout=5)
        log.info("bridge.stopped", unacked=len(self.acks), session="ended" if end else "kept", **self.counts.snapshot())

    def close(self, end_session: bool = False) -> None:
        """Stop producing and disconnect; with `end_session`, the DISCONNECT ends the broker's session."""
        self._stop.set()
        # Confirm what Kafka has before leaving, so its PUBACKs go out ahead of the DISCONNECT.
        if self._producer_thread is not None:
            self._producer_thread.join(timeout=5)
        self.producer.flush(timeout=10)
        properties = None
        if end_session:  # MQTT 5 §3.14.2.2.2: a session expiry of 0 in DISCONNECT ends the session now
            properties = Properties(PacketTypes.DISCONNECT)
            properties.SessionExpiryInterval = 0
        self.client.disconnect(properties=properties)
        self.client.loop_stop()
        self.producer.close(timeout=5)
        self.counts.flush(self.settings.pg_dsn)

    def stop(self) -> None:
        """Ask `run()` to leave (signal handlers call this); the graceful part runs in `run()`'s thread."""
        self._stopping.set()


def puback_packets(mids: list[int]) -> bytes:
    """The PUBACK packets of `mids`, back to back (success: MQTT 5 §3.4.2.1 lets the reason code be left out)."""
    return b"".join([_PUBACK.pack(mqtt.PUBACK, 2, mid) for mid in mids])


_PUBACK = struct.Struct("!BBH")


def queue_pubacks(client: mqtt.Client, mids: list[int]) -> None:
    """PUBACK each of `mids` (QoS 1, received with `manual_ack`), in order, as one write.

    paho's `ack()` queues one packet and wakes its network thread through a socket pair for each
    message: a system call and a hand-over of the GIL per message, a tenth of the bridge's time.
    Kafka confirms records in batches, so the PUBACKs a batch releases go out as one packet queue
    entry here, through paho's own queue (paho-mqtt is pinned; tests/test_ingest_units.py checks
    the bytes against paho's). Without that queue, one `ack()` per message.
    """
    queue = getattr(client, "_packet_queue", None)
    if queue is None or len(mids) < 2:
        for mid in mids:
            client.ack(mid, 1)
        return
    queue(mqtt.PUBACK, puback_packets(mids), mids[-1], 1)


def _topic_of(msg: mqtt.MQTTMessage) -> str:
    """The message's topic as text, whatever its bytes (paho's `topic` raises on invalid UTF-8)."""
    return bytes(msg._topic).decode("utf-8", "replace")  # noqa: SLF001 (paho keeps the raw topic only here)


def _key(station_id: str | None) -> bytes | None:
    """The Kafka key of a station's records (UTF-8; a lone surrogate cannot come from MQTT's UTF-8 topics, but stays safe)."""
    return station_id.encode("utf-8", "backslashreplace") if station_id else None


def end_session(settings: Settings, client_id: str, timeout_s: float = 10.0, *, as_is: bool = False) -> None:
    """Delete the broker's persistent session of a bridge that is stopped for good.

    A bridge's session outlives the process: left behind, it keeps collecting messages (and, in a
    shared subscription group, keeps taking its turn of them) until it expires. Connecting with the
    same client id, a clean start and a session expiry of 0 ends it. Only for a bridge that will
    not come back (scale-down, a benchmark's or a test's own bridge): what its session held is gone.
    To forward what it held first, drain it instead (`quantrac bridge drain`, ingest/drain.py).
    `client_id` is a bridge's name (its session id is `bridge_session_id` of it), or with `as_is` the client id itself.
    """
    _connect_once(settings, client_id if as_is else bridge_session_id(settings, client_id), timeout_s, clean_start=True)


def has_session(settings: Settings, session_id: str, timeout_s: float = 10.0) -> bool:
    """Whether the broker holds a session under the client id `session_id`, leaving it as it was: a session found keeps
    its queue (nothing delivered is acknowledged, so it is delivered again), the empty one the question made is ended."""
    return _connect_once(settings, session_id, timeout_s, clean_start=False)


def _connect_once(settings: Settings, session_id: str, timeout_s: float, *, clean_start: bool) -> bool:
    """Connect as `session_id` with the bridge account and leave at once; whether the broker had a session for it. A
    session left behind is kept only if it was there before and not `clean_start`."""
    answers: list[bool] = []
    answered = threading.Event()

    def on_connect(_c: mqtt.Client, _u: object, flags: mqtt.ConnectFlags, _rc: object, _p: object) -> None:
        answers.append(flags.session_present)
        answered.set()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=session_id, protocol=mqtt.MQTTv5, manual_ack=True)
    username, password = bridge_login(settings)
    if username:
        client.username_pw_set(username, password)
    client.on_connect = on_connect
    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = 0 if clean_start else settings.mqtt_session_expiry_s
    client.connect(settings.mqtt_host, settings.mqtt_port, clean_start=clean_start, properties=properties)
    client.loop_start()
    try:
        if not answered.wait(timeout_s):
            raise TimeoutError(f"no MQTT connection as {session_id} within {timeout_s:g} s; "
                               f"check the broker at {settings.mqtt_host}:{settings.mqtt_port} and the bridge account")
    finally:
        leave = Properties(PacketTypes.DISCONNECT)
        leave.SessionExpiryInterval = 0
        client.disconnect(properties=None if answers and answers[0] and not clean_start else leave)
        client.loop_stop()
    return answers[0]

