"""Load for tests that kill or stop processes: a gateway publishing checksummed readings at a pace.

A reading is identified by (station, parameter, ts); what was published is compared with what
PostgreSQL holds by count and by checksum (sum of values, SHA-256 of the sorted keys), so a test
proves "every reading stored exactly once" rather than "enough rows".
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import orjson
import paho.mqtt.client as mqtt
import psycopg

from quantrac.mqtt_accounts import credential_for
from quantrac.settings import Settings
from tests.utils.builders import topic

UNITS = {"COD": "mg/L", "pH": "-", "Flow": "m3/h"}
BASE = {"COD": 40.0, "pH": 7.0, "Flow": 120.0}

PARAMETERS = ("COD", "pH", "Flow")


@dataclass
class Publisher:
    """A gateway publishing `count` readings, one message (QoS 1) per event time with COD, pH and Flow.

    `rate` paces the messages per second (None: as fast as the broker takes them).
    """

    settings: Settings
    station_id: str
    count: int
    rate: float | None = None
    start: datetime = field(default_factory=lambda: datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=6))
    acked: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    done: threading.Event = field(default_factory=threading.Event)

    def reading(self, i: int) -> tuple[str, datetime, float]:
        """The i-th reading: its parameter, event time and a plausible value within limits.

        Values are multiples of 0.25, exact in binary, so sums compare exactly in any order.
        """
        parameter = PARAMETERS[i % len(PARAMETERS)]
        return parameter, self.start + timedelta(seconds=i // len(PARAMETERS)), BASE[parameter] + (i // 3 % 8) * 0.25

    def messages(self) -> list[bytes]:
        by_ts: dict[datetime, list[dict[str, object]]] = {}
        for i in range(self.count):
            parameter, ts, value = self.reading(i)
            by_ts.setdefault(ts, []).append({"parameter": parameter, "value": value, "unit": UNITS[parameter]})
        return [orjson.dumps({"ts": ts.isoformat(), "readings": items}) for ts, items in by_ts.items()]

    def _on_publish(self, *_args: object) -> None:
        with self._lock:
            self.acked += 1

    def run(self) -> None:
        import time

        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"gw-{self.station_id}", protocol=mqtt.MQTTv311)
        client.max_inflight_messages_set(200)
        client.max_queued_messages_set(0)
        client.on_publish = self._on_publish
        credential = credential_for(self.settings, self.station_id)  # no anonymous access: the test account
        if credential is not None:
            client.username_pw_set(credential.username, credential.password)
        client.connect(self.settings.mqtt_host, self.settings.mqtt_port)
        client.loop_start()
        try:
            began = time.monotonic()
            infos = []
            for i, body in enumerate(self.messages()):
                infos.append(client.publish(topic(self.station_id), body, qos=1))
                if self.rate:
                    ahead = (i + 1) / self.rate - (time.monotonic() - began)
                    if ahead > 0:
                        time.sleep(ahead)  # pacing the load generator, not synchronisation
            for info in infos:
                info.wait_for_publish(timeout=60)
                if not info.is_published():
                    raise AssertionError(f"message {info.mid} got no PUBACK within 60 s")
        finally:
            client.disconnect()
            client.loop_stop()
            self.done.set()

    def expected(self) -> tuple[int, float, str]:
        readings = [self.reading(i) for i in range(self.count)]
        return len(readings), sum(v for _, _, v in readings), digest([(self.station_id, p, ts) for p, ts, _ in readings])


def digest(keys: list[tuple[str, str, datetime]]) -> str:
    lines = sorted(f"{s}|{p}|{ts.astimezone(timezone.utc).isoformat()}" for s, p, ts in keys)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def stored(conn: psycopg.Connection, station_id: str) -> tuple[int, float, str]:
    rows = conn.execute("SELECT station_id, parameter, ts, value FROM readings WHERE station_id = %s", (station_id,)).fetchall()
    return len(rows), sum(r[3] for r in rows), digest([(r[0], r[1], r[2]) for r in rows])
