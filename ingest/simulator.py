"""The station simulator: `ingest.scenarios` played out over MQTT or as TT10 files.

Event time and wall time: with `speedup` S the event clock runs S times faster than the wall
clock, so `--speedup 288 --duration 300` plays a whole day in five minutes. Since the bridge
refuses readings from the future, a sped-up run plays the past: it starts at
`now - duration x speedup` and ends at now. At speedup 1 it plays now, live.

Rate: without `rate`, each station reports at its registry interval (realistic, a few readings a
minute per station). With `rate` R (readings per wall second across all stations) the report
interval is shortened to reach R; above a few hundred messages a second the publisher sends in
bursts and sleeps only when ahead of schedule.

Output:
- MQTT, QoS 1, one connection per gateway with its account (`quantrac.mqtt_accounts`) when accounts
  were generated, one anonymous (or `QUANTRAC_MQTT_USERNAME`) connection before that;
- TT10: one file per message in a folder, written under a `.part` name and renamed.
Incidents (including `--inject`) go to a ground-truth log, one JSON object a line.

Processes: one Python process publishes about 8,000 readings/s over MQTT (paho's per-message cost
and the generator share one GIL). `run_processes` splits the stations over N forked processes, each
with its own connection(s) and its share of the rate, for rates of 20,000 readings/s and more.
"""

from __future__ import annotations

import heapq
import multiprocessing
import os
import signal
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Mapping, Protocol
from zoneinfo import ZoneInfo

import orjson
import paho.mqtt.client as mqtt
import structlog

from ingest.scenarios import Incident, Message, generate, ground_truth
from ingest.tt10 import TT10Line, TT10Name, format_content
from quantrac.domain import Station

if TYPE_CHECKING:
    from quantrac.settings import Settings

log = structlog.get_logger(__name__)

VN = ZoneInfo("Asia/Ho_Chi_Minh")
FOREVER = timedelta(days=3650)
PUBLISH_MAX_INFLIGHT = 0
"""paho's in-flight window for the publishers: 0 is unlimited. With a window, paho 2.1 rescans every
unacknowledged message on each PUBACK (`Client._update_inflight`), which cost 3x the CPU per message
at a window of 1000; QoS 1 still holds each message until its PUBACK either way."""


@dataclass(frozen=True)
class Injection:
    """`simulate --inject STATION:PARAMETER[:VALUE]`: hold the parameter above its limit for the whole run."""

    station: str
    parameter: str
    value: float | None = None

    def incident(self, start: datetime, end: datetime) -> Incident:
        """The injection as an exceedance over [start, end): at `value` when given, else 1.5 x the parameter's limit."""
        return Incident(self.station, self.parameter, "exceedance", start, end, 1.5, self.value)


def parse_injection(spec: str) -> Injection:
    """Parse `--inject STATION:PARAMETER[:VALUE]`."""
    parts = spec.split(":")
    if len(parts) not in (2, 3):
        raise ValueError(f"--inject {spec!r}: write STATION:PARAMETER or STATION:PARAMETER:VALUE")
    try:
        value = float(parts[2]) if len(parts) == 3 else None
    except ValueError:
        raise ValueError(f"--inject {spec!r}: VALUE {parts[2]!r} is not a number") from None
    return Injection(parts[0], parts[1], value)


def topic_for(station_id: str, root: str = "quantrac/v1") -> str:
    """The MQTT topic a station publishes its readings on."""
    return f"{root}/stations/{station_id}/readings"


def mqtt_payload(message: Message) -> bytes:
    """One message in the MQTT contract; the time has milliseconds only when it needs them."""
    spec = "milliseconds" if message.ts.microsecond else "seconds"
    return orjson.dumps({
        "ts": message.ts.astimezone(VN).isoformat(timespec=spec),
        "readings": [{"parameter": r.parameter, "value": r.value, "unit": r.unit, "status": r.status.value}
                     for r in message.readings],
    })


def tt10_file(message: Message, province: str = "HP", facility: str = "SIM") -> tuple[str, bytes]:
    """(file name, content) of one message as a TT10 file (CRLF, values as the analyser rounded them)."""
    lines = [TT10Line.of(r.parameter, r.value, r.unit, message.ts, r.status) for r in message.readings]
    name = TT10Name(province, facility, message.station_id, message.ts).filename
    return name, format_content(lines, "\r\n").encode("utf-8")


