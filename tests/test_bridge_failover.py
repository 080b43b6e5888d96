"""Bridges fail over and scale down without stranding data (ingest/drain.py, ingest/heartbeat.py).

Two bridges on one MQTT shared subscription and one worker, on the test session's services with
their own database, topics and consumer group (`own_pipeline`). A gateway publishes 1,000 QoS 1
messages (3,000 readings) at 100 messages/s; the readings stored are compared with those published
by count and checksum (tests/utils/load.py).

- A bridge killed for good: Mosquitto keeps dealing its session a share of the messages, so the
  readings stall short of the total; the API's `quantrac_bridge_stranded{client_id}` rises; then
  `quantrac bridge drain <id>`, run as another process while the other bridge runs, forwards the
  session's queue and ends the session; every reading is stored exactly once and the metric falls.
- A scale-down from two bridges to one: SIGTERM to a bridge told `QUANTRAC_BRIDGE_ON_STOP=drain`
  unsubscribes, forwards what it holds, ends its session, and every reading is stored exactly once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import psycopg
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from ingest.bridge import has_session
from quantrac.bridge_sessions import forget
from quantrac.db import connect, save_stations
from quantrac.mqtt_accounts import bridge_session_id
from quantrac.settings import Settings
from tests.utils.builders import make_station, payload
from tests.utils.fleet import Fleet, owned_partitions, scrape
from tests.utils.load import Publisher, stored
from tests.utils.poll import wait_for
from tests.utils.ports import free_ports
from tests.utils.processes import NAMESPACE, end_mqtt_session, own_pipeline, publish

pytestmark = pytest.mark.integration

PORTS = dict(zip(("bridge1", "bridge2", "worker1"), free_ports(3), strict=False))
READINGS = 3_000           # 1,000 messages of COD, pH and Flow
RATE = 100.0               # messages per second
LEAVE_AFTER = 300          # messages acknowledged by the broker before a bridge is killed or stopped
STRANDED_AFTER_S = 7.0     # the API's threshold here: bridges beat every 2 s and look alive for 3 beats (6 s)


@pytest.fixture(scope="module")
def own(stack: Settings) -> tuple[Settings, dict[str, str]]:
    settings, env = own_pipeline(stack, "failover")
    return settings.model_copy(update={"bridge_stranded_after_s": STRANDED_AFTER_S}), env


@pytest.fixture(scope="module")
def worker(stack: Settings, own: tuple[Settings, dict[str, str]]) -> Iterator[Fleet]:
    """One worker for the module, owning every readings partition."""
    settings, env = own
    fleet = Fleet(stack.run_dir / "test-logs" / NAMESPACE, PORTS, env, prefix="failover")
    fleet.start("worker1")
    try:
        wait_for(lambda: len(owned_partitions(PORTS["worker1"], settings.readings_topic)) == stack.topic_partitions,
                 timeout=120, interval=0.5, what="the worker to own every readings partition")
        yield fleet
    finally:
        fleet.procs["worker1"].stop()


@pytest.fixture()
def bridges(stack: Settings, own: tuple[Settings, dict[str, str]], worker: Fleet) -> Iterator[Callable[[str], Fleet]]:
    """Start two bridges (new client ids and group) leaving by the given QUANTRAC_BRIDGE_ON_STOP; ready once a
    probe reading went through. Every bridge and session of the test is stopped and ended afterwards."""
    settings, env = own
    fleets: list[Fleet] = []

    def start(on_stop: str) -> Fleet:
        fleet = Fleet(stack.run_dir / "test-logs" / NAMESPACE, PORTS, env, prefix="failover")
        fleets.append(fleet)
        for name in ("bridge1", "bridge2"):
            fleet.start(name, QUANTRAC_BRIDGE_HEARTBEAT_S="2", QUANTRAC_BRIDGE_ON_STOP=on_stop)
        probe = make_station()
        with connect(settings.pg_dsn) as conn:
            save_stations(conn, {probe.id: probe})

            def through() -> bool:
                for p in fleet.procs.values():
                    assert p.alive(), f"{p.name} exited with {p.proc.returncode}:\n{p.tail()}"
                connected = all(scrape(PORTS[b]).get(("quantrac_bridge_mqtt_connected", frozenset())) == 1
                                for b in ("bridge1", "bridge2"))
                if connected:
                    publish(stack, probe.id, payload(COD=10.0))
                return connected and stored(conn, probe.id)[0] > 0
            try:
                wait_for(through, timeout=90, interval=1.0, what="both bridges subscribed and a probe reading stored")
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{fleet.tails()}") from None
        return fleet

    try:
        yield start
    finally:
        with connect(settings.pg_dsn) as conn:
            for fleet in fleets:
                for name, p in fleet.procs.items():
                    p.stop()
                    end_mqtt_session(stack, fleet.client_id(name))
                    forget(conn, fleet.client_id(name))


@pytest.fixture()
def api_metrics(own: tuple[Settings, dict[str, str]]) -> Iterator[Callable[[], dict[tuple[str, str], float]]]:
    """The API over the test's database; returns its bridge-session series as {(metric, client_id): value}."""
    from api.auth import create_key
    from api.main import create_app
    settings, _env = own
    with connect(settings.pg_dsn) as conn:
        key, _ = create_key(conn, "failover-test", "admin", "tests")
    with TestClient(create_app(settings), headers={"X-API-Key": key}) as client:
        def read() -> dict[tuple[str, str], float]:
            response = client.get("/metrics")
            assert response.status_code == 200, response.text
            return {(s.name, s.labels["client_id"]): s.value for f in text_string_to_metric_families(response.text)
                    for s in f.samples if s.name in ("quantrac_bridge_stranded", "quantrac_bridge_silent_seconds")}
        yield read


