"""Backfill: `quantrac import` of a wide archive older than the default retention, beside the worker bench.

Builds a one-minute wide CSV of nine drinking-water parameters (the GECCO 2018 columns) starting in
2016, with gaps and empty cells, holding `--readings` readings (default 1,000,000), or takes a real
file (`--csv`, e.g. ../shared/data/gecco2018/gecco2018_train.csv, its EVENT column skipped). A fresh
database and topics of the `backfill` namespace on the running stack, an archive station with its own
retention, one worker; then the import runs as the `quantrac import` command. Measured:

- import rate: readings confirmed by Kafka per second of the import command (`import_log`);
- time to stored: from the command's start until every sent reading is in PostgreSQL;
- the same figures per second of worker time, beside the newest `bench/results/worker-*.json`
  of one worker (records pre-filled in Kafka, 8 readings each) and `e2e-*.json` with a sustained step (its highest).

    python bench/backfill.py [--readings 1000000] [--csv FILE] [--rate N]
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import (  # noqa: E402
    ProcessSample,
    namespace_env,
    newest,
    one_worker_run,
    quantrac_process,
    stored_so_far,
    write_result,
)
from bench.e2e import fresh_database, fresh_topics  # noqa: E402  (sets the e2e namespace: set ours after it)

NS = "backfill"
os.environ.update(namespace_env(NS))

import psycopg  # noqa: E402

from quantrac.db import migrate, save_stations  # noqa: E402
from quantrac.domain import ParameterSpec, Station, StationKind  # noqa: E402
from quantrac.settings import get_settings  # noqa: E402
from stack import services as stack  # noqa: E402

COLUMNS = {"Tp": ("°C", 8.5), "Cl": ("mg/L", 0.17), "pH": ("-", 8.3), "Redox": ("mV", 750.0), "Leit": ("µS/cm", 210.0),
           "Trueb": ("NTU", 0.012), "Cl_2": ("mg/L", 0.12), "Fm": ("m3/h", 1600.0), "Fm_2": ("m3/h", 700.0)}
START = datetime(2016, 8, 3, 9, 49, tzinfo=timezone.utc)


def archive_station() -> Station:
    days = (datetime.now(timezone.utc) - START).days + 30
    return Station(id="ARCHIVE-GECCO", name="Archive intake", zone="Bench", facility="Water works",
                   kind=StationKind.DRINKING_WATER, expected_interval_s=60, retention_days=days, history_only=True,
                   parameters={s: ParameterSpec(symbol=s, unit=u, range_min=-1e6, range_max=1e6, detectors=())
                               for s, (u, _) in COLUMNS.items()})


def write_archive(path: Path, readings: int) -> int:
    """Rows until at least `readings` readings: every 97th row blank in Cl, a 3-hour gap every 10 days. Returns the readings."""
    written = i = 0
    with path.open("w", newline="", encoding="utf-8") as handle:
        w = csv.writer(handle)
        w.writerow(["Time", *COLUMNS, "EVENT"])
        while written < readings:
            minute = i
            i += 1
            if minute % 14_400 < 180:
                continue
            cells = ["" if s == "Cl" and minute % 97 == 0 else f"{v * (1 + 0.001 * (minute % 13)):.4f}"
                     for s, (_, v) in COLUMNS.items()]
            written += sum(1 for c in cells if c)
            w.writerow([(START + timedelta(minutes=minute)).isoformat(), *cells, "FALSE"])
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--readings", type=int, default=1_000_000, help="readings in the generated archive")
    parser.add_argument("--csv", type=Path, default=None, help="import this wide CSV instead (EVENT column skipped)")
    parser.add_argument("--rate", type=float, default=None, help="--rate of the import (readings/s); default no cap")
    args = parser.parse_args()

    settings = get_settings()
    with stack.running(settings):
        fresh_database(settings)
        work = settings.run_dir / "bench-backfill"
        work.mkdir(parents=True, exist_ok=True)
        path = args.csv or work / "archive.csv"
        if args.csv is None:
            write_archive(path, args.readings)
        station = archive_station()
        with psycopg.connect(settings.pg_dsn, autocommit=True) as conn:
            migrate(conn)
            save_stations(conn, {station.id: station})
            fresh_topics(settings)
            env = {"QUANTRAC_LOG_LEVEL": "WARNING", "QUANTRAC_WORKER_METRICS_PORT": "0"}
            worker = quantrac_process(["worker"], env, work / "worker.log")
            try:
                worker_sample = ProcessSample(worker.pid).start()
                began = time.monotonic()
                cmd = [sys.executable, "-m", "cli", "import", "--station", station.id, str(path), "--no-progress",
                       "--skip-column", "EVENT", *(["--rate", str(args.rate)] if args.rate else [])]
                done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env}, timeout=3600)
                import_s = time.monotonic() - began
                if done.returncode != 0:
                    raise SystemExit(f"import failed ({done.returncode}):\n{done.stdout}\n{done.stderr[-3000:]}")
                rows_read, sent, rejected, outcomes, seconds = conn.execute(
                    "SELECT rows_read, readings_sent, rejected, outcomes, extract(epoch FROM finished_at - started_at) "
                    "FROM import_log ORDER BY id DESC LIMIT 1").fetchone()  # type: ignore[misc]
                deadline = time.monotonic() + 3600
                stored = 0
                while stored < sent and time.monotonic() < deadline:
                    stored = stored_so_far(conn, station.id)
                    time.sleep(1.0)  # poll the store, bounded by the deadline
                stored_s = time.monotonic() - began
                stored = conn.execute("SELECT count(*) FROM readings WHERE station_id = %s",  # once: no index serves it
                                      (station.id,)).fetchone()[0]  # type: ignore[index]
                usage = worker_sample.usage()
            finally:
                worker.terminate()
                worker.wait(30)
        worker_bench = newest("worker", one_worker_run)
        e2e = newest("e2e", lambda r: bool(r.get("highest_sustained_readings_per_s")))
        result = {
            "method": "wide CSV (9 parameters, one-minute rows from 2016, gaps and empty cells) imported with `quantrac import` "
                      "into a station with its own retention, one worker storing it; time to stored from the command's start",
            "file": path.name, "rows_read": rows_read, "readings_sent": sent, "rejected": rejected, "outcomes": outcomes,
            "import": {"seconds": round(float(seconds), 1), "command_seconds": round(import_s, 1),
                       "readings_per_s": round(sent / float(seconds))},
            "stored": {"readings": stored, "seconds_from_start": round(stored_s, 1), "readings_per_s": round(stored / stored_s),
                       "worker": usage},
            "beside": {
                "worker_bench_readings_per_s": worker_bench and worker_bench["worker"]["readings_per_s"],
                "worker_bench_file": worker_bench and worker_bench.get("finished_at"),
                "e2e_highest_sustained_readings_per_s": e2e and e2e.get("highest_sustained_readings_per_s"),
                "e2e_file": e2e and e2e.get("finished_at")},
        }
        write_result("backfill", result)


if __name__ == "__main__":
    main()
