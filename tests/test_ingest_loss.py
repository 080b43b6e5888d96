"""No loss from gateway to PostgreSQL, proven on a PRIVATE stack (own run_dir and ports).

These tests kill the bridge with SIGKILL and stop Kafka, so they never touch the shared stack:
the module starts its own Mosquitto, Kafka and PostgreSQL under .run/private-ingest (on ports
taken free at run time) and stops them at its end. What was published is compared with what reached Kafka and what
PostgreSQL holds, by count and by checksum (tests/utils/load.py).
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
from collections.abc import Iterator
from datetime import datetime

import orjson
import pytest
from kafka import KafkaConsumer, TopicPartition

from ingest.producer import CONSUMER_OPTIONS
from quantrac.db import connect, migrate, save_stations
from quantrac.settings import REPO_ROOT, Settings
from stack import services as local_stack
from tests.utils.builders import make_station, payload
from tests.utils.load import Publisher, digest, stored
from tests.utils.poll import wait_for
from tests.utils.ports import free_ports
from tests.utils.processes import Process, publish

pytestmark = pytest.mark.integration

PORTS = dict(zip(("mqtt", "kafka", "controller", "pg", "bridge_metrics"), free_ports(5), strict=False))


def private_env(settings: Settings) -> dict[str, str]:
    """Environment that points a quantrac subprocess at the private stack."""
    return {
        "QUANTRAC_RUN_DIR": str(settings.run_dir),
        "QUANTRAC_MQTT_PORT": str(settings.mqtt_port),
        "QUANTRAC_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "QUANTRAC_KAFKA_CONTROLLER_PORT": str(settings.kafka_controller_port),
        "QUANTRAC_PG_PORT": str(settings.pg_port),
        "QUANTRAC_PG_DATABASE": settings.pg_database,
        "QUANTRAC_READINGS_TOPIC": settings.readings_topic,
        "QUANTRAC_DEADLETTER_TOPIC": settings.deadletter_topic,
        "QUANTRAC_ALERTS_TOPIC": settings.alerts_topic,
        "QUANTRAC_MQTT_BRIDGE_CLIENT_ID": settings.mqtt_bridge_client_id,
        "QUANTRAC_WORKER_ID": settings.worker_id,
        "QUANTRAC_BRIDGE_METRICS_PORT": str(PORTS["bridge_metrics"]),
    }


@pytest.fixture(scope="module")
def private_stack() -> Iterator[Settings]:
    settings = Settings(
        run_dir=REPO_ROOT / ".run" / "private-ingest",
        mqtt_port=PORTS["mqtt"], kafka_bootstrap=f"127.0.0.1:{PORTS['kafka']}",
        kafka_controller_port=PORTS["controller"], pg_port=PORTS["pg"], pg_database="quantrac_private_ingest",
        readings_topic="quantrac.pingest.readings", deadletter_topic="quantrac.pingest.readings.deadletter",
        alerts_topic="quantrac.pingest.alerts", mqtt_bridge_client_id="quantrac-bridge-pingest",
        worker_id="quantrac-worker-pingest", stack_start_timeout_s=120,
    )
    if not any(found.healthy for found in local_stack.status(settings).values()):
        # Start empty (keeping only the broker jars): a previous run's queued MQTT messages and
        # unconsumed Kafka records would otherwise be worked through first.
        for child in settings.run_dir.glob("*"):
            if child.name != "kafka-libs":
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    try:
        local_stack.up(settings)
        with connect(settings.pg_dsn) as conn:
            migrate(conn)
        yield settings
    finally:
        local_stack.down(settings)


def kafka_records(settings: Settings) -> int:
    """Records in the readings topic (sum of end offsets)."""
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, **CONSUMER_OPTIONS)
    try:
        parts = [TopicPartition(settings.readings_topic, p) for p in consumer.partitions_for_topic(settings.readings_topic) or ()]
        return sum(consumer.end_offsets(parts).values())
    finally:
        consumer.close()


def kafka_readings(settings: Settings, station_id: str) -> tuple[int, set[tuple[str, str, datetime]]]:
    """(records of readings for the station, distinct reading keys) in the readings topic, read from the start."""
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, **CONSUMER_OPTIONS, enable_auto_commit=False, consumer_timeout_ms=2000)
    try:
        parts = [TopicPartition(settings.readings_topic, p) for p in consumer.partitions_for_topic(settings.readings_topic) or ()]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        end = consumer.end_offsets(parts)
        total, keys = 0, set()
        while any(consumer.position(p) < end[p] for p in parts):
            for records in consumer.poll(timeout_ms=1000, max_records=5000).values():
                for record in records:
                    body = orjson.loads(record.value)
                    if body["station_id"] != station_id:
                        continue
                    for r in body["readings"]:
                        total += 1
                        keys.add((station_id, r["parameter"], datetime.fromisoformat(r["ts"])))
        return total, keys
    finally:
        consumer.close()


@pytest.fixture()
def pipeline_procs(private_stack: Settings) -> Iterator[dict[str, Process]]:
    """Bridge and worker on the private stack, ready once a probe reading reached PostgreSQL.

    Waiting for the probe matters: MQTT keeps messages only for existing subscriptions, so a
    gateway publishing before the bridge's first SUBSCRIBE ever is not queued anywhere.
    """
    log_dir = private_stack.run_dir / "test-logs"
    env = private_env(private_stack)
    procs = {"bridge": Process("bridge", ["bridge"], log_dir, env), "worker": Process("worker", ["worker"], log_dir, env)}
    probe = _register(private_stack)
    try:
        with connect(private_stack.pg_dsn) as conn:
            def probe_stored() -> bool:
                for p in procs.values():
                    assert p.alive(), f"{p.name} exited with {p.proc.returncode}:\n{p.tail()}"
                publish(private_stack, probe, payload(COD=10.0))
                return stored(conn, probe)[0] > 0
            wait_for(probe_stored, timeout=120, interval=1.0, what="a probe reading to reach the private PostgreSQL")
        yield procs
    finally:
        for p in procs.values():
            p.stop()


def _register(settings: Settings) -> str:
    station = make_station()
    with connect(settings.pg_dsn) as conn:
        save_stations(conn, {station.id: station})
    return station.id


def _wait_stored(settings: Settings, station_id: str, want: int, procs: dict[str, Process], timeout: float) -> None:
    with connect(settings.pg_dsn) as conn:
        def done() -> bool:
            for p in procs.values():
                assert p.alive(), f"{p.name} exited with {p.proc.returncode}:\n{p.tail()}"
            return stored(conn, station_id)[0] >= want
        try:
            wait_for(done, timeout=timeout, interval=1.0, what=f"{want} readings of {station_id} in PostgreSQL")
        except AssertionError as exc:
            got = stored(conn, station_id)[0]
            raise AssertionError(f"{exc} (stored {got})\n--- bridge ---\n{procs['bridge'].tail()}\n--- worker ---\n{procs['worker'].tail()}") from None


@pytest.mark.timeout(1200)
def test_bridge_killed_mid_stream_loses_nothing(private_stack: Settings, pipeline_procs: dict[str, Process]) -> None:
    station_id = _register(private_stack)
    before = kafka_records(private_stack)
    gateway = Publisher(private_stack, station_id, count=10_002, rate=250.0)
    sender = threading.Thread(target=gateway.run, daemon=True)
    sender.start()
    wait_for(lambda: kafka_records(private_stack) - before >= 300, timeout=120, interval=0.1,
             what="the bridge to be mid-stream (300 messages in Kafka)")
    bridge = pipeline_procs["bridge"]
    os.kill(bridge.proc.pid, signal.SIGKILL)
    assert not gateway.done.is_set(), "the gateway had finished before the kill: not mid-stream"
    bridge.proc.wait(10)
    sender.join(timeout=180)
    assert not sender.is_alive(), "the gateway could not publish everything (the broker stopped taking messages)"
    pipeline_procs["bridge"] = Process("bridge", ["bridge"], bridge.log_path.parent, private_env(private_stack))

    _wait_stored(private_stack, station_id, gateway.count, pipeline_procs, timeout=600)

    with connect(private_stack.pg_dsn) as conn:
        assert stored(conn, station_id) == gateway.expected()
    in_kafka, keys = kafka_readings(private_stack, station_id)
    assert in_kafka >= gateway.count
    assert digest(sorted(keys)) == gateway.expected()[2]
    print(f"\nkill test: published {gateway.count}, in Kafka {in_kafka} records ({len(keys)} distinct), "
          f"stored {gateway.count} (checksums equal)")


@pytest.mark.timeout(1200)
def test_kafka_down_20s_under_load_loses_nothing_and_bridge_recovers(private_stack: Settings,
                                                                       pipeline_procs: dict[str, Process]) -> None:
    station_id = _register(private_stack)
    rate = 30.0  # messages (of 3 readings) per second
    gateway = Publisher(private_stack, station_id, count=3_000, rate=rate)
    sender = threading.Thread(target=gateway.run, daemon=True)
    sender.start()
    with connect(private_stack.pg_dsn) as conn:
        wait_for(lambda: stored(conn, station_id)[0] >= 90, timeout=120, interval=0.2, what="readings flowing (90 stored)")
    bridge_pid = pipeline_procs["bridge"].proc.pid

    local_stack.down(private_stack, only=["kafka"])
    published_at_stop = gateway.acked
    # Hold Kafka down while the gateway publishes 20 s worth of messages at its paced rate.
    wait_for(lambda: gateway.acked - published_at_stop >= 20 * rate, timeout=60, interval=0.5,
             what="20 s of messages published while Kafka is down")
    assert not gateway.done.is_set(), "the load ended before Kafka came back"
    local_stack.up(private_stack, only=["kafka"])

    sender.join(timeout=120)
    assert not sender.is_alive()
    _wait_stored(private_stack, station_id, gateway.count, pipeline_procs, timeout=600)

    assert pipeline_procs["bridge"].proc.pid == bridge_pid and pipeline_procs["bridge"].alive()
    with connect(private_stack.pg_dsn) as conn:
        assert stored(conn, station_id) == gateway.expected()
    in_kafka, keys = kafka_readings(private_stack, station_id)
    assert in_kafka >= gateway.count and len(keys) == gateway.count
    print(f"\nkafka-down test: published {gateway.count}, in Kafka {in_kafka} records, stored {gateway.count}")
