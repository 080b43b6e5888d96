"""Session fixtures: the real local services, started once per test session (or reused when healthy).

Unit tests never touch these fixtures, so `pytest tests/test_payload.py` runs without services.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import paho.mqtt.client as mqtt
import psycopg
import pytest

# Tests share the services with `make run` but not its data: their own database, topics,
# consumer group and MQTT session, named after QUANTRAC_TEST_NAMESPACE (default "test") so
# that several test sessions can run side by side. Their processes reload the registry quickly.
_ns = os.environ.get("QUANTRAC_TEST_NAMESPACE", "test")
os.environ.setdefault("QUANTRAC_PG_DATABASE", f"quantrac_{_ns}")
os.environ.setdefault("QUANTRAC_READINGS_TOPIC", f"quantrac.{_ns}.readings")
os.environ.setdefault("QUANTRAC_DEADLETTER_TOPIC", f"quantrac.{_ns}.readings.deadletter")
os.environ.setdefault("QUANTRAC_ALERTS_TOPIC", f"quantrac.{_ns}.alerts")
os.environ.setdefault("QUANTRAC_MQTT_BRIDGE_CLIENT_ID", f"quantrac-bridge-{_ns}")
os.environ.setdefault("QUANTRAC_WORKER_ID", f"quantrac-worker-{_ns}")
os.environ.setdefault("QUANTRAC_WORKER_BATCH_LATENCY_S", "0.2")
os.environ.setdefault("QUANTRAC_REGISTRY_REFRESH_S", "2")
os.environ.setdefault("QUANTRAC_REGISTRY_MISS_RELOAD_S", "0")

from quantrac import stack as local_stack  # noqa: E402
from quantrac.db import connect, migrate, save_stations  # noqa: E402
from quantrac.registry import load_registry  # noqa: E402
from quantrac.settings import Settings, get_settings  # noqa: E402
from tests.utils.builders import make_station, payload, topic  # noqa: E402
from tests.utils.poll import wait_for  # noqa: E402


@pytest.fixture(scope="session")
def settings() -> Settings:
    return get_settings()


@pytest.fixture(scope="session")
def stack(settings: Settings) -> Iterator[Settings]:
    """Mosquitto, Kafka and PostgreSQL up, schema migrated and the registry seeded.

    Services that were already healthy are reused and left running; those this session
    started are stopped at its end.
    """
    already = {name for name, found in local_stack.status(settings).items() if found.healthy}
    local_stack.up(settings)
    with connect(settings.pg_dsn) as conn:
        migrate(conn)
        save_stations(conn, load_registry(settings.registry_file, settings.limits_dir))
    yield settings
    started = [name for name in local_stack.SERVICE_NAMES if name not in already]
    if started:
        local_stack.down(settings, only=started)


@pytest.fixture(scope="session")
def api(stack: Settings) -> Iterator["TestClient"]:
    """The API in-process over the session's database, with a credential allowed to do everything.

    Every API test goes through this client (or `api_as(role)` once roles exist), so that adding
    authentication changes one fixture, not every test.
    """
    from fastapi.testclient import TestClient

    from api.main import create_app
    with TestClient(create_app(stack)) as client:
        yield client


@pytest.fixture()
def db(stack: Settings) -> Iterator[psycopg.Connection]:
    with connect(stack.pg_dsn) as conn:
        yield conn


class Process:
    """A quantrac command run as a real subprocess, its output in a log file under the run folder."""

    def __init__(self, name: str, args: list[str], log_dir: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        log_dir.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "quantrac.cli", *args], stdout=self._log,
                                     stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 20.0) -> int:
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode


def publish(settings: Settings, station_id: str, body: bytes, *, qos: int = 1) -> None:
    """Publish one message like a gateway and wait for the broker's PUBACK."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    client.connect(settings.mqtt_host, settings.mqtt_port)
    client.loop_start()
    try:
        client.publish(topic(station_id), body, qos=qos).wait_for_publish(timeout=10)
    finally:
        client.disconnect()
        client.loop_stop()


def stored_count(conn: psycopg.Connection, station_id: str) -> int:
    row = conn.execute("SELECT count(*) FROM readings WHERE station_id = %s", (station_id,)).fetchone()
    return int(row[0]) if row else 0


@pytest.fixture(scope="session")
def pipeline(stack: Settings) -> Iterator[dict[str, Process]]:
    """The bridge and the worker as subprocesses, ready once a probe reading has reached PostgreSQL."""
    log_dir = stack.run_dir / "test-logs" / _ns
    procs = {"bridge": Process("bridge", ["bridge"], log_dir), "worker": Process("worker", ["worker"], log_dir)}
    probe = make_station()
    with connect(stack.pg_dsn) as conn:
        save_stations(conn, {probe.id: probe})

        def probe_stored() -> bool:
            for p in procs.values():
                assert p.alive(), f"{p.name} exited with {p.proc.returncode}:\n{p.tail()}"
            publish(stack, probe.id, payload(COD=10.0))
            return stored_count(conn, probe.id) > 0

        try:
            wait_for(probe_stored, timeout=90, interval=1.0, what="a probe reading to travel MQTT → Kafka → PostgreSQL")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- bridge ---\n{procs['bridge'].tail()}\n--- worker ---\n{procs['worker'].tail()}") from None
    yield procs
    for p in procs.values():
        p.stop()
