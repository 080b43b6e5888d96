"""How detection quality is scored (bench/detection.py, bench/tune_gecco.py) and the tuned preset it produces."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.detection import GECCO_COLUMNS, GECCO_SPLIT, Gecco, gecco_flags, gecco_metrics, runs
from bench.tune_gecco import first_channel, select
from ingest.scenarios import Incident, ground_truth, incident_from_truth
from processors.detectors import DETECTORS
from processors.detectors.presets import build, load_preset
from quantrac.registry import load_registry
from quantrac.settings import get_settings

T0 = datetime(2016, 8, 3, tzinfo=timezone.utc)


def test_gecco_metrics_hand_computed() -> None:
    y = np.array([0, 1, 1, 1, 0, 0, 0, 1, 1, 0] + [0] * 1430, dtype=bool)  # two events, one day of rows
    flags = np.zeros_like(y)
    flags[[2, 3, 5]] = True  # event 1 caught one minute late, one false alarm, event 2 missed
    m = gecco_metrics(y, flags)
    assert (m["precision"], m["recall"]) == (pytest.approx(2 / 3, abs=1e-4), pytest.approx(2 / 5, abs=1e-4))
    assert m["f1"] == pytest.approx(0.5, abs=1e-4)
    assert (m["events_caught"], m["alarms"], m["alarm_precision"]) == ("1/2", 2, 0.5)
    assert m["mean_delay_min"] == 1.0
    assert m["false_alarms_per_day"] == pytest.approx(1 / (1435 / 1440), abs=1e-3)


def test_runs_are_maximal_half_open() -> None:
    assert runs(np.array([1, 1, 0, 1, 0, 0, 1], dtype=bool)) == [(0, 2), (3, 4), (6, 7)]


def synthetic(n: int, seed: int) -> Gecco:
    rng = np.random.default_rng(seed)
    data = 7.0 + 0.05 * rng.standard_normal((n, len(GECCO_COLUMNS)))
    data[n // 2, 2] += 3.0
    data[rng.integers(0, n, 5), 3] = np.nan
    return Gecco([T0 + timedelta(minutes=i) for i in range(n)], data, np.zeros(n, dtype=bool), n // 2)


@settings(max_examples=10, deadline=None)
@given(cut=st.integers(min_value=1, max_value=299))
def test_gecco_flags_use_no_row_after_their_own(cut: int) -> None:
    """Changing every row after `cut` changes no flag up to it."""
    g = synthetic(300, seed=1)
    other = g.data.copy()
    other[cut:] = 1e6
    changed = Gecco(g.times, other, g.y, g.split)
    for channel in ({"detector": "spike", "columns": ["pH"], "params": {"window": 30, "grace_period": 10}},
                    {"detector": "multivariate", "columns": ["Cl", "pH", "Redox"],
                     "params": {"names": ["Cl", "pH", "Redox"], "grace_period": 20}}):
        np.testing.assert_array_equal(gecco_flags(channel, g)[:cut], gecco_flags(channel, changed)[:cut])


def test_greedy_selection_takes_the_best_union_and_stops_without_gain() -> None:
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0], dtype=bool)
    a = np.array([1, 1, 0, 0, 0, 0, 0, 0], dtype=bool)
    b = np.array([0, 0, 1, 1, 0, 0, 0, 0], dtype=bool)
    noisy = np.array([1, 1, 1, 0, 1, 1, 1, 1], dtype=bool)
    grid = [{"detector": "spike", "columns": [c]} for c in ("Cl", "pH", "Leit")]
    assert select([a, b, noisy], grid, y, min_gain=0.01) in ([0, 1], [1, 0])


def test_the_first_channel_watches_the_most_parameters_within_the_alarm_budget() -> None:
    """Coverage first: the widest multivariate group whose training figures keep the budget, whatever its F1."""
    y = np.zeros(4 * 1440, dtype=bool)
    y[100:120] = y[3000:3020] = True
    exact = y.copy()
    wider = y.copy()
    wider[100:105] = False
    noisy = y.copy()
    noisy[[500, 900, 1300, 1700, 2100, 2500, 3500, 3900, 4300, 4700, 5000, 5400]] = True  # 3 false alarms a day
    grid = [{"detector": "multivariate", "columns": c} for c in (["Cl", "pH"], ["Cl", "pH", "Leit"], ["Cl", "pH", "Leit", "Trueb"])]
    grid.append({"detector": "spike", "columns": ["Cl", "pH", "Leit", "Trueb", "Redox"]})
    assert first_channel([exact, wider, noisy, noisy], grid, y, max_false_per_day=1.0, min_event_recall=0.8) == 1
    assert select([exact, wider, noisy, noisy], grid, y, min_gain=0.01, first=1)[0] == 1


def test_the_drinking_water_preset_is_tuned_on_the_training_part_and_builds() -> None:
    preset = load_preset("drinking_water")
    assert GECCO_SPLIT.isoformat() in preset["tuning"]["data"] and "held out" in preset["tuning"]["data"]
    assert preset["channels"]
    for channel in preset["channels"]:
        det = build(channel)
        assert isinstance(det, DETECTORS[channel["detector"]])
        assert set(channel["columns"]) <= set(GECCO_COLUMNS)


def test_ground_truth_records_read_back_as_the_incidents_played() -> None:
    s = get_settings()
    stations = load_registry(s.registry_file, s.limits_dir)
    station = sorted(stations)[0]
    parameter = sorted(stations[station].parameters)[0]
    start = datetime(2026, 11, 3, 1, 2, 3, 456000, tzinfo=timezone.utc)
    played = [Incident(station, parameter, "drift", start, start + timedelta(hours=2), 1.4),
              Incident(station, parameter, "exceedance", start, start + timedelta(minutes=20), 1.5),
              Incident(station, None, "silent", start, start + timedelta(minutes=30), 1.0)]
    assert [incident_from_truth(ground_truth(i, stations)) for i in played] == played
