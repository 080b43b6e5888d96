"""A worker on a fresh consumer group and fresh topics, as the test session's worker starts: helpers for
tests/test_worker_fresh_group.py, and a repeatable measurement of a fresh worker's first seconds.

`python -m tests.utils.fresh_worker --runs 20` starts a worker on new topics and a new group each run,
sends one reading to every readings partition at once, and prints, as JSON, how long each partition
took to be stored (`--fresh-kafka`: a freshly formatted broker before each run, as a fresh clone has).
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from quantrac.db import connect, save_stations
from quantrac.settings import Settings, get_settings
from tests.utils.builders import make_station
from tests.utils.processes import Process, own_pipeline


@dataclass
class FreshGroup:
    """Settings and subprocess environment of a worker on new topics and a new consumer group, and one
    station per readings partition (its readings are sent to that partition)."""
    settings: Settings
    env: dict[str, str]
    stations: dict[int, str]
    log_dir: Path
    workers: list[Process] = field(default_factory=list)

    def start_worker(self, **extra_env: str) -> Process:
        """A worker subprocess of this group (stopped by `stop`)."""
        worker = Process(f"worker-{self.settings.worker_id}-{len(self.workers)}", ["worker"], self.log_dir, {**self.env, **extra_env})
        self.workers.append(worker)
        return worker

    def stop(self) -> None:
        """Stop every worker started (a killed one is only reaped)."""
        for worker in self.workers:
            worker.stop()

    def send(self, per_partition: int = 1, partitions: list[int] | None = None) -> None:
        """`per_partition` records on every readings partition (or those of `partitions`, named explicitly),
        one reading each, a minute apart."""
        from kafka import KafkaProducer

        from quantrac.wire import encode_wire_readings

        producer = KafkaProducer(bootstrap_servers=self.settings.kafka_bootstrap.split(","), acks="all")
        try:
            now = datetime.now(timezone.utc).replace(microsecond=0)
            for partition, station_id in self.stations.items():
                if partitions is not None and partition not in partitions:
                    continue
                for i in range(per_partition):
                    ts = (now - timedelta(minutes=i)).isoformat()
                    reading = {"parameter": "COD", "value": 10.0 + i, "unit": "mg/L", "ts": ts, "status": "00"}
                    producer.send(self.settings.readings_topic, key=station_id.encode(), partition=partition,
                                  value=encode_wire_readings(station_id, [reading], now, "mqtt"))
            producer.flush(30)
        finally:
            producer.close()

    def stored(self) -> dict[int, int]:
        """Readings stored, per readings partition (by its station)."""
        with connect(self.settings.pg_dsn) as conn:
            rows = dict(conn.execute("SELECT station_id, count(*) FROM readings WHERE station_id = ANY(%s) GROUP BY station_id",
                                     (list(self.stations.values()),)).fetchall())
        return {p: int(rows.get(sid, 0)) for p, sid in self.stations.items()}

    def committed(self) -> dict[int, int | None]:
        """The group's committed offset per readings partition, as Kafka holds it (None: never committed)."""
        from kafka import KafkaAdminClient

        admin = KafkaAdminClient(bootstrap_servers=self.settings.kafka_bootstrap.split(","), client_id="quantrac-test-offsets")
        try:
            found = admin.list_consumer_group_offsets(self.settings.worker_id)
        finally:
            admin.close()
        by_partition = {tp.partition: meta.offset for tp, meta in found.items() if tp.topic == self.settings.readings_topic}
        return {p: by_partition.get(p) for p in self.stations}


