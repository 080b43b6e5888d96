"""Helpers of the integration tests: quantrac commands as subprocesses, publishing like a gateway, counting
what was stored, a test's own pipeline (database, topics, MQTT session). The session fixtures in
tests/conftest.py use them; tests import them from here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg

from quantrac.db import connect, migrate
from quantrac.settings import Settings
from tests.utils.builders import topic

NAMESPACE = os.environ.get("QUANTRAC_TEST_NAMESPACE", "test")
"""Names the test session's database, topics, consumer group and MQTT session, so sessions run side by side."""


class Process:
    """A quantrac command run as a real subprocess, its output in a log file under the run folder."""

    def __init__(self, name: str, args: list[str], log_dir: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        log_dir.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self._log_start = self._log.tell()
        self.proc = subprocess.Popen([sys.executable, "-m", "cli", *args], stdout=self._log,
                                     stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        """What this run has logged so far; the log file is appended to and may hold earlier runs'."""
        with self.log_path.open("rb") as log:
            log.seek(self._log_start)
            return log.read().decode(errors="replace")

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
    """Publish one message like a gateway and wait for the broker's PUBACK.

    It logs in as the station's gateway, else as the test account (QUANTRAC_MQTT_TEST_ACCOUNT),
    both generated under the run_dir by `stack up` / `quantrac gateways sync`.
    """
    from quantrac.mqtt_accounts import credential_for

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    credential = credential_for(settings, station_id)
    if credential is not None:
        client.username_pw_set(credential.username, credential.password)
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


def end_mqtt_session(settings: Settings, client_id: str) -> None:
    """Delete the persistent session of a bridge a test started and stopped (`ingest.bridge.end_session`)."""
    from ingest.bridge import end_session

    end_session(settings, client_id)


def own_pipeline(stack: Settings, tag: str, *, create_topics: bool = True) -> tuple[Settings, dict[str, str]]:
    """Settings and subprocess environment for a test that runs its own bridge/worker processes.

    Own database, topics, consumer group and MQTT client id, so they neither join the session
    `pipeline`'s consumer group, take over its MQTT session, nor race its worker to store the
    same readings (both bridges receive every MQTT message; the session's dead-letters the
    stations it does not know). Idempotent: call it as often as needed. `create_topics=False` leaves the
    topics to the caller (tests/utils/fresh_worker.py names its own for every run).
    """
    from psycopg import sql

    from quantrac.kafka_topics import ensure_topics

    own = stack.model_copy(update={
        "pg_database": f"{stack.pg_database}_{tag}",
        "readings_topic": f"quantrac.{NAMESPACE}.{tag}.readings", "deadletter_topic": f"quantrac.{NAMESPACE}.{tag}.readings.deadletter",
        "alerts_topic": f"quantrac.{NAMESPACE}.{tag}.alerts", "worker_id": f"quantrac-worker-{NAMESPACE}-{tag}",
        "mqtt_bridge_client_id": f"quantrac-bridge-{NAMESPACE}-{tag}",
    })
    if own.pg_database not in _own_databases:
        admin = stack.pg_dsn.replace(f"dbname={stack.pg_database}", "dbname=postgres")
        with psycopg.connect(admin, autocommit=True) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (own.pg_database,)).fetchone() is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(own.pg_database)))
        with connect(own.pg_dsn) as conn:
            migrate(conn)
        if create_topics:
            ensure_topics(own)
        _own_databases.add(own.pg_database)
    env = {"QUANTRAC_PG_DATABASE": own.pg_database, "QUANTRAC_READINGS_TOPIC": own.readings_topic,
           "QUANTRAC_DEADLETTER_TOPIC": own.deadletter_topic, "QUANTRAC_ALERTS_TOPIC": own.alerts_topic,
           "QUANTRAC_WORKER_ID": own.worker_id, "QUANTRAC_MQTT_BRIDGE_CLIENT_ID": own.mqtt_bridge_client_id}
    return own, env


_own_databases: set[str] = set()
