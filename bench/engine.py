"""Detectors alone: the scalar River-style classes against the columnar engine, same run, same data, same state.

Stations copied from HD-DAIAN-WW01 (8 parameters: spike, drift and flatline on each, multivariate over
COD, TSS, NH4), with the worker's hyperparameters (`DetectionConfig.from_settings`). Every series is
first warmed by the engine over `--warm` readings (a day at 5 minutes: drift's profile is learned),
then its detectors are read back as scalar classes. Both then judge the same `--readings` readings
per series, cut into batches of `--batch` readings (arrival order, stations round-robin as the
worker's batches): the scalar classes reading by reading (`update(value, ts)`, timestamps built
beforehand), the engine batch by batch (`advance`). CPU time per reading, and whether every verdict
was the same.

    python bench/engine.py [--stations 200] [--warm 300] [--readings 20] [--batch 4000]
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import write_result  # noqa: E402
from processors.detection import DetectionConfig, Plan, detector_params  # noqa: E402
from processors.detectors import DETECTORS, Detector  # noqa: E402
from processors.engine import advance  # noqa: E402
from processors.engine.drift import DriftBank  # noqa: E402
from processors.engine.flatline import FlatlineBank  # noqa: E402
from processors.engine.multivariate import MahalanobisBank  # noqa: E402
from processors.engine.spike import SpikeBank  # noqa: E402
from quantrac.registry import load_registry  # noqa: E402
from quantrac.settings import Settings  # noqa: E402

TEMPLATE = "HD-DAIAN-WW01"
BANKS: dict[str, Any] = {"spike": SpikeBank, "drift": DriftBank, "flatline": FlatlineBank, "multivariate": MahalanobisBank}
BASE = {"pH": 7.2, "Temp": 25.0, "Flow": 120.0}


def detectors(stations: int) -> tuple[dict[str, list[Detector]], list[str], tuple[str, ...]]:
    """Fresh detectors per kind, one per series (station × parameter, or station × group), as the worker builds them."""
    settings = Settings()
    config = DetectionConfig.from_settings(settings)
    station = load_registry(settings.registry_file, settings.limits_dir)[TEMPLATE]
    plan = Plan.of(station, config)
    symbols = list(station.parameters)
    built: dict[str, list[Detector]] = {name: [] for name in BANKS}
    group = plan.vector[0].columns or ()
    for _ in range(stations):
        for symbol in symbols:
            for channel in plan.scalar[symbol]:
                params = detector_params(channel, [station.parameters[symbol]], config)
                built[channel.detector].append(DETECTORS[channel.detector](**params))
        specs = [station.parameters[p] for p in group]
        built["multivariate"].append(DETECTORS["multivariate"](**detector_params(plan.vector[0], specs, config)))
    return built, symbols, group


def readings(stations: int, symbols: list[str], group: tuple[str, ...], count: int, start: int,
             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`count` readings per series at 5 minutes from reading `start`, stations round-robin: (series, t, values, vectors).

    Values as `bench/worker.py` sends them (within limits, ±2 % noise, rounded to 0.001); a vector per
    station and time, of the group's values.
    """
    p = len(symbols)
    base = np.array([BASE.get(s, 2.0) for s in symbols])
    step = np.arange(start, start + count)
    values = np.round(base[None, None, :] * rng.uniform(0.98, 1.02, (count, stations, p)), 3)
    t = np.broadcast_to((1.7e9 + 300.0 * step)[:, None, None], values.shape)
    series = np.broadcast_to((np.arange(stations)[:, None] * p + np.arange(p)[None, :])[None], values.shape)
    cols = [symbols.index(g) for g in group]
    return series.reshape(-1).astype(np.int32), t.reshape(-1).copy(), values.reshape(-1), values[:, :, cols].reshape(-1, len(cols))


