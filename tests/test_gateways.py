"""Gateway identity on a PRIVATE Mosquitto (own run_dir, ports 21210-21211): accounts, ACL, TLS.

The broker must refuse a gateway's publish to another station's topic (MQTT 5 PUBACK reason
code 135, "not authorized") and accept its own; the bridge's subscription sees only the
accepted message.
"""

from __future__ import annotations

import shutil
import ssl
import stat
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from ingest.gateways import BRIDGE_ACCOUNT, GatewayCredential, acl_text, gateway_credentials, sync, tester_credential
from quantrac import stack as local_stack
from quantrac.settings import REPO_ROOT, Settings, mqtt_credentials_file
from tests.utils.builders import make_station, payload, topic
from tests.utils.poll import wait_for

RUN_DIR = REPO_ROOT / ".run" / "private-ingest-gw"
NOT_AUTHORIZED = 135
ACCEPTED = (0, 16)
"""PUBACK reason codes of an accepted publish: success, or "no matching subscribers"."""


def _settings() -> Settings:
    """Built anew after each sync: Settings reads the bridge account from the run_dir at construction."""
    return Settings(run_dir=RUN_DIR, mqtt_port=21210, mosquitto_tls_port=21211, stack_start_timeout_s=20, stack_stop_timeout_s=10)


def test_acl_lets_each_gateway_write_only_its_stations() -> None:
    text = acl_text({"GW1": ["S1", "S2"], "GW2": ["S3"]}, test_account=False)

    blocks = {block.splitlines()[0]: block.splitlines()[1:] for block in text.split("\n\n") if block.startswith("user ")}
    assert blocks["user gw-GW1"] == ["topic write quantrac/v1/stations/S1/readings", "topic write quantrac/v1/stations/S2/readings"]
    assert blocks["user gw-GW2"] == ["topic write quantrac/v1/stations/S3/readings"]
    assert blocks[f"user {BRIDGE_ACCOUNT}"] == ["topic read quantrac/v1/stations/+/readings", "topic write quantrac/v1/alerts/#"]
    assert "quantrac-test-gateway" not in text


@pytest.fixture(scope="module")
def broker() -> Iterator[dict[str, Any]]:
    settings = _settings()
    local_stack.down(settings)
    shutil.rmtree(RUN_DIR, ignore_errors=True)
    a, b = make_station(f"GA-{uuid.uuid4().hex[:6]}"), make_station(f"GB-{uuid.uuid4().hex[:6]}")
    sync(settings, {a.id: a, b.id: b})
    settings = _settings()
    try:
        local_stack.up(settings, only=["mosquitto"])
        yield {"settings": settings, "a": a.id, "b": b.id}
    finally:
        local_stack.down(settings)


class Session:
    """An MQTT 5 client that records PUBACK reason codes and received messages."""

    def __init__(self, settings: Settings, username: str, password: str, *, tls: bool = False) -> None:
        self.acks: dict[int, int] = {}
        self.received: list[str] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"t-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5)
        self.client.username_pw_set(username, password)
        port = settings.mqtt_port
        if tls:
            self.client.tls_set(ca_certs=str(settings.run_dir / "mosquitto" / "tls" / "ca.crt"), tls_version=ssl.PROTOCOL_TLS_CLIENT)
            port = settings.mosquitto_tls_port or 0
        self.client.on_publish = self._on_publish
        self.client.on_message = lambda _c, _u, msg: self.received.append(msg.topic)
        self.connected = threading.Event()
        self.client.on_connect = lambda _c, _u, _f, rc, _p: self.connected.set() if not rc.is_failure else None
        self.client.connect(settings.mqtt_host, port)
        self.client.loop_start()
        wait_for(self.connected.is_set, timeout=10, what=f"{username} to be connected")

    def _on_publish(self, _client: object, _userdata: object, mid: int, reason_code: mqtt.ReasonCode, _props: object) -> None:
        with self.lock:
            self.acks[mid] = reason_code.value

    def publish(self, station_id: str) -> int:
        """PUBACK reason code of one QoS 1 publish to the station's readings topic."""
        info = self.client.publish(topic(station_id), payload(COD=1.0), qos=1)
        return wait_for(lambda: self.acks.get(info.mid, -1) + 1, timeout=10, what=f"PUBACK of {station_id}") - 1

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _gateway(settings: Settings, station_id: str) -> GatewayCredential:
    return next(c for c in gateway_credentials(settings).values() if station_id in c.station_ids)


