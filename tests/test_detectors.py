"""Hand-computed cases for each streaming detector."""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from processors.detectors import CusumDrift, Flatline, Mahalanobis, RobustSpike, Verdict

T0 = datetime(2026, 11, 29, 14, 0, tzinfo=timezone.utc)


def ts(i: int) -> datetime:
    return T0 + timedelta(minutes=5 * i)


def feed(det, values, start: int = 0) -> list[Verdict]:
    return [det.update(v, ts(start + i)) for i, v in enumerate(values)]


def noise(n: int, seed: int = 1, mu: float = 85.0, sigma: float = 1.0) -> list[float]:
    return (mu + sigma * np.random.default_rng(seed).standard_normal(n)).tolist()


# --- RobustSpike -------------------------------------------------------------------------


def test_spike_hand_computed_score() -> None:
    det = RobustSpike(window=5, threshold=5.0, grace_period=5, eps=0.0)
    assert not any(v.is_anomaly for v in feed(det, [10.0, 11.0, 9.0, 10.0, 12.0]))
    # median 10, |dev| = 0, 1, 1, 0, 2 -> MAD 1, scale 1.4826
    v = det.update(40.0, ts(5))
    assert v.is_anomaly and v.kind == "spike"
    assert v.score == pytest.approx(30.0 / 1.4826)
    assert "above the rolling median 10" in v.detail
    v = det.update(8.0, ts(6))
    assert not v.is_anomaly and v.score == pytest.approx(2.0 / 1.4826)


def test_spike_flags_clear_spike_not_steady_noise() -> None:
    det = RobustSpike(window=60, threshold=6.0, grace_period=30)
    verdicts = feed(det, noise(500))
    assert not any(v.is_anomaly for v in verdicts)
    assert max(v.score for v in verdicts) < 6.0
    v = det.update(85.0 + 12.0, ts(500))
    assert v.is_anomaly
    assert 8.0 < v.score < 20.0


def test_spike_warm_up_never_flags() -> None:
    det = RobustSpike(window=10, threshold=3.0, grace_period=4)
    verdicts = feed(det, [1.0, 1000.0, -50.0, 1e6])
    assert [v.is_anomaly for v in verdicts] == [False] * 4
    assert all(v.score == 0.0 and "warming up" in v.detail for v in verdicts)


def test_spike_does_not_pollute_baseline() -> None:
    det = RobustSpike(window=20, threshold=5.0, grace_period=10)
    feed(det, noise(50))
    before = det.state()
    median_mad = det.median_mad()
    v = det.update(412.0, ts(50))
    assert v.is_anomaly
    assert det.state()["buffer"] == before["buffer"]
    assert det.median_mad() == median_mad


def test_spike_relearns_after_a_level_change() -> None:
    det = RobustSpike(window=20, threshold=5.0, grace_period=5, relearn_after=3)
    feed(det, noise(40))
    verdicts = feed(det, noise(40, seed=2, mu=200.0), start=40)
    assert [v.is_anomaly for v in verdicts[:3]] == [True] * 3
    assert not any(v.is_anomaly for v in verdicts[3:])


@pytest.mark.parametrize("reseed_after", [None, 6])
def test_spike_after_a_gap_judges_again_after_reseed_after_values_when_it_knew_the_scale(reseed_after: int | None) -> None:
    """A station back from an outage at another level: with `reseed_after`, the window is seeded around its first six
    values with the scale learned before the gap, and a spike soon after is caught; without, it warms up for 30."""
    det = RobustSpike(window=60, threshold=6.0, grace_period=30, center_window=5, reseed_after=reseed_after)
    feed(det, noise(80))
    scale = det.median_mad()[1]
    det.relearn(3 * 3600.0)
    back = feed(det, noise(8, seed=3, mu=97.0), start=116)
    assert [v.detail.startswith("warming up") for v in back[:6]] == [True] * 6
    spike = det.update(140.0, ts(124))
    if reseed_after is None:
        assert not spike.is_anomaly and spike.detail == "warming up (9/30 samples)"
        return
    level = re.search(r"above the rolling median ([\d.]+)", spike.detail)
    assert spike.is_anomaly and level is not None and abs(float(level.group(1)) - 97.0) < 2.0
    assert det.median_mad()[1] == pytest.approx(max(scale, np.median(np.abs(np.array(noise(6, seed=3, mu=97.0))
                                                                           - np.median(noise(6, seed=3, mu=97.0))))))
    assert not any(v.is_anomaly for v in back) and det.state()["scale"] is None


