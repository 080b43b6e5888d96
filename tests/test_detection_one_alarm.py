"""One alarm per incident across detectors: a spike or a level shift is one anomaly alert, not a spike and a drift."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from alerts.rules import Condition
from bench.detection import AlarmLog
from processors.detection import DetectionConfig, detect
from processors.detectors import CusumDrift, RobustSpike, Verdict
from processors.incident import Judged, join
from quantrac.domain import ParameterSpec, Reading, Station, StationKind
from quantrac.settings import Settings

T0 = datetime(2026, 11, 2, tzinfo=timezone.utc)
WORKER = DetectionConfig.from_settings(Settings())
HOLD = 900.0
NAMES = ("spike", "drift", "flatline")


def verdicts(flags: tuple[bool, ...]) -> list[Judged]:
    return [Judged(Verdict(f, 10.0 if f else 1.0, name, f"{name} says {f}"), 5.0) for name, f in zip(NAMES, flags, strict=False)]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 20), st.tuples(st.booleans(), st.booleans(), st.booleans())), min_size=1, max_size=60))
def test_joined_verdicts_make_one_alarm_per_incident(steps: list[tuple[int, tuple[bool, bool, bool]]]) -> None:
    """Whatever the detectors say, the conditions open one alert per incident, an incident lasting from a
    flag to the first reading on which all detectors are clear the hold after the last flag; no flag is lost."""
    claim, t, log = None, 0.0, AlarmLog(timedelta(seconds=HOLD))
    incidents, last_flag = 0, None
    for gap_min, flags in steps:
        t += 60.0 * gap_min
        claim, out = join(claim, verdicts(flags), t, HOLD)
        assert [j.verdict.kind for j in out] == list(NAMES)
        active = [j for j in out if j.verdict.is_anomaly]
        assert len(active) == (1 if any(flags) else 0)
        if any(flags):
            incidents += last_flag is None
            last_flag = t
        elif last_flag is not None and t - last_flag >= HOLD:
            last_flag = None
        assert (claim is None) == (last_flag is None)
        log.feed([_condition(j, t) for j in out], T0 + timedelta(seconds=t))
    assert len(log.alarms) == incidents


def _condition(j: Judged, t: float):
    from alerts.rules import Condition, Severity
    return Condition("S", "X", f"anomaly_{j.verdict.kind}", "instant", Severity.WARNING, j.verdict.score, j.threshold,
                     "d", T0 + timedelta(seconds=t), j.verdict.detail, active=j.verdict.is_anomaly)


def test_a_joiner_keeps_the_claimants_alert_open_and_says_so() -> None:
    claim, out = join(None, verdicts((True, False, False)), 0.0, HOLD)
    claim, out = join(claim, verdicts((False, True, False)), 600.0, HOLD)
    assert claim == ["spike", 600.0]
    assert out[0].verdict.is_anomaly and out[0].verdict.kind == "spike"
    assert out[0].verdict.detail.startswith("drift detector: ") and "joined the open spike alert" in out[0].verdict.detail
    assert not out[1].verdict.is_anomaly


def test_after_the_hold_another_detector_opens_a_new_incident_of_its_own() -> None:
    claim, _ = join(None, verdicts((True, False, False)), 0.0, HOLD)
    claim, _ = join(claim, verdicts((False, False, False)), 600.0, HOLD)
    assert claim == ["spike", 0.0]
    claim, _ = join(claim, verdicts((False, False, False)), HOLD, HOLD)
    assert claim is None
    claim, out = join(claim, verdicts((False, True, False)), HOLD + 60.0, HOLD)
    assert claim == ["drift", HOLD + 60.0]
    assert out[1].verdict.is_anomaly and not out[0].verdict.is_anomaly


def _play(values: list[float], station: Station) -> AlarmLog:
    log, state = AlarmLog(), None
    for i, v in enumerate(values):
        ts = T0 + timedelta(minutes=i)
        out = detect(state, [Reading(station_id=station.id, parameter="X", value=v, unit="u", ts=ts)], station, WORKER)
        state = out.state
        log.feed(out.conditions, ts)
    return log


STATION = Station(id="ONE-1", name="one", zone="Z", facility="F", kind=StationKind.WASTEWATER, expected_interval_s=60,
                  parameters={"X": ParameterSpec(symbol="X", unit="u")})


def test_a_level_shift_through_the_worker_is_one_anomaly_alert() -> None:
    """Before: a spike alert and a drift alert for the same shift (bench/stress.py, level_shifts: 2 per event)."""
    rng = np.random.default_rng(3)
    x = 60 + rng.normal(0, 2, 4 * 1440)
    x[2 * 1440:] += 25.0
    log = _play(np.round(x, 1).tolist(), STATION)
    anomaly = [a for a in log.alarms if a.rule.startswith("anomaly_")]
    assert len(anomaly) == 1 and anomaly[0].ts == T0 + timedelta(minutes=2 * 1440)


def test_both_detectors_flag_that_shift_so_the_joining_is_what_makes_it_one_alert() -> None:
    rng = np.random.default_rng(3)
    x = np.round(60 + rng.normal(0, 2, 4 * 1440), 1)
    x[2 * 1440:] += 25.0
    params = {name: WORKER.detector_params.get(name, {}) for name in ("spike", "drift")}
    spike, drift = CusumDrift(**params["drift"]), RobustSpike(**params["spike"])
    flagged = {"spike": [], "drift": []}
    for i, v in enumerate(x.tolist()):
        ts = T0 + timedelta(minutes=i)
        for det in (spike, drift):
            if det.update(v, ts).is_anomaly:
                flagged[det.name].append(i)
    assert all(any(2 * 1440 <= i < 2 * 1440 + 15 for i in flags) for flags in flagged.values())



@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 20), st.booleans()), min_size=1, max_size=80),
       st.sampled_from([0.0, 900.0, 1800.0, 3600.0]))
def test_after_an_incident_ends_an_echo_within_the_refractory_span_is_no_new_alarm(
        steps: list[tuple[int, bool]], refractory: float) -> None:
    """Any sequence of flags: a new alert opens exactly when a flag comes after the claim ended (clear for the hold)
    and at least `refractory` after the last flag that counted; an echo is clear, says so, and does not extend it."""
    claim, t, log = None, 0.0, AlarmLog(timedelta(seconds=HOLD))
    last_counted: float | None = None
    quiet_since_hold = True
    expected = 0
    for gap_min, flag in steps:
        t += 60.0 * gap_min
        if last_counted is not None and not flag and t - last_counted >= HOLD:
            quiet_since_hold = True
        claim, out = join(claim, verdicts((flag,)), t, HOLD, refractory)
        [j] = out
        if flag:
            if last_counted is None or (quiet_since_hold and t - last_counted >= refractory):
                expected += 1
            echo = last_counted is not None and quiet_since_hold and t - last_counted < refractory
            assert j.verdict.is_anomaly == (not echo)
            assert ("the same incident" in j.verdict.detail) == echo
            if not echo:
                last_counted, quiet_since_hold = t, False
        log.feed([Condition("S", "X", f"anomaly_{j.verdict.kind}", "instant", "warning", j.verdict.score, 5.0, "",
                            T0 + timedelta(seconds=t), "", active=j.verdict.is_anomaly)], T0 + timedelta(seconds=t))
    assert len(log.alarms) == expected


def _spike_series(second_at: int) -> list[float]:
    """60 + N(0, 1) at one minute, +40 spikes at minute 200 and at `second_at`."""
    x = 60.0 + np.random.default_rng(5).normal(0.0, 1.0, 400)
    x[200] += 40.0
    x[second_at] += 40.0
    return [float(v) for v in np.round(x, 2)]


def _worker_alarms(values: list[float], config: DetectionConfig) -> list[datetime]:
    station = Station(id="ECHO-1", name="echo", zone="Z", facility="F", kind=StationKind.WASTEWATER, expected_interval_s=60,
                      parameters={"X": ParameterSpec(symbol="X", unit="u", max_rate_per_min=None)})
    log, state = AlarmLog(timedelta(seconds=HOLD)), None
    for i, v in enumerate(values):
        at = T0 + timedelta(minutes=i)
        outcome = detect(state, [Reading(station_id=station.id, parameter="X", value=v, unit="u", ts=at)], station, config)
        state = outcome.state
        log.feed(outcome.conditions, at)
    return [a.ts for a in log.alarms if a.rule.startswith("anomaly_")]


def test_the_worker_makes_one_alert_of_a_spike_and_its_echo_past_the_alert_hold() -> None:
    """Through the worker's step and the alert lifecycle: a second spike 20 min after the first (past the 15-min hold)
    is the same incident at the worker's defaults, and its own alert without the span; 40 min later it is news."""
    first = T0 + timedelta(minutes=200)
    assert WORKER.incident_refractory_s == 1800.0
    assert _worker_alarms(_spike_series(220), WORKER) == [first]
    assert _worker_alarms(_spike_series(220), replace(WORKER, incident_refractory_s=0.0)) == [first, first + timedelta(minutes=20)]
    assert _worker_alarms(_spike_series(240), WORKER) == [first, first + timedelta(minutes=40)]