@pytest.mark.integration
def test_broker_refuses_a_gateway_publishing_for_another_station(broker: dict[str, Any]) -> None:
    settings: Settings = broker["settings"]
    assert settings.mqtt_username == BRIDGE_ACCOUNT and settings.mqtt_password is not None
    bridge = Session(settings, settings.mqtt_username, settings.mqtt_password.get_secret_value())
    bridge.client.subscribe("quantrac/v1/stations/+/readings", qos=1)
    gateway_a = _gateway(settings, broker["a"])
    gw = Session(settings, gateway_a.username, gateway_a.password)
    try:
        own = gw.publish(broker["a"])
        other = gw.publish(broker["b"])
        wait_for(lambda: topic(broker["a"]) in bridge.received, timeout=10, what="the bridge to receive the accepted message")
        marker = gw.publish(broker["a"])  # anything refused before this would have arrived before it
        wait_for(lambda: bridge.received.count(topic(broker["a"])) >= 2, timeout=10, what="the second accepted message")
    finally:
        gw.close()
        bridge.close()

    assert own == 0 and marker == 0
    assert other == NOT_AUTHORIZED
    assert topic(broker["b"]) not in bridge.received


@pytest.mark.integration
def test_no_anonymous_access_and_wrong_password_refused(broker: dict[str, Any]) -> None:
    settings: Settings = broker["settings"]
    gateway_a = _gateway(settings, broker["a"])

    assert local_stack.mqtt_connack(settings.mqtt_host, settings.mqtt_port) == 5  # not authorised
    assert local_stack.mqtt_connack(settings.mqtt_host, settings.mqtt_port, gateway_a.username, "wrong") in (4, 5)
    assert local_stack.mqtt_connack(settings.mqtt_host, settings.mqtt_port, gateway_a.username, gateway_a.password) == 0


@pytest.mark.integration
def test_credentials_are_private_and_the_bridge_cannot_publish_readings(broker: dict[str, Any]) -> None:
    settings: Settings = broker["settings"]
    for path in (mqtt_credentials_file(settings.run_dir), settings.run_dir / "mosquitto" / "passwd"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert gateway_credentials(settings)[broker["a"]].password not in (settings.run_dir / "mosquitto" / "passwd").read_text()
    assert settings.mqtt_password is not None
    bridge = Session(settings, settings.mqtt_username or "", settings.mqtt_password.get_secret_value())
    try:
        assert bridge.publish(broker["a"]) == NOT_AUTHORIZED
    finally:
        bridge.close()


@pytest.mark.integration
def test_a_station_registered_later_can_publish_after_sync(broker: dict[str, Any]) -> None:
    settings: Settings = broker["settings"]
    late = make_station(f"GC-{uuid.uuid4().hex[:6]}")

    result = sync(settings, {late.id: late})

    assert result.reloaded and result.created == (late.id,)
    credential = _gateway(settings, late.id)
    # Mosquitto rereads its files on SIGHUP asynchronously: poll until the new account is accepted.
    wait_for(lambda: local_stack.mqtt_connack(settings.mqtt_host, settings.mqtt_port, credential.username,
                                              credential.password) == 0, timeout=10, what="the broker to reload its accounts")
    gw = Session(settings, credential.username, credential.password)
    try:
        assert gw.publish(late.id) in ACCEPTED
        assert gw.publish(broker["a"]) == NOT_AUTHORIZED
    finally:
        gw.close()
    assert broker["a"] in _gateway(settings, broker["a"]).station_ids  # earlier accounts kept


@pytest.mark.integration
def test_tls_listener_with_the_local_ca(broker: dict[str, Any]) -> None:
    settings: Settings = broker["settings"]
    tester = tester_credential(settings)
    assert tester is not None
    gw = Session(settings, tester.username, tester.password, tls=True)
    try:
        assert gw.publish(broker["a"]) in ACCEPTED
    finally:
        gw.close()