def test_spike_warms_up_fully_after_a_gap_that_came_before_its_window_was_full() -> None:
    det = RobustSpike(window=60, grace_period=30, reseed_after=6)
    feed(det, noise(40))
    det.relearn(3 * 3600.0)
    assert det.state()["scale"] is None
    assert feed(det, noise(30, seed=4), start=50)[-1].detail == "warming up (30/30 samples)"


def test_spike_reseeds_again_after_a_second_gap_that_came_before_its_seeded_window_was_full() -> None:
    """A gateway that drops out twice within hours: the window seeded after the first gap carries the scale, so the
    second return also judges again after `reseed_after` values, not after a whole warm-up."""
    det = RobustSpike(window=60, threshold=6.0, grace_period=30, center_window=5, reseed_after=6)
    feed(det, noise(80))
    det.relearn(3 * 3600.0)
    feed(det, noise(10, seed=3, mu=97.0), start=116)
    assert det.state()["seeded"] and len(det.state()["buffer"]) < 60
    det.relearn(3 * 3600.0)
    back = feed(det, noise(6, seed=5, mu=95.0), start=200)
    assert [v.detail.startswith("warming up") for v in back] == [True] * 6
    spike = det.update(140.0, ts(206))
    assert spike.is_anomaly, spike.detail
    assert det.state()["seeded"] and det.state()["scale"] is None


def test_spike_refuses_a_reseed_not_shorter_than_its_warm_up() -> None:
    with pytest.raises(ValueError, match="reseed_after"):
        RobustSpike(grace_period=5, reseed_after=5)


def test_spike_ignores_non_finite() -> None:
    det = RobustSpike(window=5, grace_period=2)
    feed(det, [1.0, 2.0, 3.0])
    before = det.state()
    v = det.update(math.nan, ts(3))
    assert not v.is_anomaly and det.state() == before


# --- CusumDrift --------------------------------------------------------------------------


def test_cusum_hand_computed_sums() -> None:
    det = CusumDrift(alpha=1e-6, k=0.5, h=4.0, grace_period=4, eps=0.0, season_s=None, decorrelate=False)
    feed(det, [-1.0, 1.0, -1.0, 1.0])
    # baseline: mean 0, population std 1 (equal weights during the first 1/alpha values)
    v = det.update(2.0, ts(4))
    assert det.sums == pytest.approx((1.5, 0.0))
    assert not v.is_anomaly and v.score == pytest.approx(1.5)


def test_cusum_catches_slow_drift_within_expected_delay() -> None:
    det = CusumDrift(alpha=0.01, k=0.5, h=8.0, grace_period=100, season_s=None, decorrelate=False)
    assert not any(v.is_anomaly for v in feed(det, noise(300, sigma=1.0)))
    drift = [x + 0.02 * i for i, x in enumerate(noise(400, seed=3))]
    verdicts = feed(det, drift, start=300)
    first = next(i for i, v in enumerate(verdicts) if v.is_anomaly)
    # Mean offset reaches k + h / n, i.e. 0.5 + 8 / n std, after ~60-70 samples
    assert 30 <= first <= 120
    assert "upward CUSUM" in verdicts[first].detail


def test_cusum_stable_series_is_not_flagged() -> None:
    det = CusumDrift(alpha=0.01, k=0.5, h=8.0, grace_period=100, season_s=None, decorrelate=False)
    verdicts = feed(det, noise(5000, seed=4))
    assert sum(v.is_anomaly for v in verdicts) == 0


