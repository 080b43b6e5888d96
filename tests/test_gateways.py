"""Gateway identity on a PRIVATE Mosquitto (own run_dir, ports taken free at run time): accounts, ACL, TLS.

`quantrac stack up` itself generates the accounts (no explicit sync first), so the broker never
allows anonymous access. It must refuse a gateway's publish to another station's topic (MQTT 5
PUBACK reason code 135, "not authorized") and accept its own; the bridge's subscription sees only
the accepted message; the bridge and the notifier may each do only their own job.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import stat
import threading
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from quantrac.mqtt_accounts import (
    BRIDGE_ACCOUNT,
    NOTIFIER_ACCOUNT,
    TEST_ACCOUNT,
    GatewayCredential,
    bridge_login,
    bridge_session_id,
    gateway_credentials,
    notifier_auth,
)
from quantrac.mqtt_accounts import tester_credential as credential_of_tester
from quantrac.registry import load_registry
from quantrac.settings import REPO_ROOT, Settings, mqtt_credentials_file
from stack import services as local_stack
from stack.mosquitto import mqtt_connack
from stack.mosquitto_accounts import acl_text, sync
from tests.utils.builders import make_station, payload, topic
from tests.utils.poll import wait_for
from tests.utils.ports import free_ports

RUN_DIR = REPO_ROOT / ".run" / "private-gate"
NOT_AUTHORIZED = 135
ACCEPTED = (0, 16)
"""PUBACK reason codes of an accepted publish: success, or "no matching subscribers"."""

MQTT_PORT, TLS_PORT = free_ports(2)


def _settings() -> Settings:
    """Built anew after each sync: Settings reads the bridge account from the run_dir at construction.

    The test account is NOT asked for (unlike the rest of the suite): `stack up` must leave it out.
    """
    return Settings(run_dir=RUN_DIR, mqtt_port=MQTT_PORT, mosquitto_tls_port=TLS_PORT, mqtt_test_account=False,
                    stack_start_timeout_s=20, stack_stop_timeout_s=10)


def test_acl_lets_each_gateway_write_only_its_stations() -> None:
    text = acl_text({"GW1": ["S1", "S2"], "GW2": ["S3"]}, test_account=False, alerts_topic="quantrac/v1/alerts/+")

    blocks = {block.splitlines()[0]: block.splitlines()[1:] for block in text.split("\n\n") if block.startswith("user ")}
    assert blocks["user gw-GW1"] == ["topic write quantrac/v1/stations/S1/readings", "topic write quantrac/v1/stations/S2/readings"]
    assert blocks["user gw-GW2"] == ["topic write quantrac/v1/stations/S3/readings"]
    assert blocks[f"user {BRIDGE_ACCOUNT}"] == ["topic read quantrac/v1/stations/+/readings",
                                                "topic readwrite quantrac/v1/bridges/+/drain"]
    assert blocks[f"user {NOTIFIER_ACCOUNT}"] == ["topic write quantrac/v1/alerts/+"]
    assert TEST_ACCOUNT not in text


def test_the_bridge_account_is_the_one_the_settings_carry(tmp_path: Path) -> None:
    sync(Settings(run_dir=tmp_path, mqtt_test_account=False), {})
    earlier = Settings(run_dir=tmp_path, mqtt_test_account=False)  # read the generated account
    shutil.rmtree(tmp_path / "mosquitto")

    sync(earlier, {})  # regenerated, e.g. a test wiped its private run_dir after building its settings

    assert bridge_login(Settings(run_dir=tmp_path)) == bridge_login(earlier) != (None, None)
    own = Settings(run_dir=tmp_path / "site", mqtt_username="site-bridge", mqtt_password="from-env")
    sync(own, {})
    assert bridge_login(Settings(run_dir=tmp_path / "site", mqtt_username=None)) == ("site-bridge", "from-env")
    assert "user site-bridge\ntopic read quantrac/v1/stations/+/readings" in (tmp_path / "site" / "mosquitto" / "acl").read_text()


@given(name=st.from_regex(r"[a-z0-9-]{1,40}", fullmatch=True), password=st.text(min_size=1, max_size=40),
       other=st.text(min_size=1, max_size=40))
def test_a_bridges_session_id_is_its_name_keyed_by_its_password(tmp_path_factory: pytest.TempPathFactory, name: str,
                                                                 password: str, other: str) -> None:
    """The MQTT client id a bridge connects as: its name, a dash and 16 hex digits that only its password gives (no
    gateway can present it); its name alone on a broker without passwords."""
    run_dir = tmp_path_factory.getbasetemp() / "no-credentials"
    keyed = Settings(run_dir=run_dir, mqtt_username="b", mqtt_password=password, mqtt_bridge_client_id=name)
    session_id = bridge_session_id(keyed)
    assert session_id.startswith(f"{name}-") and len(session_id) == len(name) + 17
    assert session_id == bridge_session_id(keyed, name) == bridge_session_id(keyed.model_copy())
    assert (bridge_session_id(keyed.model_copy(update={"mqtt_password": SecretStr(other)})) == session_id) == (other == password)
    assert bridge_session_id(keyed, f"{name}-2") != session_id
    assert bridge_session_id(Settings(run_dir=run_dir, mqtt_username=None, mqtt_bridge_client_id=name)) == name


@pytest.fixture(scope="module")
def broker() -> Iterator[dict[str, Any]]:
    settings = _settings()  # may carry the bridge account of an earlier run, which `up` must then keep
    local_stack.down(settings)
    shutil.rmtree(RUN_DIR, ignore_errors=True)
    try:
        local_stack.up(settings, only=["mosquitto"])  # generates the accounts from the seed registry itself
        a, b = make_station(f"GA-{uuid.uuid4().hex[:6]}"), make_station(f"GB-{uuid.uuid4().hex[:6]}")
        sync(settings, {a.id: a, b.id: b})
        settings = _settings()
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
        self.subacks: dict[int, list[mqtt.ReasonCode]] = {}
        self.client.on_subscribe = lambda _c, _u, mid, codes, _p: self.subacks.__setitem__(mid, codes)
        self.connected = threading.Event()
        self.client.on_connect = lambda _c, _u, _f, rc, _p: self.connected.set() if not rc.is_failure else None
        self.client.connect(settings.mqtt_host, port)
        self.client.loop_start()
        wait_for(self.connected.is_set, timeout=10, what=f"{username} to be connected")

    def subscribe(self, pattern: str) -> None:
        """Subscribe at QoS 1 and wait for the broker's SUBACK: a message published before it would not be delivered."""
        _, mid = self.client.subscribe(pattern, qos=1)
        [code] = wait_for(lambda: self.subacks.get(mid), timeout=10, what=f"the SUBACK of {pattern}")
        assert not code.is_failure, f"the broker refused the subscription to {pattern}: {code}"

    def _on_publish(self, _client: object, _userdata: object, mid: int, reason_code: mqtt.ReasonCode, _props: object) -> None:
        with self.lock:
            self.acks[mid] = reason_code.value

    def publish(self, station_id: str) -> int:
        """PUBACK reason code of one QoS 1 publish to the station's readings topic."""
        return self.publish_to(topic(station_id))

    def publish_to(self, name: str) -> int:
        info = self.client.publish(name, payload(COD=1.0), qos=1)
        return wait_for(lambda: self.acks.get(info.mid, -1) + 1, timeout=10, what=f"PUBACK of {name}") - 1

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
    bridge.subscribe("quantrac/v1/stations/+/readings")
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
def test_stack_up_generates_every_account_and_no_test_account_unless_asked(broker: dict[str, Any]) -> None:
    settings: Settings = broker["settings"]
    seed = load_registry(settings.registry_file, settings.limits_dir)
    conf = (RUN_DIR / "mosquitto" / "mosquitto.conf").read_text()
    data = json.loads(mqtt_credentials_file(RUN_DIR).read_text())

    assert "allow_anonymous false" in conf and "allow_anonymous true" not in conf
    assert {data["bridge"]["username"], data["notifier"]["username"]} == {BRIDGE_ACCOUNT, NOTIFIER_ACCOUNT}
    assert set(seed) <= {s for c in gateway_credentials(settings).values() for s in c.station_ids}
    assert credential_of_tester(settings) is None and TEST_ACCOUNT not in (RUN_DIR / "mosquitto" / "acl").read_text()
    assert bridge_login(settings) == (BRIDGE_ACCOUNT, data["bridge"]["password"])
    assert notifier_auth(settings) == {"username": NOTIFIER_ACCOUNT, "password": data["notifier"]["password"]}
    for name in ("credentials.json", "passwd", "acl"):
        assert stat.S_IMODE((RUN_DIR / "mosquitto" / name).stat().st_mode) == 0o600, name
    assert not [line for line in os.popen(f"git -C {REPO_ROOT} ls-files --others --exclude-standard .run").read().splitlines()]