def start_load(settings: Settings) -> tuple[Publisher, threading.Thread]:
    station = make_station()
    with connect(settings.pg_dsn) as conn:
        save_stations(conn, {station.id: station})
    gateway = Publisher(settings, station.id, count=READINGS, rate=RATE)
    thread = threading.Thread(target=gateway.run, name="failover-gateway", daemon=True)
    thread.start()
    wait_for(lambda: gateway.acked >= LEAVE_AFTER or gateway.done.is_set(), timeout=60, what=f"{LEAVE_AFTER} messages published")
    assert not gateway.done.is_set(), "the load ended before the bridge left: not under load"
    return gateway, thread


def quantrac(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """A quantrac command in another process, as an operator would run it."""
    return subprocess.run([sys.executable, "-m", "cli", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **env})


def session_exists(settings: Settings, client_id: str) -> bool:
    """Whether the broker holds a session for the bridge named client_id (asked without creating one)."""
    return has_session(settings, bridge_session_id(settings, client_id))


def wait_all_stored(settings: Settings, gateway: Publisher, fleet: Fleet, timeout: float = 120) -> None:
    with psycopg.connect(settings.pg_dsn, autocommit=True) as conn:
        try:
            wait_for(lambda: stored(conn, gateway.station_id)[0] >= gateway.count, timeout=timeout, interval=0.5,
                     what=f"all {gateway.count} readings stored")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; stored {stored(conn, gateway.station_id)[0]}\n{fleet.tails()}") from None
        assert stored(conn, gateway.station_id) == gateway.expected(), "count, sum of values and key digest"


def test_a_killed_bridge_is_reported_stranded_and_drain_stores_its_share_exactly_once(
        stack: Settings, own: tuple[Settings, dict[str, str]], bridges: Callable[[str], Fleet],
        api_metrics: Callable[[], dict[tuple[str, str], float]]) -> None:
    settings, env = own
    fleet = bridges("keep")
    dead, alive = fleet.client_id("bridge2"), fleet.client_id("bridge1")
    assert api_metrics().get(("quantrac_bridge_stranded", dead)) == 0
    gateway, thread = start_load(settings)

    victim = fleet.procs["bridge2"]
    os.kill(victim.proc.pid, signal.SIGKILL)
    victim.proc.wait(10)
    wait_for(lambda: api_metrics().get(("quantrac_bridge_stranded", dead)) == 1, timeout=30, interval=0.5,
             what=f"the API to report {dead} stranded")
    assert api_metrics()[("quantrac_bridge_stranded", alive)] == 0
    thread.join(timeout=60)
    assert gateway.done.is_set() and not thread.is_alive(), "the gateway could not publish everything"
    with psycopg.connect(settings.pg_dsn, autocommit=True) as conn:
        def caught_up() -> bool:
            bridge, work = scrape(PORTS["bridge1"]), scrape(PORTS["worker1"])
            lag = [v for (name, _), v in work.items() if name == "quantrac_worker_consumer_lag"]
            return (bool(lag) and sum(lag) == 0 and bridge.get(("quantrac_bridge_messages_acked_total", frozenset()), 0)
                    >= bridge.get(("quantrac_bridge_messages_received_total", frozenset()), 1))
        wait_for(caught_up, timeout=30, interval=0.5, what="the surviving bridge and the worker to have handled all they got")
        stranded_readings = gateway.count - stored(conn, gateway.station_id)[0]
    assert stranded_readings > 0, "the killed bridge's session should hold its share of the messages"

    # A small receive maximum keeps most of the session's queue behind the in-flight window, so the
    # drain's end marker must come back after all of it (the broker's order is what the drain relies on).
    began = time.monotonic()
    done = quantrac(["bridge", "drain", dead], {**env, "QUANTRAC_BRIDGE_MAX_INFLIGHT": "20"})
    drain_s = time.monotonic() - began
    assert done.returncode == 0, done.stdout + done.stderr
    assert "session found" in done.stdout and "session ended" in done.stdout, done.stdout
    assert "bridge.drain_after_marker" not in done.stdout + done.stderr, "the broker delivered the queue in order"

    wait_all_stored(settings, gateway, fleet)
    assert victim.proc.returncode == -signal.SIGKILL and not victim.alive(), "the killed bridge was never restarted"
    assert not session_exists(stack, dead), "the drain ended the session"
    wait_for(lambda: ("quantrac_bridge_stranded", dead) not in api_metrics(), timeout=10, what="the stranded series to go")
    assert api_metrics()[("quantrac_bridge_stranded", alive)] == 0

    again = quantrac(["bridge", "drain", dead], env)
    assert again.returncode == 0 and "already gone" in again.stdout, again.stdout + again.stderr

    survivor = fleet.procs["bridge1"]  # QUANTRAC_BRIDGE_ON_STOP=keep: a restart, not a scale-down
    survivor.proc.send_signal(signal.SIGTERM)
    assert survivor.proc.wait(40) == 0 and "bridge.session_kept" in survivor.tail(40), survivor.tail(40)
    with psycopg.connect(settings.pg_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT state FROM bridge_sessions WHERE client_id = %s", (alive,)).fetchone() == ("stopped",)
    assert session_exists(stack, alive), "a bridge stopped to restart keeps its session"
    print(f"\ndrain: {stranded_readings} readings waited in the killed bridge's session; "
          f"{gateway.count} of {gateway.count} stored once (checksums equal); the drain command took {drain_s:.1f} s "
          f"and said: {done.stdout.strip()}")


def test_sigterm_scales_down_from_two_bridges_to_one_storing_every_reading_once(
        stack: Settings, own: tuple[Settings, dict[str, str]], bridges: Callable[[str], Fleet]) -> None:
    settings, env = own
    fleet = bridges("drain")
    leaving = fleet.client_id("bridge2")
    refused = quantrac(["bridge", "drain", fleet.client_id("bridge1")], env)
    assert refused.returncode == 2 and "looks alive" in refused.stderr, refused.stdout + refused.stderr

    gateway, thread = start_load(settings)
    began = time.monotonic()
    fleet.procs["bridge2"].proc.send_signal(signal.SIGTERM)
    assert fleet.procs["bridge2"].proc.wait(40) == 0, fleet.procs["bridge2"].tail()
    stop_s = time.monotonic() - began
    assert "bridge.drained" in fleet.procs["bridge2"].tail(40), fleet.procs["bridge2"].tail(40)
    thread.join(timeout=60)
    assert gateway.done.is_set() and not thread.is_alive(), "the gateway could not publish everything"

    wait_all_stored(settings, gateway, fleet)
    assert not session_exists(stack, leaving), "the stopped bridge ended its session"
    with psycopg.connect(settings.pg_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM bridge_sessions WHERE client_id = %s", (leaving,)).fetchone() == (0,)
    print(f"\nscale-down: the bridge drained and exited {stop_s:.1f} s after SIGTERM; "
          f"{gateway.count} of {gateway.count} readings stored once (checksums equal)")