def test_cusum_resets_sums_after_alarm_and_keeps_baseline() -> None:
    det = CusumDrift(alpha=0.01, k=0.5, h=3.0, grace_period=50, season_s=None, decorrelate=False)
    feed(det, noise(200))
    far = [det.update(85.0 + 50.0, ts(200 + i)) for i in range(3)]  # one reading adds at most h / 2 - k = 1
    before = det.state()["baseline"]
    assert not any(v.is_anomaly for v in far) and det.sums[0] == pytest.approx(3.0)
    assert det.update(85.0 + 50.0, ts(203)).is_anomaly
    assert det.sums == (0.0, 0.0)
    assert det.state()["baseline"] == before


def test_cusum_warm_up_never_flags() -> None:
    det = CusumDrift(grace_period=10)
    verdicts = feed(det, [0.0, 1e9, -1e9, 5.0, 0.0, 7.0, 1e3, 2.0, 0.0, 1.0])
    assert not any(v.is_anomaly for v in verdicts)


# --- Flatline ----------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 3, 10])
def test_flatline_after_exactly_n_intervals(n: int) -> None:
    det = Flatline(n_intervals=n)
    verdicts = feed(det, [5.0, 7.0] + [7.0] * n + [7.0, 8.0])
    flags = [v.is_anomaly for v in verdicts]
    assert flags == [False] * (n + 1) + [True, True, False]
    assert verdicts[n + 1].score == float(n)


def test_flatline_tolerance_is_measured_from_the_anchor() -> None:
    det = Flatline(n_intervals=4, tolerance=0.5)
    flags = [v.is_anomaly for v in feed(det, [8.0, 8.25, 8.5, 8.25, 7.5, 8.75, 9.0])]
    assert flags == [False, False, False, False, True, False, False]
    creep = Flatline(n_intervals=4, tolerance=0.25)
    assert not any(v.is_anomaly for v in feed(creep, [8.0, 8.25, 8.5, 8.75, 9.0, 9.25]))


def test_flatline_steady_noise_is_not_flagged() -> None:
    det = Flatline(n_intervals=5)
    assert not any(v.is_anomaly for v in feed(det, noise(1000)))


def test_flatline_warm_up_never_flags() -> None:
    det = Flatline(n_intervals=2, grace_period=6)
    flags = [v.is_anomaly for v in feed(det, [3.0] * 8)]
    assert flags == [False] * 6 + [True, True]


# --- Mahalanobis -------------------------------------------------------------------------


def correlated(n: int, seed: int = 5) -> list[dict[str, float]]:
    rng = np.random.default_rng(seed)
    a = 20.0 + 2.0 * rng.standard_normal(n)
    b = 3.0 * a + 0.5 * rng.standard_normal(n)
    c = 7.0 + rng.standard_normal(n)
    return [{"a": float(x), "b": float(y), "c": float(z)} for x, y, z in zip(a, b, c, strict=False)]


def test_mahalanobis_catches_broken_correlation_within_ranges() -> None:
    det = Mahalanobis(["a", "b", "c"], alpha=0.01, threshold=6.0, grace_period=100)
    train = correlated(1000)
    assert sum(v.is_anomaly for v in feed(det, train)) <= 1
    a_range = (min(r["a"] for r in train), max(r["a"] for r in train))
    b_range = (min(r["b"] for r in train), max(r["b"] for r in train))
    consistent = {"a": 23.0, "b": 69.0, "c": 7.0}
    broken = {"a": 23.0, "b": 51.0, "c": 7.0}
    assert a_range[0] < broken["a"] < a_range[1] and b_range[0] < broken["b"] < b_range[1]
    assert not det.update(consistent, ts(1000)).is_anomaly
    v = det.update(broken, ts(1001))
    assert v.is_anomaly and v.kind == "multivariate"
    # b given a has residual std ~1 under 1 % shrinkage, and b is 18 below 3 * a
    assert 10.0 < v.score < 40.0
    assert v.detail.split("; ")[1].startswith("b ")