@pytest.mark.integration
def test_no_anonymous_access_and_wrong_password_refused(broker: dict[str, Any]) -> None:
    settings: Settings = broker["settings"]
    gateway_a = _gateway(settings, broker["a"])

    assert mqtt_connack(settings.mqtt_host, settings.mqtt_port) == 5  # not authorised
    assert mqtt_connack(settings.mqtt_host, settings.mqtt_port, gateway_a.username, "wrong") in (4, 5)
    assert mqtt_connack(settings.mqtt_host, settings.mqtt_port, gateway_a.username, gateway_a.password) == 0


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
def test_bridges_on_a_shared_subscription_receive_with_the_bridge_account(broker: dict[str, Any]) -> None:
    settings: Settings = broker["settings"]
    username, password = bridge_login(settings)
    bridge = Session(settings, username or "", password or "")
    bridge.subscribe("$share/quantrac-bridges/quantrac/v1/stations/+/readings")
    gateway_a = _gateway(settings, broker["a"])
    gw = Session(settings, gateway_a.username, gateway_a.password)
    try:
        wait_for(lambda: gw.publish(broker["a"]) == 0 and topic(broker["a"]) in bridge.received, timeout=10,
                 what="the shared subscription to deliver a gateway's message")
    finally:
        gw.close()
        bridge.close()


