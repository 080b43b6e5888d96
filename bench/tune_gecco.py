"""Tune the drinking-water detector preset on the GECCO 2018 training part only, and write it as data.

GECCO 2018 ships one labelled file, so it is split by time (`bench.detection.GECCO_SPLIT`): this
script sees only the rows before the split; `bench/detection.py` reports on the rows after it.

Method (deterministic: a fixed grid, no randomness):
1. every candidate channel of `candidates()` is streamed once over the training rows with
   `bench.detection.gecco_flags` (the benchmark's own code path, no look-ahead);
2. the first channel is the multivariate one that watches the most water-quality parameters while it
   keeps, on the training rows, at most `--max-false-per-day` false alarms a day and catches at least
   `--min-event-recall` of the events; among those, the highest point-wise F1. Coverage comes first
   because the training events move only some parameters (Redox, pH, Cl_2), and a preset tuned on
   F1 alone watches just those: it would miss an event on conductivity or turbidity. The alarm budget
   is the issue's, and the F1 decides only the hyperparameters;
3. greedy forward selection on the training point-wise F1 of the union of flags: add the channel
   that raises it most, at most one per (detector, columns), until no channel adds `--min-gain`.

The chosen channels are written to `quantrac/data/presets/drinking_water.json` with how they were
chosen and their training figures. The grid is small enough for a few minutes on one core;
`--max-seconds` stops streaming candidates once spent (the selection then uses those streamed,
and the file says so).

    python bench/tune_gecco.py [--out FILE] [--max-seconds 1200] [--min-gain 0.002] [--max-false-per-day 1]
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

from bench.detection import (  # noqa: E402
    GECCO_DATA,
    GECCO_RESOLUTION,
    GECCO_SPLIT,
    Gecco,
    gecco_flags,
    gecco_load,
    gecco_metrics,
    gecco_score,
    runs,
)
from processors.detectors.presets import preset_path  # noqa: E402

QUALITY = ["Cl", "pH", "Redox", "Cl_2"]
GROUPS = (QUALITY, ["Cl", "pH", "Redox", "Leit", "Cl_2"], ["Cl", "pH", "Redox", "Leit", "Trueb", "Cl_2"])
"""Multivariate groups, narrowest first: the quality parameters, then with conductivity, then with turbidity
(temperature and the two flows are operating conditions, not water quality)."""
LEARN_CLIPS = (None, 2.0, 3.0)
"""``learn_clip`` of the multivariate channel (None: every learned vector counts in full)."""
SPIKE_COLUMNS = ("Cl", "pH", "Redox", "Leit", "Trueb", "Cl_2", "Tp")
SPIKE_THRESHOLDS = (5.0, 8.0, 12.0, 16.0, 24.0)
MULTIVARIATE_THRESHOLDS = (6.0, 8.0, 10.0)
DRIFT_COLUMNS = ("Cl", "pH", "Redox", "Leit")
DRIFT_THRESHOLDS = (20.0, 40.0)
HYSTERESIS = (None, 0.5, 0.67)
"""``threshold_off`` as a share of ``threshold`` (None: no hysteresis); with it an excursion is one contiguous run of flags."""


def _off(threshold: float, share: float | None) -> float | None:
    return None if share is None else threshold * share


def candidates() -> list[dict[str, Any]]:
    """The grid: robust spike per column, Mahalanobis over the quality group (each with and without hysteresis), CUSUM drift per column."""
    out: list[dict[str, Any]] = []
    for col in SPIKE_COLUMNS:
        for thr in SPIKE_THRESHOLDS:
            for share in HYSTERESIS[:2]:
                out.append({"detector": "spike", "columns": [col],
                            "params": {"window": 60, "threshold": thr, "grace_period": 30, "eps": GECCO_RESOLUTION[col],
                                       "relearn_after": 60, "threshold_off": _off(thr, share)}})
    for group in GROUPS:
        for thr in MULTIVARIATE_THRESHOLDS:
            for share in HYSTERESIS:
                for clip in LEARN_CLIPS:
                    out.append({"detector": "multivariate", "columns": group,
                                "params": {"names": group, "alpha": 0.01, "threshold": thr, "grace_period": 120,
                                           "eps": [GECCO_RESOLUTION[c] for c in group], "relearn_after": 60,
                                           "threshold_off": _off(thr, share), "learn_clip": clip}})
    for col in DRIFT_COLUMNS:
        for h in DRIFT_THRESHOLDS:
            out.append({"detector": "drift", "columns": [col],
                        "params": {"k": 1.0, "h": h, "eps": GECCO_RESOLUTION[col], "relearn_after": 60}})
    return out


def f1(y: np.ndarray, flags: np.ndarray) -> float:
    tp = int(np.sum(flags & y))
    denominator = int(flags.sum()) + int(y.sum())
    return 2 * tp / denominator if denominator else 0.0


def first_channel(flags: list[np.ndarray], grid: list[dict[str, Any]], y: np.ndarray, max_false_per_day: float,
                  min_event_recall: float) -> int | None:
    """The multivariate channel watching the most parameters within the alarm budget, then the best F1 (see above)."""
    fit = []
    for i, channel in enumerate(grid):
        if channel["detector"] != "multivariate":
            continue
        m = gecco_metrics(y, flags[i])
        if (m["false_alarms_per_day"] or 0.0) <= max_false_per_day and (m["event_recall"] or 0.0) >= min_event_recall:
            fit.append((len(channel["columns"]), m["f1"], -i))
    return -max(fit)[2] if fit else None


def select(flags: list[np.ndarray], grid: list[dict[str, Any]], y: np.ndarray, min_gain: float,
           first: int | None = None) -> list[int]:
    """Greedy forward selection of channel indices on F1 of the union, after `first` when given."""
    chosen: list[int] = [] if first is None else [first]
    union = np.zeros_like(y) if first is None else flags[first].copy()
    best = 0.0 if first is None else f1(y, union)
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


def tune(g: Gecco, max_seconds: float, min_gain: float, max_false_per_day: float = 1.0,
         min_event_recall: float = 0.8) -> dict[str, Any]:
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
    first = first_channel(flags, grid[:streamed], y, max_false_per_day, min_event_recall)
    chosen = select(flags, grid[:streamed], y, min_gain, first)
    channels = [grid[i] for i in chosen]
    check = gecco_score(channels, g, "train")
    return {
        "tuning": {
            "by": "bench/tune_gecco.py",
            "data": "GECCO 2018 Industrial Challenge training set (../shared/data/gecco2018), rows before "
                    f"{GECCO_SPLIT.isoformat()} only ({train.stop} rows, {len(runs(y))} events); the rows after it are "
                    "held out for bench/detection.py",
            "method": "each candidate channel streamed once over the training rows; first the multivariate channel "
                      "watching the most quality parameters with at most "
                      f"{max_false_per_day} false alarms a day and at least {min_event_recall:.0%} of the events caught "
                      "(best F1 among those), then greedy forward selection on point-wise F1 of the union of flags, at "
                      f"most one channel per detector and columns, min gain {min_gain}",
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
    parser.add_argument("--max-seconds", type=float, default=1200.0)
    parser.add_argument("--min-gain", type=float, default=0.002)
    parser.add_argument("--max-false-per-day", type=float, default=1.0)
    parser.add_argument("--min-event-recall", type=float, default=0.8)
    args = parser.parse_args(argv)
    preset = tune(gecco_load(args.data), args.max_seconds, args.min_gain, args.max_false_per_day, args.min_event_recall)
    args.out.write_text(json.dumps(preset, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(preset["tuning"], indent=2))
    return preset


if __name__ == "__main__":
    main()
