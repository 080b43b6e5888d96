"""Hostile input through the real bridge, keeper and worker: after each item, ingest still flows.

Each hostile MQTT item (payloads from just under to well over every size limit; NUL, control
characters, lone surrogates and long strings in every field; deep nesting; huge arrays; numbers
at float64's edges (refused beyond any instrument's reach); conflicting duplicates; an empty list) is followed by a valid reading, which
must be stored within a deadline. At the end every rejection is queryable at
`GET /api/v1/deadletters` with its reason, size and SHA-256, the bridge and worker are alive,
and their logs grew by little. Then one poison record is injected straight into each loop that
reads Kafka (the dead-letter keeper, the worker) and shown to be passed.
"""

from __future__ import annotations

import base64
import hashlib
import os
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

import orjson
import paho.mqtt.client as mqtt
import psycopg
import pytest

from ingest.producer import make_producer, send_confirmed
from quantrac.db import save_stations
from quantrac.mqtt_accounts import tester_credential as credential_of_tester
from quantrac.safe_text import safe_text
from quantrac.settings import Settings
from quantrac.wire import encode_deadletter, encode_readings
from tests.utils.builders import make_station, topic
from tests.utils.poll import wait_for
from tests.utils.processes import Process, publish, stored_count

pytestmark = pytest.mark.integration

KIB, MIB = 1024, 1024 * 1024
KAFKA_MAX_REQUEST = MIB


@dataclass
class Hostile:
    name: str
    body: bytes
    reasons: list[str] = field(default_factory=list)  # dead letters expected for the station, by reason
    station_topic: str | None = None  # another topic than the station's own
    stored: int = 0  # readings of this item that are valid and stored


def _reading(parameter: str = "COD", value: Any = 12.5, unit: str = "mg/L", status: Any = "00") -> dict[str, Any]:
    return {"parameter": parameter, "value": value, "unit": unit, "status": status}


def _body(ts: datetime, *readings: dict[str, Any], **extra: Any) -> bytes:
    return orjson.dumps({"ts": ts.isoformat(), "readings": list(readings), **extra})


def _padded(ts: datetime, size: int) -> bytes:
    """A valid one-reading message padded to exactly `size` bytes."""
    head = _body(ts, _reading(), pad="")
    return head[:-2] + b"x" * (size - len(head)) + head[-2:]