def fresh_group(stack: Settings, log_dir: Path, create_topics: bool = True) -> FreshGroup:
    """New topics, consumer group and stations (one per readings partition) in the `fresh` test database."""
    tag = f"fresh{uuid.uuid4().hex[:6]}"
    own, env = own_pipeline(stack, "fresh", create_topics=False)
    own = own.model_copy(update={"readings_topic": f"quantrac.{tag}.readings", "deadletter_topic": f"quantrac.{tag}.deadletter",
                                 "alerts_topic": f"quantrac.{tag}.alerts", "worker_id": f"quantrac-worker-{tag}"})
    env |= {"QUANTRAC_READINGS_TOPIC": own.readings_topic, "QUANTRAC_DEADLETTER_TOPIC": own.deadletter_topic,
            "QUANTRAC_ALERTS_TOPIC": own.alerts_topic, "QUANTRAC_WORKER_ID": own.worker_id, "QUANTRAC_WORKER_METRICS_PORT": "0"}
    stations = {p: make_station(f"F-{tag}-{p}") for p in range(own.topic_partitions)}
    with connect(own.pg_dsn) as conn:
        save_stations(conn, {s.id: s for s in stations.values()})
    if create_topics:
        from quantrac.kafka_topics import ensure_topics

        ensure_topics(own)
    return FreshGroup(own, env, {p: s.id for p, s in stations.items()}, log_dir)


def time_to_store(stack: Settings, log_dir: Path, deadline_s: float, burst: int = 0) -> dict[str, object]:
    """Start a worker on a fresh group, send one reading to every partition at once, and poll until each
    is stored or `deadline_s` passes: seconds from the start to each partition's reading stored.

    With `burst`, as a test session does: one reading on partition 0 first (the session's probe), stored,
    then `burst` records on every other partition at once; `missing` then names partitions not stored whole."""
    group = fresh_group(stack, log_dir)
    started = time.monotonic()
    worker = group.start_worker()
    seen: dict[int, float] = {}
    expected = dict.fromkeys(group.stations, 1)
    try:
        if burst:
            group.send(partitions=[0])
            while not group.stored()[0] and time.monotonic() - started < deadline_s:
                time.sleep(0.2)  # poll interval, bounded by deadline_s
            group.send(per_partition=burst, partitions=[p for p in group.stations if p])
            expected = {p: 1 if p == 0 else burst for p in group.stations}
        else:
            group.send()
        while len(seen) < len(group.stations) and time.monotonic() - started < deadline_s:
            assert worker.alive(), f"the worker exited:\n{worker.tail()}"
            for p, n in group.stored().items():
                if n >= expected[p] and p not in seen:
                    seen[p] = round(time.monotonic() - started, 1)
            time.sleep(0.5)  # poll interval, bounded by deadline_s
        committed = group.committed()
    finally:
        group.stop()
    missing = sorted(set(group.stations) - set(seen))
    return {"group": group.settings.worker_id, "slowest_s": None if missing else max(seen.values()), "missing": missing,
            "stored": group.stored(), "committed": committed, "stored_after_s": seen, "log": str(worker.log_path)}


def _fresh_kafka(stack: Settings) -> None:
    import shutil

    from stack import services

    services.down(stack, only=["kafka"])
    shutil.rmtree(stack.run_dir / "kafka", ignore_errors=True)
    services.up(stack, only=["kafka"])


def main() -> None:
    """Repeat fresh starts and print what each took, as JSON."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--deadline", type=float, default=90.0)
    parser.add_argument("--burst", type=int, default=0, help="probe partition 0, then this many records on every other one")
    parser.add_argument("--fresh-kafka", action="store_true",
                        help="before each run, stop this stack's Kafka, delete its data and start it again")
    args = parser.parse_args()
    stack = get_settings()
    log_dir = stack.run_dir / "test-logs" / "fresh-worker"
    results = []
    for _ in range(args.runs):
        if args.fresh_kafka:
            _fresh_kafka(stack)
        results.append(time_to_store(stack, log_dir, args.deadline, args.burst))
        print(json.dumps(results[-1]), flush=True)
    print(json.dumps({"runs": len(results), "incomplete": sum(1 for r in results if r["slowest_s"] is None),
                      "slowest_s": sorted(float(str(r["slowest_s"])) for r in results if r["slowest_s"] is not None)}))


if __name__ == "__main__":
    main()