def plan_interval(stations: Mapping[str, Station], rate: float | None, speedup: float) -> timedelta | None:
    """The report interval (event time) that gives `rate` readings per wall second; None: registry intervals."""
    if rate is None:
        return None
    if rate <= 0:
        raise ValueError(f"rate must be > 0 readings/s, got {rate}")
    per_cycle = sum(len(s.parameters) for s in stations.values())
    return timedelta(seconds=per_cycle * speedup / rate)


def in_delivery_order(messages: Iterable[Message], slack: timedelta = FOREVER) -> Iterator[Message]:
    """Messages re-ordered by `deliver_at` (late and out-of-order delivery), holding back only what must wait."""
    pending: list[tuple[datetime, int, Message]] = []
    n = 0
    for message in messages:
        while pending and pending[0][0] <= message.ts:
            yield heapq.heappop(pending)[2]
        heapq.heappush(pending, (message.deliver_at, n, message))
        n += 1
    while pending:
        yield heapq.heappop(pending)[2]


class Sink(Protocol):
    """Where the simulator sends its messages (MQTT, Kafka or a file)."""
    def send(self, message: Message) -> None:
        """Deliver one message; raises when the transport refuses it."""
    def close(self) -> None:
        """Wait for what is still in flight, then release connections or files."""


CONNACK_TIMEOUT_S = 10.0


class MqttSink:
    """Publishes like real gateways: one connection per gateway account, QoS 1."""

    def __init__(self, host: str, port: int, accounts: Mapping[str, tuple[str | None, str | None]],
                 default: tuple[str | None, str | None] = (None, None), client_prefix: str = "quantrac-sim",
                 topic_root: str = "quantrac/v1") -> None:
        self._clients: dict[tuple[str | None, str | None], mqtt.Client] = {}
        self._by_station: dict[str, mqtt.Client] = {}
        self._host, self._port, self._prefix = host, port, client_prefix
        self._accounts, self._default, self._root = accounts, default, topic_root
        self._last: mqtt.MQTTMessageInfo | None = None
        if default[0]:
            self._client(default)

    def _client(self, account: tuple[str | None, str | None]) -> mqtt.Client:
        client = self._clients.get(account)
        if client is None:
            client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311,
                                 client_id=f"{self._prefix}-{account[0] or 'anon'}-{os.getpid()}")
            if account[0]:
                client.username_pw_set(account[0], account[1])
            client.max_inflight_messages_set(PUBLISH_MAX_INFLIGHT)
            client.max_queued_messages_set(0)
            answered = threading.Event()
            refused: list[str] = []

            def on_connect(_c: mqtt.Client, _u: object, _f: object, reason: mqtt.ReasonCode, _p: object) -> None:
                if reason.is_failure:
                    refused.append(str(reason))
                answered.set()

            client.on_connect = on_connect
            client.connect(self._host, self._port, keepalive=30)
            client.loop_start()
            if not answered.wait(CONNACK_TIMEOUT_S) or refused:
                client.loop_stop()
                who = f"account {account[0]}" if account[0] else "an anonymous client (no gateway account for this station)"
                why = f"refused it ({refused[0]})" if refused else f"did not answer within {CONNACK_TIMEOUT_S:.0f} s"
                raise ConnectionRefusedError(
                    f"the broker at {self._host}:{self._port} {why} for {who}; generate the gateway accounts with "
                    "`quantrac gateways sync` (or `quantrac stack up`) and use the same QUANTRAC_RUN_DIR")
            client.on_connect = None
            self._clients[account] = client
        return client

    def send(self, message: Message) -> None:
        """Publish at QoS 1 as the station's gateway (the default account if it has none); connects a gateway on first use."""
        client = self._by_station.get(message.station_id)
        if client is None:
            client = self._client(self._accounts.get(message.station_id, self._default))
            self._by_station[message.station_id] = client
        self._last = client.publish(topic_for(message.station_id, self._root), mqtt_payload(message), qos=1)

    def close(self) -> None:
        """Wait up to 30 s for the last publish to be acknowledged, then disconnect every gateway."""
        if self._last is not None:
            self._last.wait_for_publish(timeout=30)
        for client in self._clients.values():
            client.disconnect()
            client.loop_stop()


