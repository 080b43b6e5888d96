"""Detectors that know the instrument: quantised data is not anomalous, a constant normal state is not stuck."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.detection import DetectionConfig, detect
from processors.detectors import CusumDrift, Flatline, RobustSpike
from processors.detectors.base import StepEstimate
from quantrac.domain import ParameterSpec, Reading, Station, StationKind
from quantrac.settings import Settings

T0 = datetime(2026, 11, 30, tzinfo=timezone.utc)
WORKER = DetectionConfig.from_settings(Settings())


def quantised_ph(n: int, seed: int) -> np.ndarray:
    return np.round(np.random.default_rng(seed).normal(7.0, 0.004, n), 2)


def counts(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).poisson(0.3, n).astype(float)


def false_alarm_rate(det: object, values: np.ndarray, step_s: float = 60.0) -> float:
    flags = [det.update(float(v), T0 + timedelta(seconds=step_s * i)).is_anomaly for i, v in enumerate(values)]  # type: ignore[attr-defined]
    return sum(flags) / len(flags)


@pytest.mark.parametrize("series", [quantised_ph, counts], ids=["ph_0.01", "poisson_0.3"])
@pytest.mark.parametrize("make", [RobustSpike, lambda: CusumDrift(season_s=None), Flatline], ids=["spike", "drift", "flatline"])
def test_quantised_series_raise_almost_no_alarm_with_the_defaults(series, make) -> None:
    """Before: spike flagged 20 % of the pH readings and 25 % of the counts (MAD 0, eps 1e-9)."""
    rate = false_alarm_rate(make(), series(20_000, seed=1))
    assert rate <= 1e-3


@pytest.mark.parametrize("series", [quantised_ph, counts], ids=["ph_0.01", "poisson_0.3"])
def test_the_worker_defaults_raise_no_anomaly_on_quantised_series(series) -> None:
    """Through the worker's detection step with its default detectors (spike, drift, flatline), resolution learned."""
    spec = ParameterSpec(symbol="X", unit="-")
    station = Station(id="Q-1", name="q", zone="Z", facility="F", kind=StationKind.WASTEWATER, expected_interval_s=60,
                      parameters={"X": spec})
    state, alarms = None, 0
    values = series(3 * 1440 + 60, seed=2)  # three days: the drift detector judges after one
    for i, v in enumerate(values):
        r = Reading(station_id="Q-1", parameter="X", value=float(v), unit="-", ts=T0 + timedelta(minutes=i))
        out = detect(state, [r], station, WORKER)
        state = out.state
        alarms += sum(1 for c in out.conditions if c.active and c.rule.startswith("anomaly_"))
    assert alarms / len(values) <= 1e-3


def test_a_configured_resolution_floors_the_spike_scale() -> None:
    det = RobustSpike(window=30, threshold=6.0, grace_period=10, resolution=0.1)
    for _ in range(30):
        det.update(7.0, T0)
    assert not det.update(7.5, T0).is_anomaly  # 5 steps of 0.1: within 6 "MADs" of a flat series
    assert det.update(7.7, T0).is_anomaly


def test_the_learned_step_is_the_smallest_change_halved() -> None:
    s = StepEstimate()
    for x in (1.0, 1.0, 3.0, 2.5, 2.5 + 1e-12):
        s.update(x)
    assert s.step == 0.5 and s.floor(None) == 0.25 and s.floor(0.01) == 0.01


@settings(max_examples=20, deadline=None)
@given(step=st.sampled_from([0.001, 0.01, 0.1, 1.0]), sigma_steps=st.floats(0.2, 0.6), seed=st.integers(0, 2**31))
def test_spike_on_any_quantised_noise_is_quiet(step: float, sigma_steps: float, seed: int) -> None:
    """Gaussian noise of 0.2-0.6 steps rounded to the step: at most 0.2 % flagged at the default threshold."""
    values = np.round(np.random.default_rng(seed).normal(100.0, sigma_steps * step, 3000) / step) * step
    assert false_alarm_rate(RobustSpike(), values) <= 2e-3


def test_a_real_spike_on_quantised_data_is_still_caught() -> None:
    det = RobustSpike()
    for i, v in enumerate(quantised_ph(200, seed=3)):
        det.update(float(v), T0 + timedelta(minutes=i))
    assert det.update(7.5, T0 + timedelta(minutes=200)).is_anomaly


def test_flow_zero_through_the_night_is_a_normal_state_after_the_first_night() -> None:
    """A one-minute flow that reads 0 from 22:00 to 06:00: the first night is one stuck stretch, later ones are normal."""
    rng = np.random.default_rng(4)
    det = Flatline(n_intervals=12)
    alarms_per_night: list[int] = []
    stretches_per_night: list[int] = []
    for night in range(4):
        flags = []
        for minute in range(1440):
            hour = minute / 60
            value = 0.0 if hour >= 22 or hour < 6 else round(40 + rng.normal(0, 3), 1)
            flags.append(det.update(value, T0 + timedelta(days=night, minutes=minute)).is_anomaly)
        alarms_per_night.append(sum(flags))
        stretches_per_night.append(sum(1 for a, b in zip([False] + flags, flags, strict=False) if b and not a))
    assert stretches_per_night[0] <= 1  # the first night (from 22:00 of day 0) may be one stretch, not one per reading
    assert alarms_per_night[2:] == [0, 0]


def test_a_sensor_stuck_at_an_unusual_value_is_one_stretch_that_lasts() -> None:
    det = Flatline(n_intervals=12)
    rng = np.random.default_rng(5)
    flags = [det.update(round(float(v), 1), T0).is_anomaly for v in 40 + rng.normal(0, 3, 500)]
    flags += [det.update(41.3, T0).is_anomaly for _ in range(60)]
    assert not any(flags[:500])
    stuck = flags[500:]
    assert stuck.index(True) <= 14 and all(stuck[stuck.index(True):])  # open from the limit until it moves