def hostile_items(station_id: str, base: datetime, broker_limit: int) -> list[Hostile]:
    at = iter(base + timedelta(seconds=i) for i in range(10_000))
    nul = "\u0000"
    items = [
        Hostile("bridge limit", _padded(next(at), 64 * KIB), stored=1),
        Hostile("bridge limit + 1", _padded(next(at), 64 * KIB + 1), ["oversize"]),
        Hostile("70 kB", _padded(next(at), 70_000), ["oversize"]),
        Hostile("dead-letter cap + 1", _padded(next(at), 256 * KIB + 1), ["oversize"]),
        Hostile("Kafka max request - 1", _padded(next(at), KAFKA_MAX_REQUEST - 1), ["oversize"]),
        Hostile("Kafka max request + 1", _padded(next(at), KAFKA_MAX_REQUEST + 1), ["oversize"]),
        Hostile("1 MB", _padded(next(at), 1_000_000), ["oversize"]),
        Hostile("14 MB", _padded(next(at), 14_000_000), ["oversize"]),
        Hostile("broker limit + 1", _padded(next(at), broker_limit + 1)),  # refused by Mosquitto: no dead letter
        Hostile("NUL in parameter", _body(next(at), _reading(parameter=f"CO{nul}D")), ["unknown_parameter"]),
        Hostile("NUL in unit", _body(next(at), _reading(unit=f"mg/L{nul}")), ["bad_unit"]),
        Hostile("NUL in status", _body(next(at), _reading(status=f"0{nul}0")), ["bad_status"]),
        Hostile("NUL in value", _body(next(at), _reading(value=f"1{nul}")), ["bad_value"]),
        Hostile("NUL in ts", orjson.dumps({"ts": f"2026-11-29T21:05:00{nul}+07:00", "readings": [_reading()]}), ["no_offset"]),
        Hostile("NUL in an extra field", _body(next(at), _reading(), note=nul * 100), stored=1),
        # Mosquitto disconnects a client that puts NUL or a control character in a topic (MQTT-1.5.3): the
        # nearest a topic gets is invisible and private-use characters.
        Hostile("invisible characters in the station id", _body(next(at), _reading()), ["unknown_station"],
                topic(f"{station_id}\u200b\ufeff\ue000")),
        Hostile("control characters", _body(next(at), _reading(parameter="\x01\x1b[31mCOD\x7f")), ["unknown_parameter"]),
        Hostile("lone surrogate", b'{"ts": "' + next(at).isoformat().encode() + b'", "readings": [{"parameter": "\\ud800"}]}',
                ["bad_json"]),
        Hostile("invalid UTF-8", b'{"ts": "\xff\xfe", "readings": []}', ["not_utf8"]),
        Hostile("long parameter", _body(next(at), _reading(parameter="P" * 60_000)), ["unknown_parameter"]),
        Hostile("long station id", _body(next(at), _reading()), ["unknown_station"], topic(f"{station_id}-" + "S" * 30_000)),
        Hostile("deep nesting", b'{"ts": "' + next(at).isoformat().encode() + b'", "readings": ' + b"[" * 30_000 + b"]" * 30_000 + b"}",
                ["bad_json"]),
        Hostile("huge array", _body(next(at), *([{}] * 20_000), _reading()), ["schema"] * 20 + ["too_many_rejections"], stored=1),
        Hostile("float64 max", _body(next(at), _reading(value=1.7976931348623157e308)), ["bad_value"]),
        Hostile("float64 smallest", _body(next(at), _reading(value=5e-324), _reading("pH", -0.0, "-")), stored=2),
        Hostile("empty readings", _body(next(at)), ["empty"]),
        Hostile("conflict in one message", _body(next(at), _reading(value=10.0), _reading(value=11.0)), ["conflict"], stored=1),
    ]
    again = base + timedelta(seconds=1)  # the "bridge limit" item's time: stored with COD 12.5
    items.append(Hostile("exact resend", _body(again, _reading()), []))
    items.append(Hostile("conflicting resend", _body(again, _reading(value=99.0)), ["conflict"]))
    return items


class Publisher:
    """A gateway (the test account, MQTT 3.1.1 as most loggers speak) that waits for each PUBACK.

    MQTT 3.1.1 is also what shows the broker's size limit plainly: Mosquitto 2.0.11 answers a
    too-large PUBLISH of an MQTT 5 client with a reason code that paho-mqtt 2.1 cannot parse in a
    PUBACK, which kills that client's network thread (docs/ingest.md, "Size limits").
    """

    def __init__(self, settings: Settings) -> None:
        self.codes: dict[int, int] = {}
        self._acked = threading.Condition()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311,
                                  client_id=f"quantrac-hostile-{uuid.uuid4().hex[:8]}")
        credential = credential_of_tester(settings)
        assert credential is not None, "the test account is generated by the session's stack"
        self.client.username_pw_set(credential.username, credential.password)
        self.client.on_publish = self._on_publish
        self.client.connect(settings.mqtt_host, settings.mqtt_port)
        self.client.loop_start()

    def _on_publish(self, _c: object, _u: object, mid: int, reason_code: mqtt.ReasonCode, _p: object) -> None:
        with self._acked:
            self.codes[mid] = reason_code.value
            self._acked.notify_all()

    def publish(self, target: str, body: bytes) -> int:
        """Publish at QoS 1 and return the broker's PUBACK reason code (always 0 in MQTT 3.1.1, even when dropped)."""
        info = self.client.publish(target, body, qos=1)
        with self._acked:
            assert self._acked.wait_for(lambda: info.mid in self.codes, timeout=60), f"no PUBACK for {target[:80]}"
            return self.codes[info.mid]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture()
