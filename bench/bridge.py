"""Bridge throughput: MQTT → (validate, acks=all idempotent produce, PUBACK after Kafka) → Kafka.

On a PRIVATE stack (run_dir .run/private-ingest-bench, ports 21220-21223), for each contender:
N QoS 1 messages (one station message of 8 readings each, the seed's HD-DAIAN-WW01) are queued in
the broker for a persistent session while the consumer is away, then the consumer starts and the
clock runs until Kafka holds N records. That measures draining speed, independent of the publisher.

Contenders, same payloads, same broker, same run:
- `bridge`: `quantrac bridge` (validation, dead letters, per-station accounting, ordered PUBACKs);
- `baseline`: `mosquitto_sub -c -q 1 ... | kcat -P` (no validation; mosquitto_sub acknowledges on receipt,
  so it would lose what the pipe holds on a crash; kcat uses its default acks).

    python bench/bridge.py [--messages 20000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import ProcessSample, quantrac_process, write_result  # noqa: E402

import orjson  # noqa: E402
import paho.mqtt.client as mqtt  # noqa: E402
from kafka import KafkaConsumer, TopicPartition  # noqa: E402
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402

from quantrac import stack  # noqa: E402
from quantrac.db import connect, migrate, save_stations  # noqa: E402
from quantrac.registry import load_registry  # noqa: E402
from quantrac.settings import Settings  # noqa: E402

STATION = "HD-DAIAN-WW01"
SETTINGS = Settings(
    run_dir=REPO / ".run" / "private-ingest-bench", mqtt_port=21220, kafka_bootstrap="127.0.0.1:21221",
    kafka_controller_port=21222, pg_port=21223, pg_database="quantrac_bench_bridge",
    readings_topic="quantrac.benchbridge.readings", deadletter_topic="quantrac.benchbridge.readings.deadletter",
    alerts_topic="quantrac.benchbridge.alerts", mqtt_bridge_client_id="quantrac-bridge-bench", stack_start_timeout_s=180,
)
BASELINE_TOPIC = "quantrac.benchbridge.baseline"
BASELINE_CLIENT = "bench-baseline-sub"


def env() -> dict[str, str]:
    s = SETTINGS
    return {"QUANTRAC_RUN_DIR": str(s.run_dir), "QUANTRAC_MQTT_PORT": str(s.mqtt_port), "QUANTRAC_KAFKA_BOOTSTRAP": s.kafka_bootstrap,
            "QUANTRAC_PG_PORT": str(s.pg_port), "QUANTRAC_PG_DATABASE": s.pg_database, "QUANTRAC_READINGS_TOPIC": s.readings_topic,
            "QUANTRAC_DEADLETTER_TOPIC": s.deadletter_topic, "QUANTRAC_ALERTS_TOPIC": s.alerts_topic,
            "QUANTRAC_MQTT_BRIDGE_CLIENT_ID": s.mqtt_bridge_client_id, "QUANTRAC_LOG_LEVEL": "WARNING",
            "QUANTRAC_BRIDGE_METRICS_PORT": "0"}


def payloads(count: int, parameters: dict[str, str]) -> list[bytes]:
    start = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=1)
    return [orjson.dumps({"ts": (start + timedelta(seconds=i)).isoformat(),
                          "readings": [{"parameter": p, "value": 10.0 + i % 7, "unit": unit, "status": "00"} for p, unit in parameters.items()]})
            for i in range(count)]


def register_session(client_id: str, protocol: int) -> None:
    """Create the persistent subscription the messages will queue in, then leave."""
    if protocol == mqtt.MQTTv5:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        client.connect(SETTINGS.mqtt_host, SETTINGS.mqtt_port, clean_start=False, properties=props)
    else:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol, clean_session=False)
        client.connect(SETTINGS.mqtt_host, SETTINGS.mqtt_port)
    client.loop_start()
    client.subscribe("quantrac/v1/stations/+/readings", qos=1)
    time.sleep(0.5)  # let SUBACK arrive before disconnecting (set-up, not measured)
    client.disconnect()
    client.loop_stop()


def publish_all(bodies: list[bytes]) -> float:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-gateway", protocol=mqtt.MQTTv311)
    client.max_inflight_messages_set(500)
    client.max_queued_messages_set(0)
    client.connect(SETTINGS.mqtt_host, SETTINGS.mqtt_port)
    client.loop_start()
    began = time.monotonic()
    infos = [client.publish(f"quantrac/v1/stations/{STATION}/readings", body, qos=1) for body in bodies]
    for info in infos:
        info.wait_for_publish(timeout=120)
    elapsed = time.monotonic() - began
    client.disconnect()
    client.loop_stop()
    return elapsed


def records(consumer: KafkaConsumer, topic: str) -> int:
    parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
    return sum(consumer.end_offsets(parts).values()) if parts else 0


def drain(topic: str, want: int, proc: subprocess.Popen[bytes], timeout: float = 600) -> dict[str, float]:
    """Seconds until Kafka holds `want` records, or until the count stalls for 15 s (then the shortfall is reported)."""
    consumer = KafkaConsumer(bootstrap_servers=SETTINGS.kafka_bootstrap)
    sample = ProcessSample(proc.pid).start()
    began = time.monotonic()
    last, last_change = 0, began
    try:
        while (got := records(consumer, topic)) < want:
            now = time.monotonic()
            if got != last:
                last, last_change = got, now
            if proc.poll() is not None:
                raise RuntimeError(f"the consumer exited with {proc.returncode}")
            if now - last_change > 15 or now - began > timeout:
                break
            time.sleep(0.2)  # poll interval of the measurement
        elapsed = (time.monotonic() if got >= want else last_change) - began
    finally:
        consumer.close()
    return {"seconds": round(elapsed, 2), "records": got, "missing": max(0, want - got), **sample.usage()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=20_000)
    args = parser.parse_args()
    n = args.messages

    stack.down(SETTINGS)
    for child in SETTINGS.run_dir.glob("*"):
        if child.name != "kafka-libs":
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    stack.up(SETTINGS)
    try:
        stations = load_registry(SETTINGS.registry_file, SETTINGS.limits_dir)
        with connect(SETTINGS.pg_dsn) as conn:
            migrate(conn)
            save_stations(conn, stations)
        parameters = {p.symbol: p.unit for p in stations[STATION].parameters.values()}
        bodies = payloads(n, parameters)
        readings_per_message = len(parameters)
        results: dict[str, dict[str, float]] = {}
        logs = SETTINGS.run_dir / "bench-logs"

        # quantrac bridge
        register_session(SETTINGS.mqtt_bridge_client_id, mqtt.MQTTv5)
        publish_s = publish_all(bodies)
        bridge = quantrac_process(["bridge"], env(), logs / "bridge.log")
        try:
            results["bridge"] = drain(SETTINGS.readings_topic, n, bridge)
        finally:
            bridge.terminate()
            bridge.wait(30)

        # baseline: mosquitto_sub | kcat
        register_session(BASELINE_CLIENT, mqtt.MQTTv311)
        publish_all(bodies)
        # stdbuf: mosquitto_sub's stdout is block-buffered into a pipe, which would hold the last messages back.
        sub = subprocess.Popen(["stdbuf", "-oL", "mosquitto_sub", "-h", SETTINGS.mqtt_host, "-p", str(SETTINGS.mqtt_port), "-c", "-i", BASELINE_CLIENT,
                                "-q", "1", "-t", "quantrac/v1/stations/+/readings"], stdout=subprocess.PIPE)
        kcat = subprocess.Popen(["kcat", "-P", "-b", SETTINGS.kafka_bootstrap, "-t", BASELINE_TOPIC], stdin=sub.stdout)
        assert sub.stdout is not None
        sub.stdout.close()
        try:
            results["baseline"] = drain(BASELINE_TOPIC, n, kcat)
        finally:
            sub.terminate()
            sub.wait(10)
            kcat.wait(30)

        for r in results.values():
            delivered = min(n, r["records"])
            r["messages_per_s"] = round(delivered / r["seconds"], 1)
            r["readings_per_s"] = round(delivered * readings_per_message / r["seconds"], 1)
        write_result("bridge", {
            "method": "N QoS 1 messages queued in Mosquitto for a persistent session, then drained into Kafka; "
                      "time until Kafka holds N records",
            "messages": n, "readings_per_message": readings_per_message, "payload_bytes": len(bodies[0]),
            "publish_seconds": round(publish_s, 2), "load_average_at_end": os.getloadavg(),
            "bridge": results["bridge"], "baseline_mosquitto_sub_kcat": results["baseline"],
            "bridge_vs_baseline": round(results["bridge"]["readings_per_s"] / results["baseline"]["readings_per_s"], 3),
        })
    finally:
        stack.down(SETTINGS)


if __name__ == "__main__":
    main()
