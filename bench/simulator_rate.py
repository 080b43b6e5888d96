"""How many readings/s one simulator process reaches, each figure beside a same-run baseline.

- generate: the pure scenario generator (values, incidents, Reading objects), no output;
  baseline: drawing the same number of Gaussian numbers (the floor of any noise model).
- mqtt: generator + JSON payloads + QoS 1 publish to the local Mosquitto, one connection,
  waiting for the last PUBACK; baseline: a client with the same settings publishing one fixed
  payload in a loop.
  It publishes under `quantrac-bench/` so no bridge subscribed to `quantrac/v1/...` receives it.
- mqtt_processes: the same through `ingest.simulator.run_processes` (`simulate --processes N`),
  stations split over N forked publishers; baseline: N processes publishing one fixed payload.
- tt10: generator + one TT10 file a message into a temporary folder; baseline: writing the same
  number of files of fixed bytes.

Run: `.venv/bin/python bench/simulator_rate.py [--seconds 5] [--processes 4]`; prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import paho.mqtt.client as mqtt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import mqtt_logins  # noqa: E402
from ingest.scenarios import generate, random_incidents
from ingest.simulator import PUBLISH_MAX_INFLIGHT, MqttSink, TT10Sink, in_delivery_order, mqtt_payload, play, run_processes
from quantrac.registry import load_registry
from quantrac.settings import get_settings

ROOT = "quantrac-bench"


def _stream(stations, seconds: float, interval: timedelta):
    start = datetime.now(timezone.utc) - timedelta(days=1)
    span = timedelta(days=1)
    return in_delivery_order(generate(stations, start, span, 1, random_incidents(stations, start, span, 1), interval)), start


def bench_generate(stations, seconds: float) -> dict[str, float]:
    stream, _ = _stream(stations, seconds, timedelta(seconds=1))
    n = 0
    began = time.perf_counter()
    for message in stream:
        n += len(message.readings)
        if n % 4096 < 16 and time.perf_counter() - began > seconds:
            break
    rate = n / (time.perf_counter() - began)
    rng = random.Random(1)
    began = time.perf_counter()
    for _ in range(n):
        rng.gauss(0.0, 1.0)
    return {"readings_per_s": round(rate), "baseline_gauss_per_s": round(n / (time.perf_counter() - began))}


def bench_mqtt(stations, seconds: float) -> dict[str, float]:
    s = get_settings()
    stream, start = _stream(stations, seconds, timedelta(milliseconds=1))
    login = mqtt_logins(s)["publisher"]  # the broker allows no anonymous access
    sink = MqttSink(s.mqtt_host, s.mqtt_port, {}, login, client_prefix="quantrac-bench", topic_root=ROOT)
    stop = threading.Event()
    threading.Timer(seconds, stop.set).start()
    began = time.perf_counter()
    messages, readings = play(stream, sink, start=start, speedup=1e9, stop=stop)
    sink.close()
    elapsed = time.perf_counter() - began
    sample = next(iter(_stream(stations, 1, timedelta(seconds=1))[0]))
    payload, per_msg = mqtt_payload(sample), len(sample.readings)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311, client_id=f"quantrac-bench-raw-{os.getpid()}")
    client.max_inflight_messages_set(PUBLISH_MAX_INFLIGHT)
    client.username_pw_set(*login)
    client.max_queued_messages_set(0)
    client.connect(s.mqtt_host, s.mqtt_port)
    client.loop_start()
    began = time.perf_counter()
    info = None
    for _ in range(messages):
        info = client.publish(f"{ROOT}/raw", payload, qos=1)
    if info is not None:
        info.wait_for_publish(timeout=60)
    raw = time.perf_counter() - began
    client.disconnect()
    client.loop_stop()
    return {"messages": messages, "readings_per_s": round(readings / elapsed),
            "baseline_fixed_payload_readings_per_s": round(messages * per_msg / raw)}


def _fixed_publisher(seconds: float, payload: bytes, results: "multiprocessing.SimpleQueue[int]") -> None:
    s = get_settings()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311, client_id=f"quantrac-bench-raw-{os.getpid()}")
    client.max_inflight_messages_set(PUBLISH_MAX_INFLIGHT)
    client.max_queued_messages_set(0)
    client.connect(s.mqtt_host, s.mqtt_port)
    client.loop_start()
    end, sent, info = time.monotonic() + seconds, 0, None
    while time.monotonic() < end:
        for _ in range(100):
            info = client.publish(f"{ROOT}/raw", payload, qos=1)
        sent += 100
    if info is not None:
        info.wait_for_publish(timeout=60)
    client.disconnect()
    client.loop_stop()
    results.put(sent)


def bench_mqtt_processes(stations, seconds: float, processes: int) -> dict[str, float]:
    """Readings/s of `run_processes` flat out (a rate no publisher reaches), and of N fixed-payload publishers."""
    s = get_settings()
    stop = threading.Event()
    threading.Timer(seconds, stop.set).start()
    began = time.perf_counter()
    messages, readings = run_processes(
        processes, stations, duration=None, rate=1e6, speedup=1.0, seed=1, stop=stop,
        make_sink=lambda: MqttSink(s.mqtt_host, s.mqtt_port, {}, client_prefix="quantrac-bench", topic_root=ROOT))
    elapsed = time.perf_counter() - began
    sample = next(iter(_stream(stations, 1, timedelta(seconds=1))[0]))
    payload, per_msg = mqtt_payload(sample), len(sample.readings)
    context = multiprocessing.get_context("fork")
    results: multiprocessing.SimpleQueue[int] = context.SimpleQueue()
    began = time.perf_counter()
    children = [context.Process(target=_fixed_publisher, args=(seconds, payload, results)) for _ in range(processes)]
    for child in children:
        child.start()
    for child in children:
        child.join(seconds + 120)
    raw = time.perf_counter() - began
    fixed = sum(results.get() for _ in children)
    return {"processes": processes, "messages": messages, "readings_per_s": round(readings / elapsed),
            "baseline_fixed_payload_readings_per_s": round(fixed * per_msg / raw)}


def bench_tt10(stations, seconds: float) -> dict[str, float]:
    stream, start = _stream(stations, seconds, timedelta(seconds=1))
    with tempfile.TemporaryDirectory() as tmp:
        stop = threading.Event()
        threading.Timer(seconds, stop.set).start()
        began = time.perf_counter()
        messages, readings = play(stream, TT10Sink(Path(tmp) / "a"), start=start, speedup=1e9, stop=stop)
        elapsed = time.perf_counter() - began
        data = b"x" * 300
        began = time.perf_counter()
        for i in range(messages):
            (Path(tmp) / f"b{i}").write_bytes(data)
        raw = time.perf_counter() - began
    return {"files_per_s": round(messages / elapsed), "readings_per_s": round(readings / elapsed),
            "baseline_fixed_files_per_s": round(messages / raw)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--processes", type=int, default=4, help="publishing processes of the mqtt_processes figure")
    args = parser.parse_args()
    s = get_settings()
    stations = load_registry(s.registry_file, s.limits_dir)
    print(json.dumps({"stations": len(stations), "readings_per_message": round(sum(len(x.parameters) for x in stations.values()) / len(stations), 2),
                      "generate": bench_generate(stations, args.seconds), "mqtt": bench_mqtt(stations, args.seconds),
                      "mqtt_processes": bench_mqtt_processes(stations, args.seconds, args.processes),
                      "tt10": bench_tt10(stations, args.seconds)}, indent=1))


if __name__ == "__main__":
    main()
