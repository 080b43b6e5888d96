"""The drinking-water preset on the GECCO 2018 held-out part, run through the worker's detection step, beside the bench's scoring.

`bench/detection.py` scores the preset's channels as built detectors over the CSV columns. A station
that names the preset runs them in the worker's `processors.detection.detect`, one message per row,
with its gap handling and complete-vector rule for groups. This prints both figures from the same
run, so a gap between what the bench scores and what ships shows up as a number.

Usage::

    python bench/gecco_worker.py [--gecco-data CSV] [--preset drinking_water]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.detection import GECCO_COLUMNS, GECCO_DATA, MINUTES_PER_DAY, gecco_flags, gecco_load, gecco_metrics  # noqa: E402
from processors.detection import DetectionConfig, detect  # noqa: E402
from processors.detectors.presets import load_preset  # noqa: E402
from quantrac.domain import ParameterSpec, Reading, Station, StationKind  # noqa: E402

FIGURES = ("f1", "precision", "recall", "event_recall", "events_caught", "false_alarms_per_day")


def archive_station(preset: str) -> Station:
    return Station(id="GECCO", name="GECCO 2018", zone="Archive", facility="-", kind=StationKind.DRINKING_WATER,
                   expected_interval_s=60, history_only=True, detector_preset=preset,
                   parameters={c: ParameterSpec(symbol=c, unit="-", range_min=-1e6, range_max=1e6) for c in GECCO_COLUMNS})


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gecco-data", type=Path, default=GECCO_DATA)
    parser.add_argument("--preset", default="drinking_water")
    args = parser.parse_args(argv)
    g = gecco_load(args.gecco_data)
    rows = g.part("test")
    warm = max(0, rows.start - MINUTES_PER_DAY)  # the bench's day of warm-up before the part
    started = time.perf_counter()
    bench = np.zeros(len(g.y), dtype=bool)
    for channel in load_preset(args.preset)["channels"]:
        bench |= gecco_flags(channel, g, warm, rows.stop)
    bench_s = time.perf_counter() - started
    station, state = archive_station(args.preset), None
    worker = np.zeros(len(g.y), dtype=bool)
    started = time.perf_counter()
    for i in range(warm, rows.stop):
        readings = [Reading(station_id=station.id, parameter=c, value=float(v), unit="-", ts=g.times[i])
                    for c, v in zip(GECCO_COLUMNS, g.data[i], strict=False) if not math.isnan(v)]
        out = detect(state, readings, station, DetectionConfig())
        state = out.state
        worker[i] = any(c.active and c.rule.startswith("anomaly_") for c in out.conditions)
    worker_s = time.perf_counter() - started
    result = {"preset": args.preset, "held_out_rows": rows.stop - rows.start,
              "bench_scoring": {k: v for k, v in gecco_metrics(g.y[rows], bench[rows]).items() if k in FIGURES},
              "bench_seconds": round(bench_s, 1),
              "worker_detect": {k: v for k, v in gecco_metrics(g.y[rows], worker[rows]).items() if k in FIGURES},
              "worker_seconds": round(worker_s, 1),
              "rows_flagged_differently": int(np.sum(bench[rows] != worker[rows]))}
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
