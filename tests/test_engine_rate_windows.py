"""The engine's rate-of-change bins and windows give what `processors.rate_span` and `processors.windows` give."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processors import rate_span, windows
from processors.engine.common import steps
from processors.engine.rate import RateRows
from processors.engine.windows import BASES, Means, WindowRows
from tests.engine_series import Batch, batches, pieces

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(batch=batches(max_len=300), spans=st.lists(st.sampled_from([60.0, 300.0, 900.0, 3600.0]), min_size=4, max_size=4),
       start=st.booleans())
def test_rate_rows_equal_rate_span(batch: Batch, spans: list[float], start: bool) -> None:
    """Valid readings in order: bins and levels equal (exactly) after every reading; loaded bins resume the same."""
    keep = batch.status == 0
    keep &= np.isfinite(batch.value)
    series, t, value = batch.series[keep], batch.t[keep], batch.value[keep]
    bins: list[list[list[float]]] = [[] for _ in spans]
    rows = RateRows(np.array(spans))
    if start and series.size:  # learned state handed over from the scalar form
        first = series[0]
        bins[first] = rate_span.add([], float(t[0]) - spans[first], 1.0, spans[first])
        rows.load(int(first), bins[first])
    found = 0
    for piece in pieces(Batch(series, t, value, batch.status[keep], [c for c in batch.cuts if c <= series.size])):
        s, tt, vv = series[piece], t[piece], value[piece]
        for idx in steps(s):
            r = s[idx]
            rows.add(r, tt[idx], vv[idx])
            got = rows.levels(r)
            for k, i in enumerate(idx.tolist()):
                row = int(s[i])
                bins[row] = rate_span.add(bins[row], float(tt[i]), float(vv[i]), spans[row])
                want = rate_span.levels(bins[row])
                assert bool(got[0][k]) == (want is not None)
                if want is not None:
                    found += 1
                    assert (got[1][k], got[2][k], got[3][k], got[4][k]) == (want.from_t, want.from_level, want.to_t,
                                                                             want.to_level)
                assert rows.bins(row) == bins[row]


def test_rate_rows_find_the_levels_of_a_ramp() -> None:
    """Two series every 20 s and 60 s for two hours, a ramp: the levels are found, and equal the scalar ones."""
    t = 1.7e9 + np.arange(360) * 20.0
    rows = RateRows(np.array([300.0, 900.0]))
    bins: list[list[list[float]]] = [[], []]
    found = 0
    for i, ti in enumerate(t.tolist()):
        r = np.array([0, 1]) if i % 3 == 0 else np.array([0])
        v = np.full(r.size, 7.0 + 0.01 * i)
        rows.add(r, np.full(r.size, ti), v)
        got = rows.levels(r)
        for k, row in enumerate(r.tolist()):
            bins[row] = rate_span.add(bins[row], ti, float(v[k]), [300.0, 900.0][row])
            want = rate_span.levels(bins[row])
            assert bool(got[0][k]) == (want is not None)
            if want is not None:
                found += 1
                assert (got[1][k], got[2][k], got[3][k], got[4][k]) == (want.from_t, want.from_level, want.to_t, want.to_level)
    assert found > 300


def scalar_means(found: list[windows.WindowMean]) -> list[tuple[int, float, float, float, int, int, int]]:
    return [(BASES.index(m.basis), windows.epoch(m.start), windows.epoch(m.end), m.mean, m.n_valid, m.n_total, m.expected)
            for m in found]


def engine_means(means: Means, k: int) -> list[tuple[int, float, float, float, int, int, int]]:
    at = means.at == k
    return list(zip(means.basis[at].tolist(), means.start[at].tolist(), means.end[at].tolist(), means.mean[at].tolist(),
                    means.n_valid[at].tolist(), means.n_total[at].tolist(), means.expected[at].tolist(), strict=True))


@SETTINGS
@given(batch=batches(max_len=400), intervals=st.lists(st.sampled_from([10, 60, 300, 1800]), min_size=4, max_size=4),
       swaps=st.integers(0, 2**32 - 1), coverage=st.sampled_from([0.0, 0.5, 0.9]),
       lateness=st.sampled_from([0.0, 600.0, 7200.0]))
def test_window_rows_equal_windows(batch: Batch, intervals: list[int], swaps: int, coverage: float, lateness: float) -> None:
    """Readings (some out of order, some invalid) counted and judged at each series' watermark: the same means in the
    same order, and the same buckets; between pieces, a watermark moved on closes buckets with no reading."""
    t = batch.t.copy()
    rng = np.random.default_rng(swaps)
    for i in np.flatnonzero(rng.random(t.size - 1) < 0.2) if t.size > 1 else []:
        same_series = batch.series == batch.series[i]
        later = np.flatnonzero(same_series & (np.arange(t.size) > i))
        if later.size:
            t[i], t[later[0]] = t[later[0]], t[i]
    value = np.where(batch.status == 0, batch.value, np.nan)
    scalar: list[dict[str, object]] = [{} for _ in intervals]
    newest = np.full(len(intervals), -np.inf)
    rows = WindowRows(np.array(intervals))
    compared = 0
    for piece in pieces(Batch(batch.series, t, value, batch.status, batch.cuts)):
        s, tt, vv = batch.series[piece], t[piece], value[piece]
        for idx in steps(s):
            r = s[idx].astype(np.int64)
            newest[r] = np.maximum(newest[r], tt[idx])
            rows.add(r, tt[idx], vv[idx])
            got = rows.due(r, newest[r] - lateness, coverage)
            for k, i in enumerate(idx.tolist()):
                row = int(s[i])
                v = None if np.isnan(vv[i]) else float(vv[i])
                windows.add(scalar[row], windows.from_epoch(float(tt[i])), v, intervals[row])
                want = scalar_means(windows.due(scalar[row], float(newest[row]) - lateness, coverage))
                assert engine_means(got, k) == want
                compared += len(want)
                assert rows.state(row) == scalar[row]
        everyone = np.arange(len(intervals))
        newest += 3600.0
        got = rows.due(everyone, newest - lateness, coverage)
        for row in everyone.tolist():
            assert engine_means(got, row) == scalar_means(windows.due(scalar[row], float(newest[row]) - lateness, coverage))
            assert rows.state(row) == scalar[row]


def test_window_rows_judge_the_means_of_a_day() -> None:
    """A day at one minute for two series: every 5-min, hourly and daily mean equal; state handed over mid-day."""
    t = 1.7e9 + 60.0 * np.arange(1, 1500)
    x = np.round(7.0 + np.sin(t / 5000.0), 2)
    scalar: list[dict[str, object]] = [{}, {}]
    rows = WindowRows(np.array([60, 60]))
    means = 0
    for i, ti in enumerate(t.tolist()):
        if i == 700:
            handed = WindowRows(np.array([60, 60]))
            for row in (0, 1):
                handed.load(row, rows.state(row))
            rows = handed
        r = np.array([0, 1])
        rows.add(r, np.full(2, ti), np.array([x[i], np.nan if i % 7 == 0 else x[i]]))
        got = rows.due(r, np.full(2, ti - 600.0), 0.5)
        for row in (0, 1):
            v = None if row == 1 and i % 7 == 0 else float(x[i])
            windows.add(scalar[row], windows.from_epoch(ti), v, 60)
            want = scalar_means(windows.due(scalar[row], ti - 600.0, 0.5))
            assert engine_means(got, row) == want
            means += len(want)
    assert means > 2 * (24 * 12 + 24)
