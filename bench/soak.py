"""Soak: a steady rate through MQTT → bridge → Kafka → worker → PostgreSQL for a long time.

Every sample interval it records each component's resident memory and CPU, the worker group's
consumer lag and how many readings are stored. The baselines come from the same run: each
component's memory in the first sample (growth is reported against it, with a least-squares slope
in MiB per hour over the whole run) and the readings offered (what was stored is compared with it).
When the pipeline cannot keep up with the rate, the backlog waits in Kafka (consumer lag), nothing
is dropped; after a 5-minute drain the readings not yet stored are reported with the lag left.

    python bench/soak.py [--minutes 30] [--rate 5000] [--stations 200] [--sample-s 60]
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kafka import KafkaAdminClient, KafkaConsumer  # noqa: E402

from bench.common import ProcessSample, soak_figures, write_result  # noqa: E402
from bench.e2e import consumer_lag, publish_at, running_pipeline, stored_since  # noqa: E402
from ingest.producer import CONSUMER_OPTIONS  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=5000.0, help="readings/s offered")
    parser.add_argument("--stations", type=int, default=200)
    parser.add_argument("--sample-s", type=float, default=60.0)
    args = parser.parse_args()
    with running_pipeline(args.stations) as (settings, conn, pids, stations):
        since = datetime.now(timezone.utc)
        offered: dict[str, Any] = {}

        def publish() -> None:
            try:
                offered.update(publish_at(settings, stations, args.rate, args.minutes * 60, set()))
            except Exception as exc:  # noqa: BLE001 (reported in the result, the soak's samples are kept)
                offered["publisher_error"] = f"{type(exc).__name__}: {exc}"

        publisher = threading.Thread(target=publish, name="soak-publisher", daemon=True)
        consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, **CONSUMER_OPTIONS)
        admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
        began = time.monotonic()
        publisher.start()
        samples: list[dict[str, Any]] = []
        meters = {name: ProcessSample(pid).start() for name, pid in pids.items()}
        stop = threading.Event()
        while publisher.is_alive():
            publisher.join(timeout=args.sample_s)
            usage = {name: meter.usage() for name, meter in meters.items()}
            meters = {name: ProcessSample(pid).start() for name, pid in pids.items()}
            sample = {"minute": round((time.monotonic() - began) / 60, 2), "lag_messages": consumer_lag(settings, consumer, admin),
                      "stored": stored_since(conn, since), "components": usage}
            samples.append(sample)
            print(f"soak minute {sample['minute']:.1f}: lag {sample['lag_messages']} stored {sample['stored']} "
                  f"rss {({n: u['rss_mib'] for n, u in usage.items()})}", file=sys.stderr, flush=True)
        deadline = time.monotonic() + 300
        while stored_since(conn, since) < offered.get("readings", 0) and time.monotonic() < deadline:
            stop.wait(1.0)  # drain: poll with a deadline
        stored = stored_since(conn, since)
        lag_after_drain = consumer_lag(settings, consumer, admin)
        consumer.close()
        admin.close()
    stored_rate, memory = soak_figures(samples, pids)
    write_result("soak", {
        "minutes": args.minutes, "offered_readings_per_s": args.rate, "stations": len(stations), **offered,
        "stored": stored, "not_stored_after_drain": offered.get("readings", 0) - stored,
        "drain_s_allowed": 300, "lag_after_drain_messages": lag_after_drain,
        "stored_rate": stored_rate,
        "lag_messages": {"first": samples[0]["lag_messages"], "last": samples[-1]["lag_messages"],
                         "max": max(s["lag_messages"] for s in samples)},
        "memory": memory, "samples": samples,
    })


if __name__ == "__main__":
    main()
