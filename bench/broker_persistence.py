"""What Mosquitto's persistence settings cost while its queue grows, as during a Kafka or bridge outage.

Mosquitto 2.0 persists by writing its whole in-memory database (queued messages included) to disk. With
`autosave_on_changes true` it does so after every `autosave_interval` changes instead of every
`autosave_interval` seconds, so a backlog makes each save larger and the saves as frequent as the messages.

For each setting, a broker of its own (a temporary directory, port `--port`) holds one persistent session
whose client is away, subscribed at QoS 1 to every topic the publisher uses, so every message is queued;
one publisher then sends `--messages` QoS-1 messages of `--payload-bytes` (up to 1,000 in flight) and the
time to each fifth is taken. The time-based save every 10 s (`deploy/local/mosquitto.conf`) is the
same-run baseline.

    python bench/broker_persistence.py [--messages 100000] [--payload-bytes 300]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import write_result  # noqa: E402

SETTINGS = {
    "every_10_s": "autosave_interval 10\n",
    "every_60_changes": "autosave_interval 60\nautosave_on_changes true\n",
}
"""The persistence lines of each broker run; the first is the baseline."""


def _client(client_id: str) -> mqtt.Client:
    return mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)


def _wait_port(port: int, deadline_s: float = 10.0) -> None:
    """Until the broker accepts a connection (it starts in a few tens of ms)."""
    import socket

    end = time.monotonic() + deadline_s
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.05)


def _leave_a_session(port: int) -> None:
    """A client that subscribes at QoS 1 with a one-hour session and leaves: the broker queues for it."""
    props = mqtt.Properties(mqtt.PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    away = _client("away")
    subscribed = []
    away.on_subscribe = lambda *_: subscribed.append(True)
    away.connect("127.0.0.1", port, clean_start=False, properties=props)
    away.loop_start()
    away.subscribe("q/#", qos=1)
    end = time.monotonic() + 10
    while not subscribed and time.monotonic() < end:
        time.sleep(0.02)
    away.disconnect()
    away.loop_stop()


def run_one(name: str, lines: str, messages: int, payload_bytes: int, port: int) -> dict[str, Any]:
    """One broker with the setting's persistence, a queue growing by `messages`; the publisher's times."""
    directory = Path(tempfile.mkdtemp(prefix="quantrac-broker-"))
    conf = directory / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
                    f"persistence_location {directory}/\n{lines}max_queued_messages 2000000\n"
                    "max_queued_bytes 2000000000\nuser root\n")
    broker = subprocess.Popen(["mosquitto", "-c", str(conf)], stderr=subprocess.DEVNULL)
    try:
        _wait_port(port)
        _leave_a_session(port)
        publisher = _client("publisher")
        publisher.max_inflight_messages_set(1000)
        publisher.connect("127.0.0.1", port)
        publisher.loop_start()
        payload = b"x" * payload_bytes
        began = time.perf_counter()
        fifths: list[float] = []
        last = None
        for i in range(messages):
            last = publisher.publish(f"q/{i % 200}", payload, qos=1)
            if (i + 1) % max(messages // 5, 1) == 0:
                last.wait_for_publish(600)
                fifths.append(round(time.perf_counter() - began, 2))
        if last is not None:
            last.wait_for_publish(600)
        seconds = time.perf_counter() - began
        publisher.disconnect()
        publisher.loop_stop()
        saved = directory / "mosquitto.db"
        return {"setting": name, "lines": lines.strip().splitlines(), "messages": messages, "seconds": round(seconds, 2),
                "messages_per_s": round(messages / seconds), "seconds_at_each_fifth": fifths,
                "last_fifth_messages_per_s": round(messages / 5 / max(fifths[-1] - fifths[-2], 1e-9)) if len(fifths) >= 2 else None,
                "database_mb": round(saved.stat().st_size / 1e6, 1) if saved.exists() else 0.0}
    finally:
        broker.terminate()
        broker.wait(30)
        shutil.rmtree(directory, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--payload-bytes", type=int, default=300)
    parser.add_argument("--port", type=int, default=18830)
    args = parser.parse_args()
    runs = [run_one(name, lines, args.messages, args.payload_bytes, args.port) for name, lines in SETTINGS.items()]
    baseline = runs[0]["messages_per_s"]
    for run in runs:
        run["vs_baseline"] = round(run["messages_per_s"] / baseline, 3)
    write_result("broker_persistence", {"baseline": runs[0]["setting"], "payload_bytes": args.payload_bytes, "runs": runs})


if __name__ == "__main__":
    main()
