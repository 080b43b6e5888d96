"""Tune the drinking-water detector preset on the GECCO 2018 training part only, and write it as data.

GECCO 2018 ships one labelled file, so it is split by time (`bench.detection.GECCO_SPLIT`): this
script sees only the rows before the split; `bench/detection.py` reports on the rows after it.

Method (deterministic: a fixed grid, no randomness):
1. every candidate channel of `candidates()` is streamed once over the training rows with
   `bench.detection.gecco_flags` (the benchmark's own code path, no look-ahead);
2. greedy forward selection on the training point-wise F1 of the union of flags: add the channel
   that raises it most, at most one per (detector, columns), until no channel adds `--min-gain`.

The chosen channels are written to `quantrac/data/presets/drinking_water.json` with how they were
chosen and their training figures. The grid is small enough for a few minutes on one core;
`--max-seconds` stops streaming candidates once spent (the selection then uses those streamed,
and the file says so).

    python bench/tune_gecco.py [--out FILE] [--max-seconds 900] [--min-gain 0.002]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.detection import (GECCO_DATA, GECCO_RESOLUTION, GECCO_SPLIT, Gecco, gecco_flags, gecco_load,  # noqa: E402
                             gecco_metrics, gecco_score, runs)
from processors.detectors.presets import preset_path  # noqa: E402

QUALITY = ["Cl", "pH", "Redox", "Cl_2"]
SPIKE_COLUMNS = ("Cl", "pH", "Redox", "Leit", "Trueb", "Cl_2", "Tp")
SPIKE_THRESHOLDS = (5.0, 8.0, 12.0, 16.0, 24.0)
MULTIVARIATE_THRESHOLDS = (6.0, 8.0, 10.0, 14.0)
DRIFT_COLUMNS = ("Cl", "pH", "Redox", "Leit")
DRIFT_THRESHOLDS = (20.0, 40.0)


def candidates() -> list[dict[str, Any]]:
    """The grid: robust spike per column, Mahalanobis over the quality group, CUSUM drift per column."""
    out: list[dict[str, Any]] = []
    for col in SPIKE_COLUMNS:
        for thr in SPIKE_THRESHOLDS:
            out.append({"detector": "spike", "columns": [col],
                        "params": {"window": 60, "threshold": thr, "grace_period": 30, "eps": GECCO_RESOLUTION[col],
                                   "relearn_after": 60}})
    for thr in MULTIVARIATE_THRESHOLDS:
        out.append({"detector": "multivariate", "columns": QUALITY,
                    "params": {"names": QUALITY, "alpha": 0.01, "threshold": thr, "grace_period": 120,
                               "eps": [GECCO_RESOLUTION[c] for c in QUALITY], "relearn_after": 60}})
    for col in DRIFT_COLUMNS:
        for h in DRIFT_THRESHOLDS:
            out.append({"detector": "drift", "columns": [col],
                        "params": {"k": 1.0, "h": h, "eps": GECCO_RESOLUTION[col], "relearn_after": 60}})
    return out


def f1(y: np.ndarray, flags: np.ndarray) -> float:
    tp = int(np.sum(flags & y))
    denominator = int(flags.sum()) + int(y.sum())
    return 2 * tp / denominator if denominator else 0.0


def select(flags: list[np.ndarray], grid: list[dict[str, Any]], y: np.ndarray, min_gain: float) -> list[int]:
    """Greedy forward selection of channel indices on F1 of the union."""
    chosen: list[int] = []
    union = np.zeros_like(y)
    best = 0.0
    while True:
        taken = {(grid[i]["detector"], tuple(grid[i]["columns"])) for i in chosen}
        scored = [(f1(y, union | flags[i]), -i) for i in range(len(flags))
                  if (grid[i]["detector"], tuple(grid[i]["columns"])) not in taken]
        if not scored:
            return chosen
        score, neg_i = max(scored)
        if score < best + min_gain:
            return chosen
        chosen.append(-neg_i)
        union |= flags[-neg_i]
        best = score


def tune(g: Gecco, max_seconds: float, min_gain: float) -> dict[str, Any]:
    train = g.part("train")
    y = g.y[train]
    grid = candidates()
    started = time.perf_counter()
    flags: list[np.ndarray] = []
    for channel in grid:
        if time.perf_counter() - started > max_seconds:
            break
        flags.append(gecco_flags(channel, g, 0, train.stop)[train])
    streamed = len(flags)
    chosen = select(flags, grid[:streamed], y, min_gain)
    channels = [grid[i] for i in chosen]
    check = gecco_score(channels, g, "train")
    return {
        "tuning": {
            "by": "bench/tune_gecco.py",
            "data": "GECCO 2018 Industrial Challenge training set (../shared/data/gecco2018), rows before "
                    f"{GECCO_SPLIT.isoformat()} only ({train.stop} rows, {len(runs(y))} events); the rows after it are "
                    "held out for bench/detection.py",
            "method": "each candidate channel streamed once over the training rows; greedy forward selection on "
                      f"point-wise F1 of the union of flags, at most one channel per detector and columns, min gain {min_gain}",
            "candidates": len(grid), "streamed": streamed,
            "train_f1_steps": [round(f1(y, np.logical_or.reduce([flags[j] for j in chosen[: n + 1]])), 4)
                               for n in range(len(chosen))],
            "train": {k: v for k, v in check.items() if k != "per_channel"},
            "seconds": round(time.perf_counter() - started, 1),
        },
        "channels": channels,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=GECCO_DATA)
    parser.add_argument("--out", type=Path, default=preset_path("drinking_water"))
    parser.add_argument("--max-seconds", type=float, default=900.0)
    parser.add_argument("--min-gain", type=float, default=0.002)
    args = parser.parse_args(argv)
    preset = tune(gecco_load(args.data), args.max_seconds, args.min_gain)
    args.out.write_text(json.dumps(preset, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(preset["tuning"], indent=2))
    return preset


if __name__ == "__main__":
    main()
