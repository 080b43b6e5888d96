"""How many readings/s one simulator process reaches, each figure beside a same-run baseline.

- generate: the pure scenario generator (values, incidents, Reading objects), no output;
  baseline: drawing the same number of Gaussian numbers (the floor of any noise model).
- mqtt: generator + JSON payloads + QoS 1 publish to the local Mosquitto, one connection,
  waiting for the last PUBACK; baseline: the same client publishing one fixed payload in a loop.
  It publishes under `quantrac-bench/` so no bridge subscribed to `quantrac/v1/...` receives it.
- tt10: generator + one TT10 file a message into a temporary folder; baseline: writing the same
  number of files of fixed bytes.

Run: `.venv/bin/python bench/simulator_rate.py [--seconds 5]`; prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import paho.mqtt.client as mqtt

from ingest.scenarios import generate, random_incidents
from ingest.simulator import MqttSink, TT10Sink, in_delivery_order, mqtt_payload, play
from quantrac.registry import load_registry
from quantrac.settings import get_settings

ROOT = "quantrac-bench"


def _stream(stations, seconds: float, interval: timedelta):  # type: ignore[no-untyped-def]
    start = datetime.now(timezone.utc) - timedelta(days=1)
    span = timedelta(days=1)
    return in_delivery_order(generate(stations, start, span, 1, random_incidents(stations, start, span, 1), interval)), start


def bench_generate(stations, seconds: float) -> dict[str, float]:  # type: ignore[no-untyped-def]
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


def bench_mqtt(stations, seconds: float) -> dict[str, float]:  # type: ignore[no-untyped-def]
    s = get_settings()
    stream, start = _stream(stations, seconds, timedelta(milliseconds=1))
    sink = MqttSink(s.mqtt_host, s.mqtt_port, {}, client_prefix="quantrac-bench", topic_root=ROOT)
    stop = threading.Event()
    threading.Timer(seconds, stop.set).start()
    began = time.perf_counter()
    messages, readings = play(stream, sink, start=start, speedup=1e9, stop=stop)
    sink.close()
    elapsed = time.perf_counter() - began
    sample = next(iter(_stream(stations, 1, timedelta(seconds=1))[0]))
    payload, per_msg = mqtt_payload(sample), len(sample.readings)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311, client_id=f"quantrac-bench-raw-{os.getpid()}")
    client.max_inflight_messages_set(1000)
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


def bench_tt10(stations, seconds: float) -> dict[str, float]:  # type: ignore[no-untyped-def]
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
    args = parser.parse_args()
    s = get_settings()
    stations = load_registry(s.registry_file, s.limits_dir)
    print(json.dumps({"stations": len(stations), "readings_per_message": round(sum(len(x.parameters) for x in stations.values()) / len(stations), 2),
                      "generate": bench_generate(stations, args.seconds), "mqtt": bench_mqtt(stations, args.seconds),
                      "tt10": bench_tt10(stations, args.seconds)}, indent=1))


if __name__ == "__main__":
    main()