def test_mahalanobis_single_parameter_distance_is_a_z_score() -> None:
    det = Mahalanobis(["a", "b"], alpha=1e-6, threshold=3.0, grace_period=4, shrinkage=0.0, eps=0.0)
    feed(det, [[-1.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [1.0, 0.0]])
    v = det.update({"a": 2.5}, ts(4))
    assert v.score == pytest.approx(2.5) and not v.is_anomaly
    assert "incomplete vector not learned" in v.detail
    assert det.state()["n"] == 4


def test_mahalanobis_anomaly_does_not_enter_baseline_and_vector_input() -> None:
    det = Mahalanobis(["a", "b", "c"], alpha=0.01, threshold=6.0, grace_period=100)
    feed(det, correlated(300))
    before = det.state()
    x = np.array([23.0, 51.0, 7.0])
    assert det.update(x, ts(300)).is_anomaly
    after = det.state()
    assert (after["n"], after["mean"], after["cov"]) == (before["n"], before["mean"], before["cov"])
    assert x.tolist() == [23.0, 51.0, 7.0]


def test_mahalanobis_warm_up_never_flags() -> None:
    det = Mahalanobis(["a", "b"], grace_period=5)
    verdicts = feed(det, [[0.0, 0.0], [1e6, -1e6], [3.0, 1.0], [-1e9, 2.0], [1.0, 1.0]])
    assert not any(v.is_anomaly for v in verdicts)


# --- CusumDrift: daily pattern and autocorrelated noise -----------------------------------


def daily_series(days: float, seed: int = 11, phi: float = 0.9, amplitude: float = 3.0, sigma: float = 1.0) -> list[float]:
    """5-min values: a daily sinusoid of `amplitude` plus AR(1) noise of marginal std `sigma`."""
    n = int(days * 288)
    rng = np.random.default_rng(seed)
    noise_ = np.zeros(n)
    for i in range(1, n):
        noise_[i] = phi * noise_[i - 1] + math.sqrt(1 - phi**2) * sigma * rng.standard_normal()
    hours = np.arange(n) * 5 / 60
    return (50.0 + amplitude * np.sin(2 * np.pi * hours / 24) + noise_).tolist()


def test_drift_a_daily_sinusoid_with_autocorrelated_noise_raises_no_drift() -> None:
    values = daily_series(6)
    fixed = CusumDrift(k=1.0, h=20.0)
    assert sum(v.is_anomaly for v in feed(fixed, values)) == 0
    naive = CusumDrift(k=1.0, h=20.0, season_s=None, decorrelate=False)  # the detector before the fix
    assert sum(v.is_anomaly for v in feed(naive, values)) >= 5


def test_drift_a_slow_ramp_on_top_of_the_daily_pattern_is_caught() -> None:
    values = daily_series(5, seed=12)
    ramp_start = 3 * 288
    ramped = [x + max(0, i - ramp_start) * 0.25 for i, x in enumerate(values)]  # +3 std per hour
    verdicts = feed(CusumDrift(k=1.0, h=20.0), ramped)
    assert not any(v.is_anomaly for v in verdicts[:ramp_start])
    first = next(i for i, v in enumerate(verdicts) if v.is_anomaly)
    assert ramp_start < first <= ramp_start + 48  # within 4 hours
    assert "upward CUSUM" in verdicts[first].detail and "at this time of day" in verdicts[first].detail


def test_drift_learns_the_daily_profile_before_any_verdict() -> None:
    det = CusumDrift(grace_period=10, season_bins=24)
    verdicts = feed(det, daily_series(1, amplitude=10.0, sigma=0.1))
    assert all("warming up" in v.detail for v in verdicts)
    profile = det.profile
    assert profile[20] == pytest.approx(60.0, abs=1.0) and profile[8] == pytest.approx(40.0, abs=1.0)  # T0 is 14:00 UTC


def test_drift_state_saved_before_the_profile_existed_still_loads() -> None:
    det = CusumDrift(grace_period=5)
    feed(det, noise(20))
    old = {key: det.state()[key] for key in ("baseline", "pos", "neg", "run")}
    restored = CusumDrift.from_state(old, grace_period=5)
    assert restored.state()["baseline"] == old["baseline"] and restored.state()["first"] is None
