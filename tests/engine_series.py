"""Generated batches for the engine's equivalence tests: several series interleaved, with the shapes detectors meet."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st

SHAPES = ("noise", "constant", "shift", "spike", "nan", "gap", "long_gap", "fault", "calibration", "back")


@dataclass
class Batch:
    """Columns of readings (arrival order) and where they are cut into batches."""

    series: np.ndarray
    t: np.ndarray
    value: np.ndarray
    status: np.ndarray
    cuts: list[int]


def _segment(rng: np.random.Generator, shape: str, level: float, noise: float, length: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Values and statuses of one stretch of a series, and the level after it."""
    status = np.zeros(length, dtype=np.int8)
    if shape == "constant":
        return np.full(length, level), status, level
    if shape == "shift":
        level += noise * float(rng.choice([-30.0, 12.0, 40.0]))
    if shape == "back":
        level = float(np.round(level / 50.0) * 50.0)
    values = level + noise * rng.standard_normal(length)
    if shape == "spike":
        values[rng.integers(0, length)] += noise * 60.0
    if shape == "nan":
        values[rng.random(length) < 0.5] = np.nan
    if shape == "fault":
        status[:] = 2
    if shape == "calibration":
        status[:] = 1
    return values, status, level


def one_series(rng: np.random.Generator, shapes: list[tuple[str, int]], quantum: float, interval: float,
               t0: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Times, values and statuses of one series built from its stretches."""
    level, noise = float(rng.choice([0.0, 7.0, 50.0])), float(rng.choice([0.01, 0.5, 3.0]))
    times, values, statuses = [], [], []
    t = t0
    for shape, length in shapes:
        if shape == "gap":
            t += interval * 10
        if shape == "long_gap":
            t += 7 * 3600.0
        v, s, level = _segment(rng, shape, level, noise, length)
        if quantum:
            v = np.round(v / quantum) * quantum
        times.append(t + interval * np.arange(1, length + 1))
        t = float(times[-1][-1]) if length else t
        values.append(v)
        statuses.append(s)
    return np.concatenate(times), np.concatenate(values), np.concatenate(statuses)


@st.composite
def batches(draw: st.DrawFn, max_series: int = 4, max_len: int = 160) -> Batch:
    """A batch of up to `max_series` interleaved series, each up to `max_len` readings, cut at random points."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    n = draw(st.integers(1, max_series))
    stretch = st.tuples(st.sampled_from(SHAPES), st.integers(1, 40))
    columns = []
    for k in range(n):
        shapes = draw(st.lists(stretch, min_size=1, max_size=8))
        quantum = draw(st.sampled_from([0.0, 0.01, 1.0]))
        interval = draw(st.sampled_from([60.0, 300.0, 1800.0]))
        t, v, s = one_series(rng, shapes, quantum, interval, 1.7e9 + 37.0 * k)
        columns.append((np.full(t.size, k, dtype=np.int32)[:max_len], t[:max_len], v[:max_len], s[:max_len]))
    series = np.concatenate([c[0] for c in columns])
    # interleave: a random arrival order that keeps each series' own order
    keys = rng.random(series.size)
    order = np.lexsort((np.concatenate([np.arange(c[0].size) for c in columns]), series))
    arrival = np.argsort(keys, kind="stable")
    slots = np.empty(series.size, dtype=np.int64)
    slots[arrival] = np.arange(series.size)
    # each series' readings take that series' arrival slots in their own order
    ordered = np.empty(series.size, dtype=np.int64)
    for k in range(n):
        own = order[series[order] == k]
        ordered[np.sort(slots[own])] = own
    cuts = sorted(set(draw(st.lists(st.integers(0, series.size), max_size=4))))
    return Batch(series[ordered], np.concatenate([c[1] for c in columns])[ordered],
                 np.concatenate([c[2] for c in columns])[ordered], np.concatenate([c[3] for c in columns])[ordered], cuts)


def pieces(batch: Batch) -> list[slice]:
    """The batch cut at its cut points."""
    edges = [0, *batch.cuts, batch.series.size]
    return [slice(a, b) for a, b in zip(edges, edges[1:], strict=False) if b > a]