def publisher(stack: Settings) -> Iterator[Publisher]:
    p = Publisher(stack)
    yield p
    p.close()


def _deadletters(api: Any, station_id: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    offset: int | None = 0
    while offset is not None:
        page = api.get("/api/v1/deadletters", params={"station": station_id, "limit": 1000, "offset": offset}).json()
        found.extend(page["data"])
        offset = page["next_offset"]
    return found


def _log_size(proc: Process) -> int:
    return proc.log_path.stat().st_size


def test_every_hostile_mqtt_item_is_explained_and_ingest_keeps_flowing(
        pipeline: dict[str, Process], stack: Settings, db: psycopg.Connection, api: Any, publisher: Publisher) -> None:
    station = make_station()
    save_stations(db, {station.id: station})
    base = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=2)
    items = hostile_items(station.id, base, stack.mqtt_message_size_limit)
    logs_before = {name: _log_size(p) for name, p in pipeline.items()}
    valid_at = base + timedelta(hours=1)
    expected_stored = 0
    for n, item in enumerate(items):
        assert publisher.publish(item.station_topic or topic(station.id), item.body) == 0, item.name
        expected_stored += item.stored + 1
        follow_up = _body(valid_at + timedelta(seconds=n), _reading("Flow", float(n), "m3/h"))
        assert publisher.publish(topic(station.id), follow_up) == 0
        wait_for(lambda want=expected_stored: stored_count(db, station.id) >= want, timeout=60, interval=0.2,
                 what=f"the valid reading after '{item.name}' stored ({expected_stored} in all)")
        for name, proc in pipeline.items():
            assert proc.alive(), f"{name} died after '{item.name}':\n{proc.tail()}"

    want: dict[str, int] = {}
    for item in items:
        for reason in item.reasons if item.station_topic is None else ():
            want[reason] = want.get(reason, 0) + 1

    def kept() -> dict[str, int]:
        counts: dict[str, int] = {}
        for d in _deadletters(api, station.id):
            counts[d["reason"]] = counts.get(d["reason"], 0) + 1
        return counts
    wait_for(lambda: all(kept().get(r, 0) >= n for r, n in want.items()), timeout=90, interval=0.5,
             what=f"the dead letters {want} at GET /api/v1/deadletters (have {kept()})")

    letters = _deadletters(api, station.id)
    for item in items:
        if item.station_topic is not None:  # dead letters of the invented station ids, listed under them
            invented = item.station_topic.split("/")[3]
            assert [d["reason"] for d in _deadletters(api, safe_text(invented))] == item.reasons, item.name
    refused = next(i for i in items if i.name == "broker limit + 1")
    assert not [d for d in letters if d["payload_size"] == len(refused.body)], "the broker should have dropped it"
    fourteen = next(i for i in items if i.name == "14 MB")
    [big] = [d for d in letters if d["payload_size"] == len(fourteen.body)]
    assert big["reason"] == "oversize" and big["truncated"] is True
    assert big["payload_sha256"] == hashlib.sha256(fourteen.body).hexdigest()
    small = [d for d in letters if d["payload_size"] == 64 * KIB + 1]
    assert small and small[0]["truncated"] is False
    nul_parameter = next(d for d in letters if d["reason"] == "unknown_parameter" and "\\u0000" in (d["parameter"] or ""))
    assert nul_parameter["parameter"] == "CO\\u0000D"
    conflicts = [d for d in letters if d["reason"] == "conflict"]
    assert {d["stage"] for d in conflicts} == {"ingest", "worker"}  # in one message at the bridge; against the store at the worker
    assert any("99.0" in d["message"] and "12.5" in d["message"] for d in conflicts)
    # A value at float64's edge is refused at the bridge, named (it was stored or set aside by the worker
    # depending on whether PostgreSQL could sum it with its bucket's other readings).
    float_max = next(d for d in letters if d["reason"] == "bad_value" and "beyond what any instrument" in d["message"])
    assert float_max["parameter"] == "COD" and float_max["stage"] == "ingest"
    assert db.execute("SELECT count(*) FROM readings WHERE station_id = %s AND value > 1e307", (station.id,)).fetchone()[0] == 0
    delivery = api.get(f"/api/v1/stations/{station.id}/delivery").json()
    assert delivery["conflict"] == 1  # the worker's count, exact (the bridge's in-message conflict is counted at its next flush)

    grown = {name: _log_size(p) - logs_before[name] for name, p in pipeline.items()}
    assert all(g < 2 * MIB for g in grown.values()), f"logs grew too much: {grown}"