def play_engine(banks: dict[str, Any], series: np.ndarray, t: np.ndarray, x: np.ndarray, vec: np.ndarray, batch: int,
                stations: int, p: int) -> tuple[dict[str, np.ndarray], float]:
    """Every bank over the readings in batches of `batch`; (flags by detector, CPU seconds)."""
    flags: dict[str, list[np.ndarray]] = {name: [] for name in banks}
    group_rows = np.arange(series.size) % p == 0  # one vector per station and time
    start = time.process_time()
    for lo in range(0, series.size, batch):
        s, tt, xx = series[lo:lo + batch], t[lo:lo + batch], x[lo:lo + batch]
        for name in ("spike", "drift", "flatline"):
            flags[name].append(advance(banks[name], s, tt, xx)[1])
        mv = group_rows[lo:lo + batch]
        flags["multivariate"].append(advance(banks["multivariate"], s[mv] // p, tt[mv], vec[lo // p:(lo + batch) // p])[1])
    return {name: np.concatenate(f) for name, f in flags.items()}, time.process_time() - start


def play_scalar(dets: dict[str, list[Detector]], series: np.ndarray, t: np.ndarray, x: np.ndarray, vec: np.ndarray,
                p: int) -> tuple[dict[str, np.ndarray], float]:
    """Every scalar detector over the same readings, one at a time; (flags by detector, CPU seconds)."""
    stamps = [datetime.fromtimestamp(v, tz=timezone.utc) for v in t.tolist()]
    rows, values = series.tolist(), x.tolist()
    vectors = list(vec)
    flags: dict[str, list[bool]] = {name: [] for name in dets}
    start = time.process_time()
    for i, (row, value, ts) in enumerate(zip(rows, values, stamps, strict=True)):
        for name in ("spike", "drift", "flatline"):
            flags[name].append(dets[name][row].update(value, ts).is_anomaly)
        if i % p == 0:
            flags["multivariate"].append(dets["multivariate"][row // p].update(vectors[i // p], ts).is_anomaly)
    return {name: np.array(f) for name, f in flags.items()}, time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--stations", type=int, default=200)
    parser.add_argument("--warm", type=int, default=300, help="readings per series learned before the timed part")
    parser.add_argument("--readings", type=int, default=20, help="timed readings per series")
    parser.add_argument("--batch", type=int, default=4000, help="readings per engine batch")
    args = parser.parse_args()
    rng = np.random.default_rng(7)
    dets, symbols, group = detectors(args.stations)
    p = len(symbols)
    banks = {name: BANKS[name].from_detectors(d) for name, d in dets.items()}
    series, t, x, vec = readings(args.stations, symbols, group, args.warm, 0, rng)
    play_engine(banks, series, t, x, vec, args.batch, args.stations, p)
    dets = {name: [bank.detector(i) for i in range(len(bank))] for name, bank in banks.items()}
    series, t, x, vec = readings(args.stations, symbols, group, args.readings, args.warm, rng)
    engine_flags, engine_s = play_engine(banks, series, t, x, vec, args.batch, args.stations, p)
    scalar_flags, scalar_s = play_scalar(dets, series, t, x, vec, p)
    n = series.size
    differ = {name: int((engine_flags[name] != scalar_flags[name]).sum()) for name in dets}
    states_differ = sum(banks[name].state(i) != det.state() for name, ds in dets.items() for i, det in enumerate(ds))
    write_result("engine", {
        "stations": args.stations, "parameters": p, "series": args.stations * p, "warm_readings_per_series": args.warm,
        "readings": n, "batch": args.batch,
        "detectors": "spike, drift, flatline per reading; multivariate per station and time (COD, TSS, NH4)",
        "scalar_cpu_us_per_reading": round(scalar_s / n * 1e6, 2),
        "engine_cpu_us_per_reading": round(engine_s / n * 1e6, 2),
        "speedup": round(scalar_s / engine_s, 1) if engine_s else None,
        "verdicts_compared": {name: int(f.size) for name, f in scalar_flags.items()},
        "anomalies": {name: int(f.sum()) for name, f in scalar_flags.items()},
        "flags_differ": differ, "states_differ": int(states_differ),
        "note": "CPU time (process_time) of one process on a shared machine; compare the two figures of the same run",
    })


if __name__ == "__main__":
    main()
