"""Bridge throughput: MQTT → (validate, acks=all idempotent produce, PUBACK after Kafka) → Kafka.

On a PRIVATE stack (run_dir .run/private-perf-bench, ports 21400-21403), for each contender:
N QoS 1 messages (one station message of 8 readings each, the seed's HD-DAIAN-WW01) are queued in
the broker for a persistent session while the consumer is away, then the consumer starts and the
clock runs until Kafka holds the N messages' readings. That measures draining speed, independent of the
publisher. The bridge joins a station's waiting messages into fewer records, so the readings are
counted (by reading the topic once its end offsets have been still for `QUIET_S`, so the count costs
nothing while a contender drains); the clock stops when the last record arrived.

Contenders, same payloads, same broker, same run:
- `bridge`: `quantrac bridge` (validation, dead letters, per-station accounting, ordered PUBACKs);
- `two_bridges`: two `quantrac bridge` processes in one MQTT shared-subscription group
  (`QUANTRAC_MQTT_SHARED_GROUP`), the backlog queued in their two sessions, combined rate;
- `baseline`: `mosquitto_sub -c -q 1 ... | kcat -P` (no validation; mosquitto_sub acknowledges on receipt,
  so it would lose what the pipe holds on a crash; kcat uses its default acks).

    python bench/bridge.py [--messages 20000] [--keep-stack] [--profile]

`--keep-stack` leaves the private stack running for the next run (each run uses its own topics and
MQTT sessions, so runs do not see each other's records); `--profile` records the bridge with py-spy
(`--idle`, so waiting shows) and adds its top frames to the result.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import orjson  # noqa: E402
import paho.mqtt.client as mqtt  # noqa: E402
from kafka import KafkaConsumer, TopicPartition  # noqa: E402
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402

from bench.common import (  # noqa: E402
    IDLE_FRAMES,
    ProcessSample,
    mqtt_logins,
    prepare_private_stack,
    private_settings,
    quantrac_process,
    settings_env,
    start_profile,
    stop_profile,
    write_result,
)
from ingest.bridge import end_session, subscription_for  # noqa: E402
from ingest.payload import SUBSCRIPTION  # noqa: E402
from ingest.producer import CONSUMER_OPTIONS  # noqa: E402
from ingest.simulator import PUBLISH_MAX_INFLIGHT  # noqa: E402
from quantrac.db import connect, migrate, save_stations  # noqa: E402
from quantrac.kafka_topics import ensure_topics  # noqa: E402
from quantrac.mqtt_accounts import bridge_session_id  # noqa: E402
from quantrac.registry import load_registry  # noqa: E402
from stack import services as stack  # noqa: E402

STATION = "HD-DAIAN-WW01"
SETTINGS = private_settings("benchbridge")
RUN = SETTINGS.readings_topic.split(".")[1]
BASELINE_TOPIC = f"quantrac.{RUN}.baseline"
BASELINE_CLIENT = f"bench-baseline-sub-{RUN}"


def env() -> dict[str, str]:
    return settings_env(SETTINGS)


def payloads(count: int, parameters: dict[str, str]) -> list[bytes]:
    start = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=1)
    return [orjson.dumps({"ts": (start + timedelta(seconds=i)).isoformat(),
                          "readings": [{"parameter": p, "value": 10.0 + i % 7, "unit": unit, "status": "00"} for p, unit in parameters.items()]})
            for i in range(count)]


def register_session(client_id: str, protocol: mqtt.MQTTProtocolVersion, login: tuple[str, str], topic_filter: str = SUBSCRIPTION) -> None:
    """Create the persistent subscription the messages will queue in, then leave."""
    if protocol == mqtt.MQTTv5:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol)
        client.username_pw_set(*login)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        client.connect(SETTINGS.mqtt_host, SETTINGS.mqtt_port, clean_start=False, properties=props)
    else:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol, clean_session=False)
        client.username_pw_set(*login)
        client.connect(SETTINGS.mqtt_host, SETTINGS.mqtt_port)
    client.loop_start()
    client.subscribe(topic_filter, qos=1)
    time.sleep(0.5)  # let SUBACK arrive before disconnecting (set-up, not measured)
    client.disconnect()
    client.loop_stop()


def publish_all(bodies: list[bytes], login: tuple[str, str]) -> float:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-gateway", protocol=mqtt.MQTTv311)
    client.username_pw_set(*login)
    client.max_inflight_messages_set(PUBLISH_MAX_INFLIGHT)
    client.max_queued_messages_set(0)
    client.connect(SETTINGS.mqtt_host, SETTINGS.mqtt_port)
    client.loop_start()
    began = time.monotonic()
    infos = [client.publish(f"quantrac/v1/stations/{STATION}/readings", body, qos=1) for body in bodies]
    for info in infos:
        info.wait_for_publish(timeout=120)
        if not info.is_published():
            raise SystemExit(f"the broker did not acknowledge the benchmark's messages within 120 s (rc {info.rc}); "
                             f"see {SETTINGS.run_dir / 'logs' / 'mosquitto.log'}")
    elapsed = time.monotonic() - began
    client.disconnect()
    client.loop_stop()
    return elapsed


def records(consumer: KafkaConsumer, topic: str) -> int:
    return sum(end_offsets(consumer, topic).values())


def end_offsets(consumer: KafkaConsumer, topic: str) -> dict[TopicPartition, int]:
    parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
    return consumer.end_offsets(parts) if parts else {}


QUIET_S = 0.6
"""The readings are counted once the topic's end offsets have not moved for this long."""