@pytest.mark.integration
def test_the_notifier_writes_alert_topics_only(broker: dict[str, Any]) -> None:
    settings: Settings = broker["settings"]
    auth = notifier_auth(settings)
    assert auth is not None and auth["password"]
    bridge_user, bridge_password = bridge_login(settings)
    notifier = Session(settings, auth["username"] or "", auth["password"])
    bridge = Session(settings, bridge_user or "", bridge_password or "")
    try:
        assert notifier.publish_to("quantrac/v1/alerts/KCN Test") in ACCEPTED
        assert notifier.publish(broker["a"]) == NOT_AUTHORIZED
        assert bridge.publish_to("quantrac/v1/alerts/KCN Test") == NOT_AUTHORIZED
    finally:
        notifier.close()
        bridge.close()


@pytest.mark.integration
def test_the_api_health_probe_counts_a_broker_refusing_anonymous_as_up(broker: dict[str, Any]) -> None:
    from api.routes.health import _MQTT_CONNECT, _tcp_probe

    settings: Settings = broker["settings"]
    assert _tcp_probe(settings.mqtt_host, settings.mqtt_port, _MQTT_CONNECT) == (True, "")
    assert local_stack.status(settings, only=["mosquitto"])["mosquitto"].healthy  # checked with the bridge account


