"""The registry's whole reload, as the bridge makes it in its MQTT thread every QUANTRAC_REGISTRY_REFRESH_S.

On the PRIVATE benchmark stack (PostgreSQL only is used), `--stations` stations of `bench/worker.py`
in a database of this run: each whole reload timed (wall and CPU of this process) the way
`quantrac.db.live_registry` makes it (its records' hashes, then only the changed records validated),
beside the same-run baseline, every record fetched and validated at each reload. The first reload of
the cached way validates everything, as a starting bridge does; it is reported apart.

    python bench/registry_reload.py [--stations 2000] [--reloads 5] [--keep-stack]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import prepare_private_stack, private_settings, write_result  # noqa: E402
from bench.worker import bench_stations  # noqa: E402
from quantrac.db import connect, load_registry_snapshot, migrate, save_stations  # noqa: E402
from quantrac.domain import Station  # noqa: E402
from stack import services as stack  # noqa: E402

SETTINGS = private_settings("benchregistry")


def timed(dsn: str, parsed: dict[str, tuple[str, Station]] | None) -> dict[str, float]:
    """One whole reload on a new connection, as `live_registry` makes each: wall and CPU milliseconds."""
    wall, cpu = time.perf_counter(), time.process_time()
    with connect(dsn) as conn:
        load_registry_snapshot(conn, None, parsed)
    return {"wall_ms": (time.perf_counter() - wall) * 1e3, "cpu_ms": (time.process_time() - cpu) * 1e3}


def medians(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: round(statistics.median(r[key] for r in runs), 1) for key in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stations", type=int, default=2000)
    parser.add_argument("--reloads", type=int, default=5)
    parser.add_argument("--keep-stack", action="store_true", help="leave the private stack running (and reuse it)")
    args = parser.parse_args()
    prepare_private_stack(SETTINGS, args.keep_stack)
    try:
        with connect(SETTINGS.pg_dsn) as conn:
            migrate(conn)
            save_stations(conn, bench_stations(args.stations))
            conn.commit()
        parsed: dict[str, tuple[str, Station]] = {}
        first = timed(SETTINGS.pg_dsn, parsed)
        cached: list[dict[str, Any]] = []
        baseline: list[dict[str, Any]] = []
        for _ in range(args.reloads):  # in turns, so that both meet the same machine
            baseline.append(timed(SETTINGS.pg_dsn, None))
            cached.append(timed(SETTINGS.pg_dsn, parsed))
        ours, base = medians(cached), medians(baseline)
        write_result("registry_reload", {
            "method": "whole reloads of the registry on a new connection each, medians of --reloads in turns",
            "stations": args.stations, "reloads": args.reloads,
            "changed_records_only": ours, "first_reload_validating_all": {k: round(v, 1) for k, v in first.items()},
            "baseline_every_record_validated": base,
            "cpu_ratio_to_baseline": round(ours["cpu_ms"] / max(base["cpu_ms"], 1e-9), 4),
        })
    finally:
        if not args.keep_stack:
            stack.down(SETTINGS)


if __name__ == "__main__":
    main()