class ReadingCounter:
    """Counts the readings of a topic's records (a bridge record or a gateway payload: its `readings` list)."""

    def __init__(self, topic: str) -> None:
        self.topic, self.readings = topic, 0
        self.consumer = KafkaConsumer(bootstrap_servers=SETTINGS.kafka_bootstrap, **CONSUMER_OPTIONS)
        self.assigned: set[TopicPartition] = set()

    def count_to(self, ends: dict[TopicPartition, int]) -> int:
        """Read up to `ends`; the readings counted so far."""
        if set(ends) != self.assigned:
            self.assigned = set(ends)
            self.consumer.assign(list(ends))
            self.consumer.seek_to_beginning()
            self.readings = 0
        while any(self.consumer.position(tp) < end for tp, end in ends.items()):
            for batch in self.consumer.poll(timeout_ms=1000).values():
                self.readings += sum(len(orjson.loads(record.value)["readings"]) for record in batch)
        return self.readings

    def close(self) -> None:
        self.consumer.close()


def drain(topic: str, want: int, readings_per_message: int, *procs: subprocess.Popen[bytes],
          timeout: float = 600) -> dict[str, float]:
    """Seconds until Kafka holds the readings of `want` messages, or until the topic stalls for 15 s (then the
    shortfall is reported).

    CPU (`cpu_cores`) and memory are summed over `procs`."""
    consumer = KafkaConsumer(bootstrap_servers=SETTINGS.kafka_bootstrap, **CONSUMER_OPTIONS)
    counter = ReadingCounter(topic)
    samples = [ProcessSample(proc.pid).start() for proc in procs]
    began = time.monotonic()
    last, last_change, first_record, readings = 0, began, None, 0
    try:
        while True:
            ends = end_offsets(consumer, topic)
            got, now = sum(ends.values()), time.monotonic()
            if got != last:
                last, last_change = got, now
                first_record = first_record or now
            elif got and now - last_change >= QUIET_S and counter.count_to(ends) >= want * readings_per_message:
                readings = counter.readings
                break
            if (exited := next((p for p in procs if p.poll() is not None), None)) is not None:
                raise RuntimeError(f"the consumer exited with {exited.returncode}")
            if now - last_change > 15 or now - began > timeout:
                readings = counter.count_to(ends)
                break
            time.sleep(0.2)  # poll interval of the measurement
        elapsed = last_change - began
    finally:
        consumer.close()
        counter.close()
    usage = [sample.usage() for sample in samples]
    cpu_cores = sum(u["cpu_cores"] for u in usage)
    messages = readings // readings_per_message
    return {"seconds": round(elapsed, 2), "records": got, "messages": messages, "missing": max(0, want - messages),
            "first_record_after_s": round((first_record or began) - began, 2), "cpu_cores": round(cpu_cores, 3),
            "cpu_us_per_message": round(cpu_cores * elapsed / max(messages, 1) * 1e6, 1),
            "rss_mib": round(sum(u["rss_mib"] for u in usage), 1)}


PROFILE_STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("pydantic Reading construction", ("BaseModel.__init__ (pydantic",)),
    ("validation (ingest/payload.py)", ("(ingest/payload.py",)),
    ("encoding (quantrac/wire.py)", ("(quantrac/wire.py",)),
    ("PUBACK (paho packet queue, from the Kafka callback)", ("Bridge._ack ", "Bridge._ack_all ")),
    ("delivery counts and PUBACK ordering (Kafka callback)", ("Bridge._on_delivered", "Bridge._confirmed", "AckQueue.")),
    ("our routing: counts, metrics, records, hand-over (network thread)", ("Bridge._on_message",)),
    ("kafka-python send (producer thread)", ("kafka-producer",)),
    ("kafka-python sender thread (batches, network, responses)", ("-network-thread",)),
    ("paho network loop (read, parse, write)", ("paho-mqtt-client",)),
    ("start-up and other threads (dead-letter keeper, heartbeats, main)", ("",)),
)
"""Stages of the bridge's profile, by a frame or thread name in the stack: the first stage that matches takes the
sample (the validation stages only within the network thread's `Bridge._on_message`)."""