class TT10Sink:
    """Writes each message as a TT10 file into a folder (the stations' FTP target)."""

    def __init__(self, directory: Path, province: str = "HP", facility: str = "SIM") -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory, self.province, self.facility = directory, province, facility

    def send(self, message: Message) -> None:
        """Write the message as a TT10 file: a hidden `.part` first, then renamed, so a watcher never takes it half written."""
        name, data = tt10_file(message, self.province, self.facility)
        part = self.directory / f".{name}.part"
        part.write_bytes(data)
        os.replace(part, self.directory / name)

    def close(self) -> None:
        """Nothing to release: each file is complete once `send` returns."""
        pass


def gateway_accounts(settings: Settings, stations: Iterable[str]) -> dict[str, tuple[str | None, str | None]]:
    """station id -> (username, password) of its gateway, from `quantrac.mqtt_accounts` when accounts exist."""
    try:
        from quantrac.mqtt_accounts import gateway_credentials
    except ImportError:
        return {}
    wanted = set(stations)
    accounts: dict[str, tuple[str | None, str | None]] = {}
    for credential in gateway_credentials(settings).values():
        for station_id in credential.station_ids:
            if station_id in wanted:
                accounts[station_id] = (credential.username, credential.password)
    return accounts


def write_ground_truth(path: Path, incidents: Iterable[Incident], stations: Mapping[str, Station]) -> int:
    """Write the injected incidents as JSON lines for the detection bench; returns how many."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [orjson.dumps(ground_truth(i, stations)) + b"\n" for i in incidents]
    path.write_bytes(b"".join(rows))
    return len(rows)


def play(messages: Iterable[Message], sink: Sink, *, start: datetime, speedup: float,
         stop: threading.Event, clock: Callable[[], float] = time.monotonic) -> tuple[int, int]:
    """Send messages when their delivery time comes (event time / speedup); returns (messages, readings)."""
    began = clock()
    sent = readings = 0
    for message in messages:
        due = began + (message.deliver_at - start).total_seconds() / speedup
        ahead = due - clock()
        if ahead > 0.005 and stop.wait(ahead):
            break
        if stop.is_set():
            break
        sink.send(message)
        sent += 1
        readings += len(message.readings)
        if sent % 5000 == 0:
            elapsed = clock() - began
            log.info("simulator.progress", messages=sent, readings=readings, elapsed_s=round(elapsed, 1),
                     readings_per_s=round(readings / max(elapsed, 1e-9)))
    return sent, readings


def run(stations: Mapping[str, Station], *, sink: Sink, duration: float | None, rate: float | None = None,
        speedup: float = 1.0, seed: int | None = None, incidents: Iterable[Incident] = (),
        injections: Iterable[Injection] = (), ground_truth_path: Path | None = None,
        stop: threading.Event | None = None, now: datetime | None = None) -> tuple[int, int]:
    """Play the stations for `duration` wall seconds (forever when None, only at speedup 1)."""
    stop = stop or threading.Event()
    if speedup <= 0:
        raise ValueError(f"speedup must be > 0, got {speedup}")
    if speedup > 1 and duration is None:
        raise ValueError("a sped-up run plays the past and needs --duration (e.g. --speedup 288 --duration 300 for one day)")
    now = now or datetime.now(timezone.utc)
    event_span = FOREVER if duration is None else timedelta(seconds=duration * speedup)
    start = now - event_span if speedup > 1 else now
    everything = [*incidents, *(i.incident(start, start + event_span) for i in injections)]
    if ground_truth_path is not None:
        write_ground_truth(ground_truth_path, everything, stations)
    interval = plan_interval(stations, rate, speedup)
    log.info("simulator.started", stations=len(stations), rate=rate, speedup=speedup, start=start.isoformat(),
             interval_s=interval.total_seconds() if interval else "registry", incidents=len(everything))
    stream = in_delivery_order(generate(stations, start, event_span, seed if seed is not None else time.time_ns(),
                                        everything, interval))
    began = time.monotonic()
    try:
        sent, readings = play(stream, sink, start=start, speedup=speedup, stop=stop)
    finally:
        sink.close()
    elapsed = time.monotonic() - began
    log.info("simulator.stopped", messages=sent, readings=readings, seconds=round(elapsed, 2),
             readings_per_s=round(readings / max(elapsed, 1e-9)))
    return sent, readings


def split_stations(stations: Mapping[str, Station], n: int) -> list[dict[str, Station]]:
    """At most `n` groups of stations with about the same number of parameters each (largest first)."""
    groups: list[dict[str, Station]] = [{} for _ in range(max(1, min(n, len(stations))))]
    loads = [0] * len(groups)
    for station in sorted(stations.values(), key=lambda s: (-len(s.parameters), s.id)):
        i = loads.index(min(loads))
        groups[i][station.id] = station
        loads[i] += len(station.parameters)
    return groups


def _child(stations: Mapping[str, Station], make_sink: Callable[[], Sink], kwargs: dict[str, object],
           results: "multiprocessing.SimpleQueue[tuple[int, int]]") -> None:
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    results.put(run(stations, sink=make_sink(), stop=stop, **kwargs))  # type: ignore[arg-type]  # kwargs is the dict of run()'s keyword arguments that run_processes built; mypy sees only dict[str, object]


def run_processes(processes: int, stations: Mapping[str, Station], *, make_sink: Callable[[], Sink],
                  duration: float | None, rate: float | None = None, speedup: float = 1.0, seed: int | None = None,
                  incidents: Iterable[Incident] = (), injections: Iterable[Injection] = (),
                  ground_truth_path: Path | None = None, stop: threading.Event | None = None,
                  now: datetime | None = None) -> tuple[int, int]:
    """`run` over `processes` forked processes, each playing a share of the stations at its share of the rate.

    Every process plays the same event-time span (same `now`), so the result is the stream of one
    process split by station; the ground truth is written once, here. Stopping (`stop` or a
    signal) is passed on to the children, which finish their last publish. Returns the totals.
    """
    if processes <= 1:
        return run(stations, sink=make_sink(), duration=duration, rate=rate, speedup=speedup, seed=seed,
                   incidents=incidents, injections=injections, ground_truth_path=ground_truth_path, stop=stop, now=now)
    stop = stop or threading.Event()
    now = now or datetime.now(timezone.utc)
    incidents, injections = list(incidents), list(injections)
    if ground_truth_path is not None:
        event_span = FOREVER if duration is None else timedelta(seconds=duration * speedup)
        start = now - event_span if speedup > 1 else now
        write_ground_truth(ground_truth_path, [*incidents, *(i.incident(start, start + event_span) for i in injections)], stations)
    groups = split_stations(stations, processes)
    total = sum(len(s.parameters) for s in stations.values())
    context = multiprocessing.get_context("fork")  # the sink factory and stations need not pickle
    results: multiprocessing.SimpleQueue[tuple[int, int]] = context.SimpleQueue()
    children = []
    for i, group in enumerate(groups):
        share = sum(len(s.parameters) for s in group.values()) / total
        kwargs = {"duration": duration, "rate": rate * share if rate else None, "speedup": speedup,
                  "seed": None if seed is None else seed + i, "now": now,
                  "incidents": [x for x in incidents if x.station in group],
                  "injections": [x for x in injections if x.station in group]}
        child = context.Process(target=_child, args=(group, make_sink, kwargs, results), name=f"simulator-{i}")
        child.start()
        children.append(child)
    log.info("simulator.processes", processes=len(children), stations=[len(g) for g in groups])
    while any(c.is_alive() for c in children) and not stop.wait(0.2):
        pass
    for child in children:
        if child.is_alive():
            child.terminate()  # SIGTERM: the child stops playing and waits for its last PUBACK
    for child in children:
        child.join(60)
    totals = [results.get() for _ in children if not results.empty()]
    sent, readings = sum(t[0] for t in totals), sum(t[1] for t in totals)
    log.info("simulator.processes_stopped", processes=len(children), messages=sent, readings=readings)
    return sent, readings