@pytest.mark.integration
def test_the_simulator_publishes_with_each_gateways_account(broker: dict[str, Any]) -> None:
    from ingest.scenarios import Message
    from ingest.simulator import MqttSink, gateway_accounts
    from quantrac.domain import Reading

    settings: Settings = broker["settings"]
    bridge_user, bridge_password = bridge_login(settings)
    bridge = Session(settings, bridge_user or "", bridge_password or "")
    bridge.subscribe("quantrac/v1/stations/+/readings")
    accounts = gateway_accounts(settings, [broker["a"], broker["b"]])
    assert accounts[broker["a"]] != accounts[broker["b"]]
    sink = MqttSink(settings.mqtt_host, settings.mqtt_port, accounts)
    now = datetime.now(timezone.utc)
    try:
        for station_id in (broker["a"], broker["b"]):
            sink.send(Message(station_id, now, now, [Reading(station_id=station_id, parameter="COD", value=1.0, unit="mg/L", ts=now)]))
        sink.close()
        wait_for(lambda: {topic(broker["a"]), topic(broker["b"])} <= set(bridge.received), timeout=10,
                 what="both gateways' messages at the bridge")
    finally:
        bridge.close()
    with pytest.raises(ConnectionRefusedError, match="gateways sync"):
        MqttSink(settings.mqtt_host, settings.mqtt_port, {}, default=("gw-nobody", "wrong"))


@pytest.mark.integration
def test_a_station_registered_later_can_publish_after_sync(broker: dict[str, Any]) -> None:
    settings: Settings = broker["settings"]
    late = make_station(f"GC-{uuid.uuid4().hex[:6]}")
    pid = local_stack.status(settings, only=["mosquitto"])["mosquitto"].pid

    result = sync(settings, {late.id: late})

    assert result.reloaded and result.created == (late.id,)
    credential = _gateway(settings, late.id)
    # Mosquitto rereads its files on SIGHUP asynchronously: poll until the new account is accepted.
    wait_for(lambda: mqtt_connack(settings.mqtt_host, settings.mqtt_port, credential.username,
                                              credential.password) == 0, timeout=10, what="the broker to reload its accounts")
    gw = Session(settings, credential.username, credential.password)
    try:
        assert gw.publish(late.id) in ACCEPTED
        assert gw.publish(broker["a"]) == NOT_AUTHORIZED
    finally:
        gw.close()
    assert broker["a"] in _gateway(settings, broker["a"]).station_ids  # earlier accounts kept
    assert local_stack.status(settings, only=["mosquitto"])["mosquitto"].pid == pid  # reloaded, not restarted


@pytest.mark.integration
def test_make_run_after_make_test_takes_the_test_account_away(broker: dict[str, Any]) -> None:
    """`make test` asks for the test account (QUANTRAC_MQTT_TEST_ACCOUNT=true); `make run` in the same folder
    does not, and its `stack up` (what `quantrac run` starts with) must leave that account unable to log in."""
    settings: Settings = broker["settings"]
    local_stack.up(settings.model_copy(update={"mqtt_test_account": True}), only=["mosquitto"])
    tester = credential_of_tester(settings)
    assert tester is not None
    wait_for(lambda: mqtt_connack(settings.mqtt_host, settings.mqtt_port, tester.username, tester.password) == 0,
             timeout=10, what="the broker to accept the test account")

    local_stack.up(settings, only=["mosquitto"])  # settings as `make run` has them: no test account asked for

    assert credential_of_tester(settings) is None
    assert TEST_ACCOUNT not in (settings.run_dir / "mosquitto" / "acl").read_text()
    wait_for(lambda: mqtt_connack(settings.mqtt_host, settings.mqtt_port, tester.username, tester.password) != 0,
             timeout=10, what="the broker to refuse the test account after the reload")


@pytest.mark.integration
def test_stack_up_on_a_running_broker_adds_the_test_account_on_request_without_restart_and_tls(broker: dict[str, Any]) -> None:
    settings: Settings = broker["settings"]
    pid = local_stack.status(settings, only=["mosquitto"])["mosquitto"].pid

    local_stack.up(settings.model_copy(update={"mqtt_test_account": True}), only=["mosquitto"])

    assert local_stack.status(settings, only=["mosquitto"])["mosquitto"].pid == pid
    tester = credential_of_tester(settings)
    assert tester is not None
    wait_for(lambda: mqtt_connack(settings.mqtt_host, settings.mqtt_port, tester.username, tester.password) == 0,
             timeout=10, what="the broker to reload its accounts")
    gw = Session(settings, tester.username, tester.password, tls=True)
    try:
        assert gw.publish(broker["a"]) in ACCEPTED
    finally:
        gw.close()