def test_a_poison_dead_letter_is_quarantined_and_the_keeper_stores_what_follows(
        pipeline: dict[str, Process], stack: Settings, api: Any) -> None:
    station_id = f"T-KEEP-{uuid.uuid4().hex[:8]}"
    now = datetime.now(timezone.utc)
    out_of_range = orjson.loads(encode_deadletter(topic=topic(station_id), payload=b"{}", reason="schema", message="m",
                                                  received_at=now, station_id=station_id))
    out_of_range["index"] = 2**40  # no PostgreSQL integer holds it
    records = [
        (stack.deadletter_topic, station_id.encode(), b"\x00\xff not a dead letter " + station_id.encode()),
        (stack.deadletter_topic, station_id.encode(), orjson.dumps(out_of_range)),
        (stack.deadletter_topic, station_id.encode(), encode_deadletter(
            topic=topic(station_id), payload=b"{}", reason="schema", message=f"follows the poison for {station_id}",
            received_at=now, station_id=f"{station_id}\u0000", parameter="\ud800")),
    ]
    producer = make_producer(stack, "quantrac-test-poison")
    try:
        send_confirmed(producer, records)
    finally:
        producer.close()
    quarantined = {"reason": "quarantined", "stage": "deadletter-keeper"}

    def landed() -> list[dict[str, Any]]:
        page = api.get("/api/v1/deadletters", params={**quarantined, "limit": 1000}).json()["data"]
        mine = [d for d in page if station_id.encode() in base64.b64decode(d["payload_b64"])]
        after = api.get("/api/v1/deadletters", params={"station": f"{station_id}\\u0000"}).json()["data"]
        return mine + after if len(mine) == 2 and after else []
    found = wait_for(landed, timeout=60, interval=0.5, what="two quarantined rows and the dead letter after them")
    follower = found[-1]
    assert follower["reason"] == "schema" and follower["parameter"] == "\\ud800"
    assert all(d["payload_sha256"] and d["payload_size"] for d in found[:2])
    assert pipeline["bridge"].alive()


def test_a_poison_readings_record_is_quarantined_and_the_worker_stores_what_follows(
        pipeline: dict[str, Process], stack: Settings, db: psycopg.Connection, api: Any) -> None:
    station = make_station()
    save_stations(db, {station.id: station})
    now = datetime.now(timezone.utc).replace(microsecond=0)
    nul_parameter = orjson.loads(encode_readings(station.id, [], now, "mqtt"))
    nul_parameter["readings"] = [{"parameter": "C\u0000OD", "value": 1.0, "unit": "mg/L", "ts": now.isoformat(), "status": "00"}]
    valid = orjson.loads(encode_readings(station.id, [], now, "mqtt"))
    valid["readings"] = [{"parameter": "COD", "value": 5.0, "unit": "mg/L", "ts": now.isoformat(), "status": "00"}]
    producer = make_producer(stack, "quantrac-test-poison")
    key = station.id.encode()
    try:
        send_confirmed(producer, [(stack.readings_topic, key, b"\xff\x00 undecodable"),
                                  (stack.readings_topic, key, orjson.dumps(nul_parameter)),
                                  (stack.readings_topic, key, orjson.dumps(valid))])
    finally:
        producer.close()
    wait_for(lambda: stored_count(db, station.id) == 1, timeout=60, interval=0.3, what="the reading after the poison stored")

    def quarantined() -> list[dict[str, Any]]:
        page = api.get("/api/v1/deadletters", params={"reason": "quarantined", "stage": "worker", "limit": 1000}).json()["data"]
        return [d for d in page if d["station_id"] == station.id or b"undecodable" in base64.b64decode(d["payload_b64"])]
    found = wait_for(lambda: len(quarantined()) >= 2 and quarantined(), timeout=60, interval=0.5,
                     what="the worker's two quarantined records at GET /api/v1/deadletters")
    assert any("cannot contain NUL" in d["message"] for d in found)  # psycopg refused the NUL, on its way to PostgreSQL
    assert pipeline["worker"].alive()


