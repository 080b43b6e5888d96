"""Scale-out on the shared services: two bridges on one MQTT shared subscription, two Faust workers
in one consumer group, one of each killed with SIGKILL while a publisher streams QoS 1 readings.

What must hold: every published reading is stored exactly once, no alert is duplicated (one active
alert per station + parameter + rule, and its count equals the exceedances sent, so no reading was
evaluated twice), and the survivors take over: the surviving worker owns every partition and new
readings keep being stored while the killed bridge is down.

Mosquitto keeps dealing a share of the messages to the killed bridge's persistent session while it
is away (the MQTT 5 spec allows either choice; Mosquitto queues them for the member), so those
wait in the broker. The test therefore restarts the killed bridge (same client id) once the
survivors have taken over, and its session's queue is then delivered. Nothing is lost either way:
the messages are in the broker, and the bridge acknowledges them only after Kafka has them.

The kill test starts its load once one reading per station has gone all the way through
(`warm_up`), so the kills are what it exercises. A batch the surviving worker fetched before the
takeover is dropped and read again from the committed offsets (processors/readings_consumer.py).
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Iterator

import paho.mqtt.client as mqtt
import psycopg
import pytest

from quantrac.db import save_stations
from quantrac.domain import Station
from quantrac.mqtt_accounts import credential_for
from quantrac.settings import Settings
from tests.utils.builders import make_station, payload, topic
from tests.utils.fleet import Fleet, owned_partitions, scrape
from tests.utils.poll import wait_for
from tests.utils.ports import free_ports
from tests.utils.processes import NAMESPACE, end_mqtt_session, own_pipeline, publish

pytestmark = pytest.mark.integration

STATIONS = 6
MESSAGES = 1500            # 2 readings each: 3000 readings
PUBLISH_SECONDS = 24.0
KILL_AFTER = 600           # messages published before the kills
EXCEED_EVERY = 50          # every 50th message of a station carries COD above its limit
COD_LIMIT = 100.0
PORTS = dict(zip(("bridge1", "bridge2", "worker1", "worker2"), free_ports(4), strict=False))


@dataclass
class Publisher:
    """Publishes MESSAGES QoS 1 messages round-robin over the stations at a steady pace."""

    settings: Settings
    stations: list[Station]
    base: datetime
    sent: list[tuple[str, datetime, float]] = field(default_factory=list)
    progress: int = 0
    error: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # surfaced by the test, never swallowed
            self.error = exc

    def _run(self) -> None:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"scale-pub-{uuid.uuid4().hex[:8]}",
                             protocol=mqtt.MQTTv311)
        credential = credential_for(self.settings, self.stations[0].id)  # the test account: any station
        if credential is not None:
            client.username_pw_set(credential.username, credential.password)
        client.max_inflight_messages_set(200)
        client.connect(self.settings.mqtt_host, self.settings.mqtt_port)
        client.loop_start()
        pending = []
        pace = threading.Event()
        started = time.monotonic()
        for i in range(MESSAGES):
            station = self.stations[i % STATIONS]
            n = i // STATIONS
            ts = self.base + timedelta(seconds=n)
            cod = COD_LIMIT * 2.5 if n % EXCEED_EVERY == EXCEED_EVERY - 1 else 20.0 + n % 7
            pending.append(client.publish(topic(station.id), payload(ts, COD=cod, pH=7.0), qos=1))
            self.sent.append((station.id, ts, cod))
            self.progress = i + 1
            pace.wait(max(0.0, started + PUBLISH_SECONDS * (i + 1) / MESSAGES - time.monotonic()))  # load pacing
        for info in pending:
            info.wait_for_publish(timeout=30)
            assert info.is_published(), "the broker did not acknowledge a publish"
        client.disconnect()
        client.loop_stop()


@pytest.fixture()
def stations(stack: Settings) -> list[Station]:
    found = [make_station(cod_limit=COD_LIMIT) for _ in range(STATIONS)]
    with psycopg.connect(own_pipeline(stack, "scale")[0].pg_dsn, autocommit=True) as conn:
        save_stations(conn, {s.id: s for s in found})
    return found


@pytest.fixture()
def fleet(stack: Settings, stations: list[Station]) -> Iterator[Fleet]:
    """Two bridges and two workers, ready: both bridges subscribed, both workers owning partitions."""
    own, env = own_pipeline(stack, "scale")
    topic = own.readings_topic
    fleet = Fleet(stack.run_dir / "test-logs" / NAMESPACE, PORTS, env)
    for name in PORTS:
        fleet.start(name)

    def ready() -> bool:
        for p in fleet.procs.values():
            assert p.alive(), f"{p.name} exited with {p.proc.returncode}:\n{p.tail()}"
        bridges_up = all(scrape(PORTS[b]).get(("quantrac_bridge_mqtt_connected", frozenset())) == 1 for b in ("bridge1", "bridge2"))
        w1, w2 = (owned_partitions(PORTS[w], topic) for w in ("worker1", "worker2"))
        return bridges_up and bool(w1) and bool(w2) and len(w1 | w2) == stack.topic_partitions

    try:
        try:
            wait_for(ready, timeout=120, interval=0.5, what="2 bridges connected and 2 workers sharing the partitions")
            warm_up(stack, stations)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{fleet.tails()}") from None
        yield fleet
    finally:  # also when the set-up failed: no process may outlive the test
        for p in fleet.procs.values():
            p.stop()
        for name in ("bridge1", "bridge2"):
            end_mqtt_session(stack, fleet.client_id(name))


def warm_up(stack: Settings, stations: list[Station]) -> None:
    """One reading per station through the whole pipeline, so the load starts on a flowing pipeline
    (both workers past their start-up rebalance), and the kills are what the test exercises."""
    ts = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=2)
    with psycopg.connect(own_pipeline(stack, "scale")[0].pg_dsn, autocommit=True) as conn:
        def all_stored() -> bool:
            done = {r[0] for r in conn.execute("SELECT station_id FROM readings WHERE station_id = ANY(%s) AND parameter = 'Flow'",
                                               ([s.id for s in stations],))}
            for station in stations:
                if station.id not in done:  # the same reading again: stored once whatever happens
                    publish(stack, station.id, payload(ts, Flow=1.0))
            return len(done) == len(stations)

        wait_for(all_stored, timeout=90, interval=1.0, what="a warm-up reading of every station stored")


def stored(conn: psycopg.Connection, stations: list[Station]) -> int:
    row = conn.execute("SELECT count(*) FROM readings WHERE station_id = ANY(%s) AND parameter <> 'Flow'",
                       ([s.id for s in stations],)).fetchone()
    return int(row[0]) if row else 0


def test_killing_a_bridge_and_a_worker_loses_nothing_and_duplicates_nothing(
        stack: Settings, stations: list[Station], fleet: Fleet) -> None:
    own = own_pipeline(stack, "scale")[0]
    topic = own.readings_topic
    conn = psycopg.connect(own.pg_dsn, autocommit=True)
    publisher = Publisher(stack, stations, base=datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=1))
    thread = threading.Thread(target=publisher.run, name="scale-publisher", daemon=True)
    thread.start()

    wait_for(lambda: publisher.progress >= KILL_AFTER or publisher.error, timeout=60, what="the first part of the load")
    os.kill(fleet.procs["bridge2"].proc.pid, signal.SIGKILL)
    os.kill(fleet.procs["worker2"].proc.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    stored_at_kill = stored(conn, stations)
    received_at_kill = scrape(PORTS["bridge1"]).get(("quantrac_bridge_messages_received_total", frozenset()), 0.0)

    # The surviving worker takes every partition once the group notices (session timeout 10 s).
    all_partitions = {str(p) for p in range(stack.topic_partitions)}
    wait_for(lambda: owned_partitions(PORTS["worker1"], topic) == all_partitions,
             timeout=120, interval=0.5, what="worker1 to own every readings partition after worker2's death")
    takeover_s = time.monotonic() - killed_at
    # ... and the surviving bridge and worker keep the new traffic flowing while bridge2 is down.
    wait_for(lambda: stored(conn, stations) >= stored_at_kill + 200, timeout=60,
             what="new readings stored by the survivors")
    assert scrape(PORTS["bridge1"])[("quantrac_bridge_messages_received_total", frozenset())] > received_at_kill

    thread.join(timeout=PUBLISH_SECONDS + 60)
    assert not thread.is_alive() and publisher.error is None, publisher.error
    stored_before_restart = stored(conn, stations)

    # Bring the killed bridge back under its client id: the broker hands over its session's queue.
    fleet.procs["bridge2"].stop()
    fleet.start("bridge2")
    expected = 2 * MESSAGES
    try:
        wait_for(lambda: stored(conn, stations) >= expected, timeout=120, interval=0.5,
                 what=f"all {expected} readings stored")
    except AssertionError as exc:
        have = {(r[0], r[1]) for r in conn.execute("SELECT station_id, ts FROM readings WHERE station_id = ANY(%s) AND parameter = 'COD'",
                                                   ([s.id for s in stations],))}
        missing = sorted({(sid, ts) for sid, ts, _cod in publisher.sent} - have)[:10]
        raise AssertionError(f"{exc}; {stored(conn, stations)} stored; first missing (station, event time): "
                             f"{[(sid, ts.isoformat()) for sid, ts in missing]}\n{fleet.tails()}") from None

    ids = [s.id for s in stations]
    rows = conn.execute("SELECT station_id, parameter, ts FROM readings WHERE station_id = ANY(%s) AND parameter <> 'Flow'",
                        (ids,)).fetchall()
    got = {(r[0], r[1], r[2]) for r in rows}
    want = {(sid, p, ts) for sid, ts, _cod in publisher.sent for p in ("COD", "pH")}
    assert len(rows) == len(want) == expected and got == want, f"missing {len(want - got)}, unexpected {len(got - want)}"

    duplicates = conn.execute(
        "SELECT station_id, parameter, rule, count(*) FROM alerts WHERE station_id = ANY(%s) AND status <> 'resolved' "
        "GROUP BY 1, 2, 3 HAVING count(*) > 1", (ids,)).fetchall()
    assert duplicates == []
    exceedances: dict[str, int] = {}
    for sid, _ts, cod in publisher.sent:
        exceedances[sid] = exceedances.get(sid, 0) + (cod > COD_LIMIT)
    alerts = {r[0]: r[1] for r in conn.execute(
        "SELECT station_id, sum(count) FROM alerts WHERE station_id = ANY(%s) AND parameter = 'COD' AND rule = 'exceedance' "
        "GROUP BY 1", (ids,)).fetchall()}
    assert alerts == exceedances, "each exceedance evaluated exactly once"
    conn.close()
    from_session = scrape(PORTS["bridge2"]).get(("quantrac_bridge_messages_received_total", frozenset()), 0.0)
    print(f"\nscale-out: worker takeover {takeover_s:.1f} s; readings stored at kill {stored_at_kill}, when the "
          f"publisher finished {stored_before_restart}, in the end {expected}; messages the restarted bridge2 "
          f"received from its session {from_session:.0f}")


def test_run_gives_each_bridge_its_own_client_id_and_metrics_port_on_one_shared_group() -> None:
    from cli.run import scale_out
    settings = Settings(bridge_metrics_port=9101, worker_metrics_port=9102, mqtt_shared_group="")
    procs = scale_out({"bridge": "quantrac bridge", "worker": "quantrac worker", "api": "quantrac api"}, 2, 3, settings)
    assert sorted(procs) == ["api", "bridge1", "bridge2", "worker1", "worker2", "worker3"]
    bridges = [procs[f"bridge{i}"][1] for i in (1, 2)]
    assert [b["QUANTRAC_MQTT_BRIDGE_CLIENT_ID"] for b in bridges] == [f"{settings.mqtt_bridge_client_id}-1",
                                                                     f"{settings.mqtt_bridge_client_id}-2"]
    assert {b["QUANTRAC_MQTT_SHARED_GROUP"] for b in bridges} == {"quantrac-bridges"}
    assert [procs[f"worker{i}"][1]["QUANTRAC_WORKER_METRICS_PORT"] for i in (1, 2, 3)] == ["9102", "9103", "9104"]
    assert all("QUANTRAC_WORKER_ID" not in procs[f"worker{i}"][1] for i in (1, 2, 3)), "one consumer group"
    assert procs["api"] == ("quantrac api", {})
    single = scale_out({"bridge": "quantrac bridge"}, 1, 1, settings)
    assert single == {"bridge": ("quantrac bridge", {})}, "one bridge keeps the plain subscription and client id"


def test_bridge_subscribes_through_the_shared_group_only_when_one_is_set() -> None:
    from ingest.bridge import subscription_for
    assert subscription_for("") == "quantrac/v1/stations/+/readings"
    assert subscription_for("g1") == "$share/g1/quantrac/v1/stations/+/readings"
