"""Every incremental statistic against a numpy computation on the same data, after every update."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.detectors import EWMean, EWVar, Mahalanobis, RobustSpike, RollingMean

T0 = datetime(2026, 11, 29, tzinfo=timezone.utc)
values = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
alphas = st.floats(min_value=0.001, max_value=1.0)


def ew_weights(n: int, alpha: float) -> np.ndarray:
    """Weight of each of n values: a_i * prod_{j > i} (1 - a_j) with a_i = max(alpha, 1 / i)."""
    a = np.maximum(alpha, 1.0 / np.arange(1, n + 1))
    keep = np.append(np.cumprod((1.0 - a)[::-1])[::-1][1:], 1.0)
    return a * keep


def close(x: float, y: float, scale: float) -> bool:
    return bool(np.isclose(x, y, rtol=1e-7, atol=1e-9 * scale))


@settings(max_examples=100, deadline=None)
@given(
    window_s=st.integers(min_value=1, max_value=3600),
    events=st.lists(st.tuples(st.integers(min_value=0, max_value=7200), values), min_size=1, max_size=80),
)
def test_rolling_mean_matches_numpy_on_the_window(window_s: int, events: list[tuple[int, float]]) -> None:
    stat = RollingMean(timedelta(seconds=window_s))
    accepted: list[tuple[int, float]] = []
    for offset, x in events:
        newest = max((t for t, _ in accepted), default=None)
        expect_accept = newest is None or offset > newest - window_s
        assert stat.update(x, T0 + timedelta(seconds=offset)) is expect_accept
        if expect_accept:
            accepted.append((offset, x))
        newest = max(t for t, _ in accepted)
        in_window = np.array([v for t, v in accepted if t > newest - window_s])
        assert len(stat) == in_window.size
        mean = stat.get()
        assert mean is not None and close(mean, float(np.mean(in_window)), 1e6)


@settings(max_examples=100, deadline=None)
@given(alpha=alphas, xs=st.lists(values, min_size=1, max_size=150))
def test_ew_mean_and_var_match_weighted_numpy(alpha: float, xs: list[float]) -> None:
    mean_stat, var_stat = EWMean(alpha), EWVar(alpha)
    for n in range(1, len(xs) + 1):
        mean_stat.update(xs[n - 1])
        var_stat.update(xs[n - 1])
        x = np.array(xs[:n])
        w = ew_weights(n, alpha)
        assert np.isclose(w.sum(), 1.0)
        mean = float(np.sum(w * x))
        var = float(np.sum(w * (x - mean) ** 2))
        assert close(mean_stat.get(), mean, 1e6)
        assert close(var_stat.mean, mean, 1e6)
        assert close(var_stat.get(), var, 1e12)


@settings(max_examples=100, deadline=None)
@given(alpha=alphas, xs=st.lists(values, min_size=1, max_size=60))
def test_ew_var_matches_direct_recursion(alpha: float, xs: list[float]) -> None:
    stat = EWVar(alpha)
    mean, var = 0.0, 0.0
    for n, x in enumerate(xs, start=1):
        stat.update(x)
        a = max(alpha, 1.0 / n)
        mean, var = mean + a * (x - mean), (1 - a) * (var + a * (x - mean) ** 2)
        assert stat.mean == mean
        assert np.isclose(stat.get(), var, rtol=1e-12, atol=0.0)


@settings(max_examples=100, deadline=None)
@given(
    window=st.integers(min_value=1, max_value=40),
    grace=st.integers(min_value=1, max_value=20),
    threshold=st.floats(min_value=0.5, max_value=10.0),
    xs=st.lists(values, min_size=1, max_size=150),
)
def test_robust_spike_median_mad_match_numpy(window: int, grace: int, threshold: float, xs: list[float]) -> None:
    """The median/MAD arithmetic against numpy, with known levels and the tail-adaptive threshold off
    (tests/test_detectors_regimes.py covers those)."""
    det = RobustSpike(window=window, threshold=threshold, grace_period=grace, eps=1e-9, levels=0, tail_ref=None)
    learned: list[float] = []
    for i, x in enumerate(xs):
        verdict = det.update(x, T0 + timedelta(minutes=i))
        if learned and len(learned) >= grace:
            tail = np.array(learned[-window:])
            median = np.median(tail)
            mad = np.median(np.abs(tail - median))
            # The learned resolution: half the smallest change between consecutive learned values.
            steps = [abs(b - a) for a, b in zip(learned, learned[1:], strict=False) if abs(b - a) > 1e-9 * max(1.0, abs(b))]
            floor = min(steps) / 2 if steps else 0.0
            if mad == 0 and floor == 0 and x != median:  # the first change from a constant sets the step
                score = 0.0
            else:
                score = abs(x - median) / (max(1.4826 * mad, floor) + 1e-9)
            assert np.isclose(verdict.score, score, rtol=1e-9)
            assert verdict.is_anomaly is bool(verdict.score > threshold)
        else:
            assert not verdict.is_anomaly
        if not verdict.is_anomaly:
            learned.append(x)
        tail = np.array(learned[-window:])
        median, mad = det.median_mad()
        assert median == np.median(tail)
        assert mad == np.median(np.abs(tail - median))
        assert det.state()["buffer"] == learned[-window:]


@settings(max_examples=100, deadline=None)
@given(
    alpha=alphas,
    rows=st.lists(st.tuples(values, values, values), min_size=1, max_size=60),
)
def test_mahalanobis_mean_and_covariance_match_weighted_numpy(alpha: float, rows: list[tuple[float, float, float]]) -> None:
    det = Mahalanobis(["a", "b", "c"], alpha=alpha, grace_period=len(rows))
    for n in range(1, len(rows) + 1):
        det.update(np.array(rows[n - 1]), T0 + timedelta(minutes=n))
        x = np.array(rows[:n])
        w = ew_weights(n, alpha)
        mean = w @ x
        cov = (x - mean).T @ ((x - mean) * w[:, None])
        state = det.state()
        np.testing.assert_allclose(state["mean"], mean, rtol=1e-7, atol=1e-3)
        np.testing.assert_allclose(state["cov"], cov, rtol=1e-7, atol=1e3)
