"""The station simulator: plausible readings for the registry's stations, published like a gateway.

Each station publishes one message per slot with all of its parameters. `rate` is the total
number of readings per second across stations; an exceedance can be injected on demand.
The values come from `baseline_value`, a pure function of the parameter and a random source.
"""

from __future__ import annotations

import math
import random
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Iterator, Mapping
from zoneinfo import ZoneInfo

import orjson
import paho.mqtt.client as mqtt
import structlog

from quantrac.domain import ParameterSpec, Station

log = structlog.get_logger(__name__)

VN = ZoneInfo("Asia/Ho_Chi_Minh")

TYPICAL: dict[str, tuple[float, float]] = {
    "Flow": (120.0, 15.0), "Temp": (29.0, 1.5), "pH": (7.2, 0.15), "TSS": (30.0, 5.0), "COD": (55.0, 8.0),
    "NH4": (3.0, 0.6), "Color": (40.0, 6.0), "TN": (12.0, 2.0), "TP": (1.5, 0.3), "P": (101.3, 0.5),
    "O2": (8.0, 0.6), "PM": (60.0, 10.0), "SO2": (180.0, 25.0), "NO2": (300.0, 40.0), "CO": (250.0, 40.0),
}
"""Mean and standard deviation of each symbol in normal operation (illustrative)."""


@dataclass(frozen=True)
class Injection:
    """Publish `value` (default: 1.5 x the limit) for `station`'s `parameter`."""

    station: str
    parameter: str
    value: float | None = None


def baseline_value(spec: ParameterSpec, rng: random.Random, when: datetime) -> float:
    """A normal-operation value: typical mean with a daily cycle and noise, kept under 70 % of any limit."""
    mean, sd = TYPICAL.get(spec.symbol, (10.0, 1.0))
    hour = when.astimezone(VN).hour + when.minute / 60
    value = mean * (1 + 0.05 * math.sin(2 * math.pi * (hour - 9) / 24)) + rng.gauss(0, sd)
    if spec.limit is not None and spec.limit.high is not None:
        value = min(value, 0.7 * spec.limit.high)
    if spec.limit is not None and spec.limit.low is not None:
        value = max(value, spec.limit.low + 0.2)
    low = spec.range_min if spec.range_min is not None else 0.0
    return round(max(value, low), 3)


def station_payload(station: Station, when: datetime, rng: random.Random, injections: list[Injection] = []) -> bytes:
    """One message in the MQTT contract for `station` at `when`."""
    readings = []
    for symbol, spec in station.parameters.items():
        value = baseline_value(spec, rng, when)
        for inj in injections:
            if inj.station == station.id and inj.parameter == symbol:
                limit = spec.limit.high if spec.limit and spec.limit.high else value * 2
                value = inj.value if inj.value is not None else round(limit * 1.5, 3)
        readings.append({"parameter": symbol, "value": value, "unit": spec.unit, "status": "00"})
    return orjson.dumps({"ts": when.astimezone(VN).isoformat(timespec="seconds"), "readings": readings})


def topic_for(station_id: str) -> str:
    return f"quantrac/v1/stations/{station_id}/readings"


def schedule(stations: Mapping[str, Station], rate: float) -> Iterator[tuple[float, Station]]:
    """(send-at monotonic offset, station) forever, round-robin, so that readings/s ≈ rate."""
    ordered = list(stations.values())
    per_cycle = sum(len(s.parameters) for s in ordered)
    cycle = per_cycle / rate
    step = cycle / len(ordered)
    n = 0
    while True:
        yield n * step, ordered[n % len(ordered)]
        n += 1


def run(stations: Mapping[str, Station], *, host: str, port: int, rate: float, duration: float | None,
        injections: list[Injection], username: str | None = None, password: str | None = None,
        seed: int | None = None, stop: threading.Event | None = None) -> int:
    """Publish at `rate` readings/s until `duration` elapses or `stop` is set; returns messages sent."""
    stop = stop or threading.Event()
    rng = random.Random(seed)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"quantrac-sim-{rng.randrange(1 << 30)}",
                         protocol=mqtt.MQTTv311)
    if username:
        client.username_pw_set(username, password)
    client.max_inflight_messages_set(200)
    client.connect(host, port, keepalive=30)
    client.loop_start()
    started = time.monotonic()
    sent = 0
    last: mqtt.MQTTMessageInfo | None = None
    log.info("simulator.started", stations=len(stations), rate=rate, injections=[i.__dict__ for i in injections])
    try:
        for offset, station in schedule(stations, rate):
            if stop.is_set() or (duration is not None and offset >= duration):
                break
            delay = started + offset - time.monotonic()
            if delay > 0 and stop.wait(delay):
                break
            payload = station_payload(station, datetime.now(timezone.utc), rng, injections)
            last = client.publish(topic_for(station.id), payload, qos=1)
            sent += 1
            if sent % 1000 == 0:
                log.info("simulator.progress", messages=sent, elapsed_s=round(time.monotonic() - started, 1))
    finally:
        if last is not None:
            last.wait_for_publish(timeout=10)
        client.disconnect()
        client.loop_stop()
    log.info("simulator.stopped", messages=sent)
    return sent
