"""End to end: MQTT → bridge → Kafka → worker → PostgreSQL, every rule on.

For each offered rate it publishes station messages (8 readings each) for a fixed time and
measures what was stored, publish→stored and publish→alert latency (p50/p95/p99), consumer lag
sampled every second, and CPU/RSS of every component. A rate is *sustained* when the consumer lag
stays bounded after the first 5 s (`lag_bounded`: the worker commits every few seconds, so the
lag is a saw-tooth, never zero), its least-squares slope is under 10 % of the offered messages/s, everything is
stored within 10 s of the last publish, and the publisher reached at least 95 % of the rate (`bench.common.sustained`;
on a machine too slow to publish it, the step measured a lower rate). Every rate is run: once one is not
sustained, the following (overload) steps last `--overload-seconds` so their backlog drains in
reasonable time, and each step waits for the previous one's backlog to be stored before it
starts. The baseline, measured in the same run, is the publisher alone into Mosquitto.

    python bench/e2e.py [--quick] [--rates 500,1000,2000,5000,10000,15000,20000,25000] [--seconds 60] [--overload-seconds 15]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import threading
import time
import zlib
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import (  # noqa: E402
    ProcessSample,
    lag_slope,
    mqtt_logins,
    namespace_env,
    percentiles,
    quantrac_process,
    sustained,
    write_result,
)

NS = "bench"
os.environ.update(namespace_env(NS))

import orjson  # noqa: E402
import paho.mqtt.client as mqtt  # noqa: E402
import psycopg  # noqa: E402
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition  # noqa: E402

from ingest.bridge import end_session  # noqa: E402
from ingest.producer import CONSUMER_OPTIONS  # noqa: E402
from ingest.simulator import PUBLISH_MAX_INFLIGHT  # noqa: E402
from quantrac.db import migrate, save_stations  # noqa: E402
from quantrac.domain import Station  # noqa: E402
from quantrac.kafka_topics import ensure_topics  # noqa: E402
from quantrac.registry import load_registry  # noqa: E402
from quantrac.settings import get_settings  # noqa: E402
from stack import services as stack  # noqa: E402

WARM_UP_S = 5
"""Lag samples (one a second) left out of the verdict: the lag climbs to its commit saw-tooth first."""
DRAIN_DEADLINE_S = 900
"""Longest wait, after a step, for its readings to be stored (an overload step's backlog)."""
PARAMS_TEMPLATE = "HD-DAIAN-WW01"  # 8 parameters: Flow, Temp, pH, TSS, COD, NH4, TN, TP


def fresh_database(settings) -> None:
    admin = settings.pg_dsn.replace(f"dbname={settings.pg_database}", "dbname=postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{settings.pg_database}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{settings.pg_database}"')


def fresh_topics(settings) -> None:
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    names = [settings.readings_topic, settings.deadletter_topic, settings.alerts_topic]
    # and the worker's own topics (the state changelogs of a tree that kept its state in Faust tables):
    # a fresh run starts from empty state, not from the changelog of an earlier run
    existing = [n for n in admin.list_topics() if n in names or n.startswith(f"{settings.worker_id}-")]
    if existing:
        admin.delete_topics(existing)
        deadline = time.monotonic() + 30
        while any(n in admin.list_topics() for n in existing) and time.monotonic() < deadline:
            time.sleep(0.2)  # topic deletion is asynchronous; poll with a deadline
    admin.close()
    ensure_topics(settings)


def bench_stations(settings, count: int) -> dict[str, Station]:
    template = load_registry(settings.registry_file, settings.limits_dir)[PARAMS_TEMPLATE]
    return {f"BENCH-{i:04d}": template.model_copy(update={"id": f"BENCH-{i:04d}", "zone": f"Bench zone {i % 10}"})
            for i in range(count)}


def message(station: Station, now: datetime, exceed: bool) -> bytes:
    """Every value about 30 % of its limit (a plant in compliance); COD at twice its limit when `exceed`.

    Values move as a plant's do: a slow swing (±5 % over about an hour) and a faint fast ripple
    (±0.05 %, period about 20 s) so no sensor looks stuck; at one message a second per station
    neither changes faster than the catalogue's `max_rate_per_min` (pH 0.2/min), so the only
    alerts are the injected exceedances."""
    readings = []
    t, phase = now.timestamp(), zlib.crc32(station.id.encode()) % 100
    wobble = 1 + 0.05 * math.sin(t / 600 + phase) + 0.0005 * math.sin(t / 3 + phase)
    for symbol, spec in station.parameters.items():
        high = spec.limit.high if spec.limit is not None else None
        value = round(7.0 * wobble, 4) if symbol == "pH" else round(0.3 * high * wobble, 4) if high else round(10.0 * wobble, 4)
        if exceed and symbol == "COD":
            value = (high or 100) * 2
        readings.append({"parameter": symbol, "value": value, "unit": spec.unit, "status": "00"})
    return orjson.dumps({"ts": now.isoformat(), "readings": readings})


def publish_at(settings, stations: list[Station], readings_per_s: float, seconds: float,
               exceed_stations: set[str], topic_root: str = "quantrac/v1/stations") -> dict[str, float]:
    """Publish for `seconds` at `readings_per_s`; returns what was offered and achieved.

    Each of `exceed_stations` sends one exceedance, at its own time spread evenly over the step (the
    first a step's length over their number plus one in), so publish→alert is measured while the
    pipeline runs at the rate, not only as it wakes up. `topic_root` other than the stations' one:
    nothing subscribes (the baseline, publisher alone)."""
    per_message = len(stations[0].parameters)
    messages_per_s = readings_per_s / per_message
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{os.getpid()}", protocol=mqtt.MQTTv311)
    client.username_pw_set(*mqtt_logins(settings)["publisher"])  # one connection for every bench station, like a test gateway
    client.max_inflight_messages_set(PUBLISH_MAX_INFLIGHT)
    client.max_queued_messages_set(0)
    client.connect(settings.mqtt_host, settings.mqtt_port, keepalive=60)
    client.loop_start()
    sent, last = 0, None
    start = time.monotonic()
    exceeded: set[str] = set()
    exceed_at = {sid: seconds * (k + 1) / (len(exceed_stations) + 1) for k, sid in enumerate(sorted(exceed_stations))}
    while True:
        elapsed = time.monotonic() - start
        if elapsed >= seconds:
            break
        due = int(elapsed * messages_per_s) + 1
        while sent < due:
            now = datetime.now(timezone.utc)  # per message: after a hiccup of the loop, a station's two messages differ
            station = stations[sent % len(stations)]
            exceed = station.id not in exceeded and elapsed >= exceed_at.get(station.id, math.inf)
            if exceed:
                exceeded.add(station.id)
            last = client.publish(f"{topic_root}/{station.id}/readings", message(station, now, exceed), qos=1)
            sent += 1
        time.sleep(0.005)  # pacing of the publisher's loop, not synchronisation
    if last is not None:
        last.wait_for_publish(timeout=120)
    took = time.monotonic() - start
    client.disconnect()
    client.loop_stop()
    return {"messages": sent, "readings": sent * per_message, "seconds": round(took, 2),
            "achieved_readings_per_s": round(sent * per_message / took, 1)}


def consumer_lag(settings, consumer: KafkaConsumer, admin: KafkaAdminClient) -> int:
    partitions = [TopicPartition(settings.readings_topic, p) for p in range(settings.topic_partitions)]
    ends = consumer.end_offsets(partitions)
    committed = admin.list_consumer_group_offsets(settings.worker_id)
    return sum(ends[tp] - (committed[tp].offset if tp in committed else 0) for tp in partitions)


def stored_since(conn: psycopg.Connection, since: datetime) -> int:
    (count,) = conn.execute("SELECT count(*) FROM readings WHERE ts >= %s", (since,)).fetchone() or (0,)
    return int(count)


def run_step(settings, conn, procs, stations, rate, seconds, alert_stations) -> dict:
    samples = {name: ProcessSample(pid).start() for name, pid in procs.items()}
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, **CONSUMER_OPTIONS)
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    lags: list[int] = []
    stop = threading.Event()

    def sample_lag() -> None:
        while not stop.wait(1.0):
            lags.append(consumer_lag(settings, consumer, admin))

    since = datetime.now(timezone.utc)
    sampler = threading.Thread(target=sample_lag, daemon=True)
    sampler.start()
    offered = publish_at(settings, stations, rate, seconds, alert_stations)
    stop.set()
    sampler.join()
    usage = {name: s.usage() for name, s in samples.items()}
    drain_start = time.monotonic()
    while stored_since(conn, since) < offered["readings"] and time.monotonic() - drain_start < DRAIN_DEADLINE_S:
        time.sleep(0.5)  # drain: poll with a deadline
    drain = time.monotonic() - drain_start
    stored = stored_since(conn, since)
    latencies = [r[0] for r in conn.execute(
        "SELECT extract(epoch FROM received_at - ts) FROM readings WHERE ts >= %s", (since,)).fetchall()]
    alert_latencies = [r[0] for r in conn.execute(
        "SELECT extract(epoch FROM opened_at - first_ts) FROM alerts WHERE first_ts >= %s AND rule = 'exceedance' "
        "AND basis = 'instant'", (since,)).fetchall()]
    end_lag = lags[-1] if lags else 0
    messages_per_s = rate / len(stations[0].parameters)
    growth = lag_slope(lags[WARM_UP_S:])
    consumer.close()
    admin.close()
    return {
        "offered_readings_per_s": rate, **offered, "stored": stored, "lost": offered["readings"] - stored,
        "drain_s": round(drain, 1), "lag_end_messages": end_lag, "lag_max_messages": max(lags, default=0),
        "lag_growth_messages_per_s": round(growth, 2), "lag_samples_messages": lags,
        "sustained": sustained(rate, offered["achieved_readings_per_s"], int(offered["readings"] - stored), drain,
                               lags[WARM_UP_S:], messages_per_s),
        "publish_to_stored_s": percentiles([float(x) for x in latencies]),
        "publish_to_alert_s": percentiles([float(x) for x in alert_latencies]), "alerts_measured": len(alert_latencies),
        "components": usage,
    }


@contextmanager
def running_pipeline(stations_count: int) -> Iterator[tuple[Any, psycopg.Connection, dict[str, int], list[Station]]]:
    """A fresh database and topics of the bench namespace, a bridge and a worker, one reading stored.

    Yields (settings, connection, pids of the components to sample, stations)."""
    settings = get_settings()
    with stack.running(settings):
        fresh_database(settings)
        with psycopg.connect(settings.pg_dsn, autocommit=True) as conn:
            migrate(conn)
            stations = bench_stations(settings, stations_count)
            save_stations(conn, stations)
            fresh_topics(settings)
            end_session(settings, settings.mqtt_bridge_client_id)  # no backlog left from an earlier run
            logs = settings.run_dir / "bench-logs"
            env = {"QUANTRAC_LOG_LEVEL": os.environ.get("QUANTRAC_BENCH_LOG_LEVEL", "WARNING")}
            bridge = quantrac_process(["bridge"], env, logs / "bridge.log")
            worker = quantrac_process(["worker"], env, logs / "worker.log")
            pids = {"bridge": bridge.pid, "worker": worker.pid,
                    **{name: s.pid for name, s in stack.status(settings).items() if s.pid}}
            try:
                station_list = list(stations.values())
                deadline = time.monotonic() + 120
                while stored_since(conn, datetime(2000, 1, 1, tzinfo=timezone.utc)) == 0:
                    if time.monotonic() > deadline:
                        raise SystemExit(f"pipeline did not start; see {logs}")
                    # Until the bridge has subscribed, a message has no subscriber: send it again.
                    publish_at(settings, station_list[:1], 8, 1, set())
                yield settings, conn, pids, station_list
            finally:
                for proc in (bridge, worker):
                    proc.terminate()
                    proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short steps (about 3 minutes in all)")
    parser.add_argument("--rates", default=None, help="readings/s to offer, comma-separated")
    parser.add_argument("--seconds", type=float, default=None, help="length of each step")
    parser.add_argument("--overload-seconds", type=float, default=15.0, help="length of the steps after one not sustained")
    parser.add_argument("--stations", type=int, default=200)
    args = parser.parse_args()
    rates = [float(r) for r in (args.rates or ("1000,2000" if args.quick else "500,1000,2000,5000,10000,15000,20000,25000")).split(",")]
    seconds = args.seconds or (15.0 if args.quick else 60.0)
    with running_pipeline(args.stations) as (settings, conn, pids, station_list):
        # The publisher alone, as fast as it goes, on topics the bridge does not read (the broker
        # acknowledges them all the same), so the pipeline has no backlog when the steps begin.
        baseline = {"publisher_only": publish_at(settings, station_list, max(rates) * 2, min(seconds, 10), set(),
                                                 topic_root="quantrac-bench/publisher-only")}
        steps: list[dict[str, Any]] = []
        for i, rate in enumerate(rates):
            alert_stations = {s.id for s in station_list[i * 10:(i + 1) * 10]}
            overload = any(not s["sustained"] for s in steps)
            step = run_step(settings, conn, pids, station_list, rate, args.overload_seconds if overload else seconds,
                            alert_stations)
            steps.append(step)
            print(f"rate {rate:.0f}/s: sustained={step['sustained']} stored={step['stored']}/{step['readings']} "
                  f"lag growth {step['lag_growth_messages_per_s']} msg/s, p99 stored {step['publish_to_stored_s']['p99']} s, "
                  f"drain {step['drain_s']} s", file=sys.stderr)
        sustained = [s["offered_readings_per_s"] for s in steps if s["sustained"]]
        write_result("e2e", {
            "quick": args.quick, "seconds_per_step": seconds, "stations": len(station_list),
            "readings_per_message": len(station_list[0].parameters),
            "highest_sustained_readings_per_s": max(sustained, default=0.0),
            "alert_exceedances": "spread",
            "baseline": baseline, "steps": steps,
        })


if __name__ == "__main__":
    main()
