"""One alarm per incident: a level shift is one alarm that accepts the new level; alerts don't bridge gaps."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import numpy as np

from alerts import lifecycle
from alerts.rules import Condition
from bench.detection import AlarmLog
from processors.detection import DetectionConfig, detect, gap_s
from processors.detectors import CusumDrift, Flatline, RobustSpike
from quantrac.domain import ParameterSpec, Reading, Station, StationKind
from quantrac.settings import Settings

T0 = datetime(2026, 11, 20, tzinfo=timezone.utc)
WORKER = DetectionConfig.from_settings(Settings())
COD = ParameterSpec(symbol="COD", unit="mg/L", range_min=0, range_max=2000, resolution=0.1)
STATION = Station(id="INC-1", name="incidents", zone="Z", facility="F", kind=StationKind.WASTEWATER,
                  expected_interval_s=300, parameters={"COD": COD})


def play(values: list[tuple[datetime, float]], config: DetectionConfig = WORKER) -> tuple[AlarmLog, list[Condition]]:
    """Readings one message at a time through the worker's step, into the bench's alarm log (lifecycle hold)."""
    log, state, every = AlarmLog(), None, []
    for ts, v in values:
        out = detect(state, [Reading(station_id=STATION.id, parameter="COD", value=v, unit="mg/L", ts=ts)], STATION, config)
        state = out.state
        every.extend(out.conditions)
        log.feed(out.conditions, ts)
    return log, every


def normal(start: datetime, n: int, level: float = 60.0, seed: int = 0) -> list[tuple[datetime, float]]:
    rng = np.random.default_rng(seed)
    return [(start + timedelta(minutes=5 * i), round(level + float(rng.normal(0, 2.0)), 1)) for i in range(n)]


def test_a_level_shift_is_one_alarm_and_the_new_level_is_accepted_and_said() -> None:
    before = normal(T0, 2 * 288)
    after = normal(T0 + timedelta(days=2), 2 * 288, level=120.0, seed=1)
    log, conditions = play(before + after)
    spike_alarms = [a for a in log.alarms if a.rule == "anomaly_spike"]
    assert len(spike_alarms) == 1 and spike_alarms[0].ts == after[0][0]
    assert any("new level accepted" in c.message for c in conditions if c.rule == "anomaly_spike")
    last_active = max(c.ts for c in conditions if c.rule == "anomaly_spike" and c.active)
    assert last_active - after[0][0] <= timedelta(hours=2)  # not the ~60 readings (5 h) of before


def test_spike_after_a_level_shift_fires_relearn_after_readings_not_more() -> None:
    det = RobustSpike(threshold=8.0, relearn_after=6, resolution=0.1)
    flags = [det.update(v, ts).is_anomaly for ts, v in normal(T0, 200)]
    flags_after = [det.update(v, ts).is_anomaly for ts, v in normal(T0 + timedelta(days=1), 200, level=120.0, seed=1)]
    assert not any(flags) and sum(flags_after) == 6 and all(flags_after[:6])


def test_an_open_anomaly_alert_closes_at_the_gap_not_after_it() -> None:
    """Issue 19: an alert open before an 8-day gap resolves at the last reading before the gap, at once."""
    before = normal(T0, 2 * 288)
    stuck = [(before[-1][0] + timedelta(minutes=5 * (i + 1)), 61.3) for i in range(20)]  # a stuck analyser: flatline opens
    resumed = normal(stuck[-1][0] + timedelta(days=8), 12, seed=2)
    log, conditions = play(before + stuck + resumed)
    assert [a.rule for a in log.alarms] == ["anomaly_flatline"] and not log.open  # closed: not open after the gap
    closing = [c for c in conditions if c.data_stopped and c.rule == "anomaly_flatline"]
    assert [c.ts for c in closing] == [stuck[-1][0]] and "data stopped" in closing[0].message
    # the lifecycle resolves it at once, clear since the gap's start (not 15 min into the resumed data)
    opened = next(c for c in conditions if c.rule == "anomaly_flatline" and c.active)
    state, _ = lifecycle.open_alert(opened, opened.ts)
    resolved, event = lifecycle.observe_clear(state, closing[0], lifecycle.Policy(), resumed[0][0])
    assert (resolved.status, resolved.clear_since) == ("resolved", stuck[-1][0])
    assert event is not None and "data stopped" in (event.note or "")


def test_after_a_gap_the_detectors_relearn_before_judging() -> None:
    """Data that resumes at another level after a long gap raises no anomaly: the baseline before the gap is stale."""
    before = normal(T0, 3 * 288)
    resumed = normal(before[-1][0] + timedelta(days=3), 288, level=90.0, seed=3)
    log, _ = play(before + resumed)
    assert [a for a in log.alarms if a.rule.startswith("anomaly_") or a.rule == "rate_of_change"] == []


def test_without_the_gap_relearning_the_same_data_would_alarm() -> None:
    """The control for the test above: the same jump without a gap is an incident."""
    before = normal(T0, 3 * 288)
    jump = normal(before[-1][0] + timedelta(minutes=5), 288, level=90.0, seed=3)
    log, _ = play(before + jump)
    assert any(a.rule == "anomaly_spike" for a in log.alarms)


def test_the_gap_span_is_several_intervals_and_at_least_the_minimum() -> None:
    assert gap_s(STATION, WORKER) == max(WORKER.gap_intervals * 300, WORKER.gap_min_s)
    hourly = STATION.model_copy(update={"expected_interval_s": 3600})
    assert gap_s(hourly, WORKER) == WORKER.gap_intervals * 3600


def test_relearn_keeps_what_describes_the_instrument() -> None:
    spike, drift, flat = RobustSpike(), CusumDrift(), Flatline()
    for ts, v in normal(T0, 400):
        spike.update(v, ts), drift.update(v, ts), flat.update(v, ts)
    profile, step = drift.profile, spike.state()["step"]
    for det in (spike, drift, flat):
        det.relearn(3 * 86400.0)
    assert spike.state()["buffer"] == [] and spike.state()["step"] == step
    assert drift.profile == profile and drift.sums == (0.0, 0.0)
    assert flat.state()["anchor"] is None and flat.state()["repeat"]["n"] > 0
    assert drift.state()["baseline"]["n"] == 0  # a gap longer than the daily period: the baseline is rebuilt


def test_drift_keeps_its_baseline_over_a_gap_shorter_than_its_period() -> None:
    drift = CusumDrift()
    for ts, v in normal(T0, 400):
        drift.update(v, ts)
    n = drift.state()["baseline"]["n"]
    drift.relearn(2 * 3600.0)
    assert drift.state()["baseline"]["n"] == n and drift.state()["prev"] is None


def test_a_slow_daily_rise_is_not_a_spike_when_the_level_follows_it() -> None:
    """Temperature rising 1.3 °C over 5 h, reported to 0.1: the median of the last 60 values lags behind the
    rise and took it for a spike (the quiet bench's most common false alarm); the median of the last 5 follows it."""
    rng = np.random.default_rng(6)
    values = [(T0 + timedelta(minutes=5 * i), round(28.5 + 1.3 * max(0, i - 100) / 60 + float(rng.normal(0, 0.03)), 1))
              for i in range(160)]
    lagging = RobustSpike(threshold=8.0, relearn_after=6)
    following = RobustSpike(threshold=8.0, relearn_after=6, center_window=5)
    assert any(lagging.update(v, ts).is_anomaly for ts, v in values)
    assert not any(following.update(v, ts).is_anomaly for ts, v in values)
    assert following.update(35.0, values[-1][0] + timedelta(minutes=5)).is_anomaly  # a real spike still is one


def test_a_short_outage_closes_the_alerts_but_keeps_the_baselines() -> None:
    """90 minutes of silence: past the gap span (alerts close at it) but under QUANTRAC_DETECT_SPIKE_RELEARN_GAP_S and
    QUANTRAC_DETECT_RELEARN_GAP_S."""
    before = normal(T0, 2 * 288)
    stuck = [(before[-1][0] + timedelta(minutes=5 * (i + 1)), 61.3) for i in range(20)]
    resumed = normal(stuck[-1][0] + timedelta(minutes=90), 3, seed=7)
    _, conditions = play(before + stuck + resumed)
    assert any(c.data_stopped and c.rule == "anomaly_flatline" for c in conditions)
    after = [c for c in conditions if c.rule == "anomaly_spike" and c.ts >= resumed[0][0]]
    assert after and all("warming up" not in c.message for c in after)  # judged at once: the baseline was kept


def test_a_level_moved_during_a_three_hour_outage_is_no_spike_alarm() -> None:
    """The spike detector's level is the series' last before a gap; a parameter with a daily cycle has moved on after
    a few hours (the simulator bench's false spikes after 5.6 and 5.9 h gaps). After QUANTRAC_DETECT_SPIKE_RELEARN_GAP_S
    the spike detector relearns; the other detectors keep their baselines up to QUANTRAC_DETECT_RELEARN_GAP_S."""
    before = normal(T0, 2 * 288)
    resumed = normal(before[-1][0] + timedelta(hours=3), 40, level=80.0, seed=7)
    assert WORKER.relearn_gap_for("spike") == 7200 < 3 * 3600 < WORKER.relearn_gap_for("drift") == 21600
    log, _ = play(before + resumed)
    assert [a for a in log.alarms if a.rule == "anomaly_spike"] == []
    kept = replace(WORKER, spike_relearn_gap_s=WORKER.relearn_gap_s)  # as before: the old level kept
    log, _ = play(before + resumed, kept)
    assert [a.ts for a in log.alarms if a.rule == "anomaly_spike"] == [resumed[0][0]]


def test_a_spike_half_an_hour_after_a_three_hour_outage_is_caught() -> None:
    """The spike detector relearns its level after the outage, on its first 6 readings (`reseed_after`) with the scale
    it had learned, so a spike in the next hours is alerted; with a full warm-up it would be judged only after 30
    readings (2.5 h at 5 min) and this one would be missed."""
    before = normal(T0, 2 * 288)
    resumed = normal(before[-1][0] + timedelta(hours=3), 30, level=80.0, seed=7)
    spike_at = resumed[8][0]
    resumed[8] = (spike_at, 140.0)
    log, _ = play(before + resumed)
    assert [a.ts for a in log.alarms if a.rule == "anomaly_spike"] == [spike_at]
    params = {**WORKER.detector_params, "spike": {**WORKER.detector_params["spike"], "reseed_after": None}}
    log, _ = play(before + resumed, replace(WORKER, detector_params=params))
    assert [a.ts for a in log.alarms if a.rule == "anomaly_spike"] == []