def profile_stages(collapsed: Path, result: dict[str, float], messages: int) -> dict[str, dict[str, float]]:
    """µs of CPU per message for each stage: the process's CPU time apportioned by py-spy's busy samples."""
    if not collapsed.is_file():
        return {}
    counts = dict.fromkeys((name for name, _ in PROFILE_STAGES), 0)
    for line in collapsed.read_text().splitlines():
        stack_text, _, n = line.rpartition(" ")
        if any(marker in stack_text.rsplit(";", 1)[-1] for marker in IDLE_FRAMES):
            continue
        stage = next(name for i, (name, markers) in enumerate(PROFILE_STAGES)
                     if any(m in stack_text for m in markers) and (i > 2 or "Bridge._on_message" in stack_text))
        counts[stage] += int(n)
    busy = max(sum(counts.values()), 1)
    cpu_us_per_message = result["cpu_cores"] * result["seconds"] / messages * 1e6
    return {name: {"share_of_busy": round(n / busy, 3), "us_per_message": round(n / busy * cpu_us_per_message, 1)}
            for name, n in counts.items()}


def stop_bridges(procs: list[subprocess.Popen[bytes]], client_ids: list[str]) -> None:
    """Stop the bench's bridges and end their sessions, so later runs' messages do not pile up in them."""
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.wait(30)
    for client_id in client_ids:
        end_session(SETTINGS, client_id)


def two_bridges(bodies: list[bytes], readings_per_message: int, logins: dict[str, tuple[str, str]],
                logs: Path) -> dict[str, float]:
    """Two bridges in one shared-subscription group drain a backlog queued in their two sessions."""
    group = f"bench-{RUN}"
    topic = f"quantrac.{RUN}.readings.two"
    ensure_topics(SETTINGS.model_copy(update={"readings_topic": topic}))
    client_ids = [f"{SETTINGS.mqtt_bridge_client_id}-{side}" for side in "ab"]
    for client_id in client_ids:
        register_session(bridge_session_id(SETTINGS, client_id), mqtt.MQTTv5, logins["reader"], subscription_for(group))
    publish_all(bodies, logins["publisher"])
    procs = [quantrac_process(["bridge"], {**env(), "QUANTRAC_READINGS_TOPIC": topic, "QUANTRAC_MQTT_SHARED_GROUP": group,
                                           "QUANTRAC_MQTT_BRIDGE_CLIENT_ID": client_id}, logs / f"bridge-{client_id[-1]}.log")
             for client_id in client_ids]
    try:
        return drain(topic, len(bodies), readings_per_message, *procs)
    finally:
        stop_bridges(procs, client_ids)


def produce_kafka_python(topic: str, key: bytes, values: list[bytes]) -> int:
    """The bridge's producer (ingest.producer.make_producer): one send and one callback per record."""
    from ingest.producer import make_producer

    producer = make_producer(SETTINGS, "bench-kafka-python")
    confirmed = [0]

    def delivered(_metadata: object) -> None:
        confirmed[0] += 1

    for value in values:
        producer.send(topic, key=key, value=value).add_callback(delivered)
    producer.flush(timeout=120)
    producer.close(timeout=10)
    return confirmed[0]