def test_a_poison_message_in_a_restarted_bridges_session_does_not_block_it(stack: Settings, publisher: Publisher) -> None:
    """A 14 MB payload queued in a stopped bridge's persistent session, with a valid message behind it.

    The private bridge's producer takes requests of 100 kB only (as a broker with a smaller
    `message.max.bytes` would), so even the oversize dead letter of the poison (its 256 KiB head) is
    refused: tried, quarantined as a 1 KiB stand-in, acknowledged; the valid message then flows.
    """
    from kafka import KafkaConsumer

    from ingest.producer import CONSUMER_OPTIONS
    from quantrac.wire import decode_deadletter
    from tests.utils.processes import end_mqtt_session, own_pipeline

    own, env = own_pipeline(stack, "poison")
    station = make_station()
    with psycopg.connect(own.pg_dsn, autocommit=True) as conn:
        save_stations(conn, {station.id: station})
    env = {**env, "QUANTRAC_KAFKA_MAX_REQUEST_BYTES": "100000"}
    log_dir = stack.run_dir / "test-logs" / os.environ.get("QUANTRAC_TEST_NAMESPACE", "test")
    end_mqtt_session(stack, own.mqtt_bridge_client_id)
    bridge = Process("bridge-poison", ["bridge"], log_dir, env=env)
    consumer = KafkaConsumer(own.readings_topic, own.deadletter_topic, bootstrap_servers=own.kafka_bootstrap,
                             auto_offset_reset="earliest", enable_auto_commit=False, **CONSUMER_OPTIONS)
    seen: dict[str, list[bytes]] = {own.readings_topic: [], own.deadletter_topic: []}

    def read() -> dict[str, list[bytes]]:
        for tp, records in consumer.poll(timeout_ms=300).items():
            seen[tp.topic].extend(r.value for r in records)
        return seen
    try:
        ts = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=5)
        def forwarded() -> list[dict[str, Any]]:  # this run's station only: the private topics outlive a session
            return [r for r in (orjson.loads(v) for v in read()[own.readings_topic]) if r["station_id"] == station.id]
        wait_for(lambda: publisher.publish(topic(station.id), _body(ts, _reading(value=1.0))) == 0 and forwarded(),
                 timeout=60, interval=1.0, what="the private bridge forwarding a probe")
        bridge.stop()
        assert publisher.publish(topic(station.id), _padded(ts + timedelta(seconds=1), 14_000_000)) == 0
        assert publisher.publish(topic(station.id), _body(ts + timedelta(seconds=2), _reading(value=3.0))) == 0
        bridge = Process("bridge-poison", ["bridge"], log_dir, env=env)

        def passed() -> bool:
            quarantined = [decode_deadletter(v) for v in seen[own.deadletter_topic]]
            return any(r["readings"][0]["value"] == 3.0 for r in forwarded()) and any(
                q["reason"] == "quarantined" and q["stage"] == "bridge" and q["station_id"] == station.id for q in quarantined)
        wait_for(passed, timeout=90, interval=0.5, what="the quarantined poison and the valid message after it")
        assert bridge.alive(), bridge.tail()
    finally:
        consumer.close()
        bridge.stop()
        end_mqtt_session(stack, own.mqtt_bridge_client_id)


