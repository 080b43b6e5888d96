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
from processors import rate_span, windows  # noqa: E402
from processors.detection import DetectionConfig, Plan, detector_params  # noqa: E402
from processors.detectors import DETECTORS, Detector  # noqa: E402
from processors.engine import advance  # noqa: E402
from processors.engine.common import steps  # noqa: E402
from processors.engine.drift import DriftBank  # noqa: E402
from processors.engine.flatline import FlatlineBank  # noqa: E402
from processors.engine.multivariate import MahalanobisBank  # noqa: E402
from processors.engine.rate import RateRows  # noqa: E402
from processors.engine.spike import SpikeBank  # noqa: E402
from processors.engine.windows import WindowRows  # noqa: E402
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
            flags[name].append(advance(banks[name], s, tt, xx).flag)
        mv = group_rows[lo:lo + batch]
        flags["multivariate"].append(advance(banks["multivariate"], s[mv] // p, tt[mv], vec[lo // p:(lo + batch) // p]).flag)
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


INTERVAL_S, LATENESS_S, COVERAGE, SPAN_S = 300, 600.0, 0.5, 300.0
"""The windows and rate of change as the worker runs them for the template station (`QUANTRAC_DETECT_*` defaults)."""


def windows_engine(rows: WindowRows, bins: RateRows, series: np.ndarray, t: np.ndarray, x: np.ndarray,
                   batch: int) -> tuple[int, float]:
    """Count every reading in its windows, judge what is due at its watermark, and fold it into its rate bins, in
    batches; (means judged, CPU seconds)."""
    means = 0
    start = time.process_time()
    for lo in range(0, series.size, batch):
        s, tt, xx = series[lo:lo + batch], t[lo:lo + batch], x[lo:lo + batch]
        for idx in steps(s):
            r = s[idx].astype(np.int64)
            rows.add(r, tt[idx], xx[idx])
            means += rows.due(r, tt[idx] - LATENESS_S, COVERAGE).at.size
            bins.add(r, tt[idx], xx[idx])
            bins.levels(r)
    return means, time.process_time() - start


def windows_scalar(states: list[dict[str, Any]], bins: list[list[list[Any]]], series: np.ndarray, t: np.ndarray,
                   x: np.ndarray) -> tuple[int, float]:
    """The same with `processors.windows` and `processors.rate_span`, reading by reading; (means judged, CPU seconds)."""
    stamps = [datetime.fromtimestamp(v, tz=timezone.utc) for v in t.tolist()]
    means = 0
    start = time.process_time()
    for row, ti, value, ts in zip(series.tolist(), t.tolist(), x.tolist(), stamps, strict=True):
        windows.add(states[row], ts, value, INTERVAL_S)
        means += len(windows.due(states[row], ti - LATENESS_S, COVERAGE))
        bins[row] = rate_span.add(bins[row], ti, value, SPAN_S)
        rate_span.levels(bins[row])
    return means, time.process_time() - start


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
    window_rows = WindowRows(np.full(args.stations * p, INTERVAL_S))
    rate_rows = RateRows(np.full(args.stations * p, SPAN_S))
    windows_engine(window_rows, rate_rows, *readings(args.stations, symbols, group, 12, args.warm - 12, rng)[:3], args.batch)
    window_states = [window_rows.state(i) for i in range(args.stations * p)]
    rate_bins = [rate_rows.bins(i) for i in range(args.stations * p)]
    engine_means, windows_engine_s = windows_engine(window_rows, rate_rows, series, t, x, args.batch)
    scalar_means, windows_scalar_s = windows_scalar(window_states, rate_bins, series, t, x)
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
        "windows_and_rate": {
            "what": "5-min/1-h/day buckets counted and judged at the watermark, rate-of-change bins and levels, per reading",
            "scalar_cpu_us_per_reading": round(windows_scalar_s / n * 1e6, 2),
            "engine_cpu_us_per_reading": round(windows_engine_s / n * 1e6, 2),
            "speedup": round(windows_scalar_s / windows_engine_s, 1) if windows_engine_s else None,
            "means_judged": {"scalar": scalar_means, "engine": engine_means},
            "states_differ": sum(window_rows.state(i) != window_states[i] or rate_rows.bins(i) != rate_bins[i]
                                 for i in range(args.stations * p))},
        "note": "CPU time (process_time) of one process on a shared machine; compare the two figures of the same run",
    })


if __name__ == "__main__":
    main()