def produce_confluent(topic: str, key: bytes, values: list[bytes]) -> int:
    """confluent-kafka (librdkafka) with the same guarantees: idempotent, acks=all, a callback per record."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": SETTINGS.kafka_bootstrap, "enable.idempotence": True, "acks": "all",
                         "linger.ms": 5, "client.id": "bench-confluent"})
    confirmed = [0]

    def delivered(err: object, _msg: object) -> None:
        if err is None:
            confirmed[0] += 1

    for i, value in enumerate(values):
        producer.produce(topic, value=value, key=key, on_delivery=delivered)
        if i % 1000 == 0:
            producer.poll(0)
    producer.flush(120)
    return confirmed[0]


def compare_producers(values: list[bytes]) -> dict[str, dict[str, float]]:
    """kafka-python against confluent-kafka on the same records, same broker, same run: records/s and CPU."""
    out = {}
    for name, produce in (("kafka_python", produce_kafka_python), ("confluent_kafka", produce_confluent)):
        topic = f"quantrac.{RUN}.producer.{name}"
        began, cpu = time.monotonic(), time.process_time()
        confirmed = produce(topic, STATION.encode(), values)
        wall = time.monotonic() - began
        out[name] = {"records": confirmed, "seconds": round(wall, 2), "records_per_s": round(confirmed / wall),
                     "cpu_seconds_per_1000": round((time.process_time() - cpu) / len(values) * 1000, 4)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--keep-stack", action="store_true", help="leave the private stack running (and reuse it)")
    parser.add_argument("--profile", action="store_true", help="record the bridge with py-spy while it drains")
    parser.add_argument("--producers", action="store_true",
                        help="also measure kafka-python against confluent-kafka producing the bridge's records")
    args = parser.parse_args()
    n = args.messages

    prepare_private_stack(SETTINGS, args.keep_stack)
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
        profile: dict[str, list[dict[str, object]]] = {}

        logins = mqtt_logins(SETTINGS)  # the broker allows no anonymous access

        # quantrac bridge
        register_session(bridge_session_id(SETTINGS), mqtt.MQTTv5, logins["reader"])
        publish_s = publish_all(bodies, logins["publisher"])
        bridge = quantrac_process(["bridge"], env(), logs / "bridge.log")
        spy = start_profile(bridge.pid, logs / f"{RUN}.pyspy", rate=100) if args.profile else None
        try:
            results["bridge"] = drain(SETTINGS.readings_topic, n, readings_per_message, bridge)
        finally:
            profile = stop_profile(spy, logs / f"{RUN}.pyspy")
            stop_bridges([bridge], [SETTINGS.mqtt_bridge_client_id])

        results["two_bridges"] = two_bridges(bodies, readings_per_message, logins, logs)

        # baseline: mosquitto_sub | kcat
        register_session(BASELINE_CLIENT, mqtt.MQTTv311, logins["reader"])
        publish_all(bodies, logins["publisher"])
        # stdbuf: mosquitto_sub's stdout is block-buffered into a pipe, which would hold the last messages back.
        sub = subprocess.Popen(["stdbuf", "-oL", "mosquitto_sub", "-h", SETTINGS.mqtt_host, "-p", str(SETTINGS.mqtt_port), "-c", "-i", BASELINE_CLIENT,
                                "-u", logins["reader"][0], "-P", logins["reader"][1], "-q", "1", "-t", "quantrac/v1/stations/+/readings"], stdout=subprocess.PIPE)
        kcat = subprocess.Popen(["kcat", "-P", "-b", SETTINGS.kafka_bootstrap, "-t", BASELINE_TOPIC], stdin=sub.stdout)
        assert sub.stdout is not None
        sub.stdout.close()
        try:
            results["baseline"] = drain(BASELINE_TOPIC, n, readings_per_message, kcat)
        finally:
            sub.terminate()
            sub.wait(10)
            kcat.wait(30)
            end_session(SETTINGS, BASELINE_CLIENT, as_is=True)

        producers = compare_producers(bodies) if args.producers else None
        for r in results.values():
            delivered = min(n, r["messages"])
            r["messages_per_s"] = round(delivered / r["seconds"], 1)
            r["readings_per_s"] = round(delivered * readings_per_message / r["seconds"], 1)
        write_result("bridge", {
            "method": "N QoS 1 messages queued in Mosquitto for a persistent session, then drained into Kafka; "
                      "time until Kafka holds the N messages' readings (the last record's arrival)",
            "messages": n, "readings_per_message": readings_per_message, "payload_bytes": len(bodies[0]),
            "publish_seconds": round(publish_s, 2), "load_average_at_end": os.getloadavg(),
            "bridge": results["bridge"], "baseline_mosquitto_sub_kcat": results["baseline"],
            "bridge_vs_baseline": round(results["bridge"]["readings_per_s"] / results["baseline"]["readings_per_s"], 3),
            "two_bridges": results["two_bridges"],
            "two_bridges_vs_baseline": round(results["two_bridges"]["readings_per_s"] / results["baseline"]["readings_per_s"], 3),
            **({"bridge_profile_top_frames": profile,
                "bridge_profile_stages": profile_stages(logs / f"{RUN}.pyspy", results["bridge"], n)} if args.profile else {}),
            **({"producers_alone": producers} if producers else {}),
        })
    finally:
        if not args.keep_stack:
            stack.down(SETTINGS)


if __name__ == "__main__":
    main()