def test_a_gateway_presenting_the_bridges_name_gets_an_empty_session_of_its_own_and_nothing_is_lost(
        pipeline: dict, stack: Settings, db: psycopg.Connection) -> None:
    """A gateway configured with the bridge's client id once took the bridge's persistent session (Mosquitto hands
    it to any account): the bridge and it took turns, and readings of every station were dropped while it held it
    (104 of 200 in a trial). Now the bridge's session id is keyed by its password: the gateway's session is new,
    and every reading published meanwhile is stored."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    from quantrac.mqtt_accounts import credential_for

    station = make_station()
    save_stations(db, {station.id: station})
    credential = credential_for(stack, station.id)
    assert credential is not None
    present: list[bool] = []
    impostor = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=stack.mqtt_bridge_client_id, protocol=mqtt.MQTTv5)
    impostor.username_pw_set(credential.username, credential.password)
    impostor.on_connect = lambda _c, _u, flags, _rc, _p: present.append(flags.session_present)
    keep = Properties(PacketTypes.CONNECT)
    keep.SessionExpiryInterval = 600
    impostor.connect(stack.mqtt_host, stack.mqtt_port, clean_start=False, properties=keep)
    impostor.loop_start()
    try:
        wait_for(lambda: present, timeout=10, what="the impostor's CONNACK")
        start = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=2)
        for k in range(40):
            publish(stack, station.id, _body(start + timedelta(seconds=k), _reading(value=float(k))))
        wait_for(lambda: stored_count(db, station.id) == 40, timeout=60, interval=0.3,
                 what=f"the 40 readings stored while the impostor is connected (have {stored_count(db, station.id)})")
        assert present == [False] and impostor.is_connected()  # never the bridge's session, never kicked by the bridge
    finally:
        end = Properties(PacketTypes.DISCONNECT)
        end.SessionExpiryInterval = 0
        impostor.disconnect(properties=end)
        impostor.loop_stop()


def test_a_session_left_under_a_bridges_bare_name_is_drained_before_the_bridge_connects(
        pipeline: dict, stack: Settings, db: psycopg.Connection) -> None:
    """A bridge from before `bridge_session_id` left its session under its bare name, still subscribed and queueing
    every reading. The next start of a bridge of that name forwards what it holds and ends it
    (`adopt_legacy_session`); with no such session it does nothing."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    from ingest.bridge import has_session
    from ingest.drain import adopt_legacy_session
    from ingest.payload import SUBSCRIPTION
    from quantrac.mqtt_accounts import bridge_login

    station = make_station()
    save_stations(db, {station.id: station})
    name = f"quantrac-bridge-legacy-{uuid.uuid4().hex[:6]}"
    own = stack.model_copy(update={"mqtt_bridge_client_id": name})
    subscribed = threading.Event()
    old = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv5)
    old.username_pw_set(*bridge_login(stack))
    old.on_subscribe = lambda *_args: subscribed.set()
    keep = Properties(PacketTypes.CONNECT)
    keep.SessionExpiryInterval = 600
    old.connect(stack.mqtt_host, stack.mqtt_port, clean_start=False, properties=keep)
    old.loop_start()
    old.subscribe(SUBSCRIPTION, qos=1)
    assert subscribed.wait(10), "no SUBACK for the old bridge's subscription"
    old.disconnect()
    old.loop_stop()
    start = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=1)
    for k in range(12):
        publish(stack, station.id, _body(start + timedelta(seconds=k), _reading(value=float(k))))

    report = adopt_legacy_session(own, {station.id: station})
    assert report is not None and report.session_present and report.forwarded == 12
    assert not has_session(own, name) and adopt_legacy_session(own, {station.id: station}) is None
