"""The pure detection step: windows, rules and detectors of one station, independent of how readings are batched."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import orjson
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from processors.detection import DetectionConfig, LiveDetectors, detect, detect_batch
from quantrac.domain import DetectorChannel, Reading, Status
from tests.utils.builders import make_station

T0 = datetime(2026, 11, 29, 3, 0, tzinfo=timezone.utc)
ST = make_station("T-1", cod_limit=100)
CFG = DetectionConfig()


def cod(i: int, value: float | None, status: Status = Status.MEASURING, minutes: int = 5) -> Reading:
    return Reading(station_id="T-1", parameter="COD", value=value, unit="mg/L", ts=T0 + timedelta(minutes=minutes * i), status=status)


def active(conditions, rule: str | None = None):
    return [c for c in conditions if c.active and (rule is None or c.rule == rule)]


def test_status_01_stays_out_of_the_means_and_overruns_the_calibration_allowance() -> None:
    readings = [cod(i, 900.0, Status.CALIBRATING) for i in range(13)]  # 13 slots = 65 min > 60 min continuous
    out = detect(None, readings, ST, CFG)
    assert not [c for c in active(out.conditions) if "exceedance" in c.rule]
    [overrun] = active(out.conditions, "calibration_overrun")[:1]
    assert overrun.ts == readings[-1].ts and overrun.value == 65
    back = detect(out.state, [cod(13, 20.0)], ST, CFG)
    assert [c.active for c in back.conditions if c.rule == "calibration_overrun"] == [False]


def test_three_consecutive_status_02_make_a_device_fault_which_clears_on_00() -> None:
    out = detect(None, [cod(i, None, Status.FAULT) for i in range(3)], ST, CFG)
    assert [c.active for c in out.conditions if c.rule == "device_fault"] == [False, False, True]
    back = detect(out.state, [cod(3, 20.0)], ST, CFG)
    assert [c.active for c in back.conditions if c.rule == "device_fault"] == [False]


def test_a_reading_later_than_the_lateness_is_counted_late_judged_instantly_and_kept_out_of_windows() -> None:
    out = detect(None, [cod(0, 10.0), cod(3, 10.0)], ST, CFG)          # newest 03:15
    late = Reading(station_id="T-1", parameter="COD", value=300.0, unit="mg/L", ts=T0 - timedelta(minutes=1))  # 16 min behind
    out = detect(out.state, [late], ST, CFG)
    assert out.late == [late] and out.state.late_count == 1
    assert [c.rule for c in active(out.conditions)] == ["exceedance"]
    within = detect(out.state, [cod(1, 300.0)], ST, CFG)  # 10 min behind: within lateness, updates its windows
    assert within.late == [] and [c.rule for c in active(within.conditions)] == ["exceedance"]
    assert int(within.state.parameters["COD"].windows["1h"][str(int(T0.timestamp()))][2]) == 3  # counted in its hour


def test_an_out_of_range_value_is_a_device_fault_not_an_exceedance() -> None:
    out = detect(None, [cod(0, 5000.0)], ST, CFG)
    assert [c.rule for c in active(out.conditions)] == ["out_of_range"]


def test_a_spike_after_warm_up_raises_anomaly_spike_and_does_not_shift_the_baseline() -> None:
    series = [cod(i, 50.0 + (i % 5) * 0.5, minutes=1) for i in range(60)]
    out = detect(None, series + [cod(60, 95.0, minutes=1)], ST, DetectionConfig(detectors=("spike",)))
    [spike] = active(out.conditions, "anomaly_spike")
    assert spike.ts == T0 + timedelta(minutes=60) and spike.severity.value == "warning"
    assert spike.value == 95.0 and spike.score is not None and spike.score > spike.limit  # the reading, and its score apart
    again = detect(out.state, [cod(61, 51.0, minutes=1)], ST, DetectionConfig(detectors=("spike",)))
    assert active(again.conditions, "anomaly_spike") == []


def test_multivariate_runs_over_a_group_the_station_reports() -> None:
    station = make_station("T-1").model_copy(update={
        "parameters": {**ST.parameters, "TSS": ST.parameters["COD"].model_copy(update={"symbol": "TSS"})},
        "channels": (DetectorChannel(detector="multivariate", columns=("COD", "TSS")),)})
    cfg = DetectionConfig()
    rs = []
    for i in range(80):
        base = 50.0 + (i % 7)
        rs += [cod(i, base, minutes=1), cod(i, 2 * base, minutes=1).model_copy(update={"parameter": "TSS"})]
    rs += [cod(80, 56.0, minutes=1), cod(80, 20.0, minutes=1).model_copy(update={"parameter": "TSS"})]  # breaks the correlation
    out = detect(None, rs, station, cfg)
    [mv] = active(out.conditions, "anomaly_multivariate")
    assert mv.parameter == "COD,TSS" and mv.ts == T0 + timedelta(minutes=80) and mv.value is None and mv.score > mv.limit


values = st.one_of(st.floats(0, 400, allow_nan=False), st.just(None))
series = st.lists(st.tuples(st.integers(-3, 3), values), min_size=1, max_size=60)


@hsettings(max_examples=40, deadline=None)
@given(series, st.lists(st.integers(1, 10), min_size=1, max_size=20))
def test_the_same_readings_give_the_same_conditions_however_they_are_batched(steps, cuts) -> None:
    """Live delivery (small batches, state through JSON as in the Faust table) equals one replayed burst."""
    readings, minute = [], 0
    for gap, value in steps:
        minute += gap * 5  # a negative gap is a reading delivered out of order (some later than the lateness)
        status = Status.MEASURING if value is not None else Status.FAULT
        readings.append(Reading(station_id="T-1", parameter="COD", value=value, unit="mg/L", ts=T0 + timedelta(minutes=minute), status=status))
    readings = list({r.ts: r for r in readings}.values())
    _, burst, _ = detect_batch(readings, {}, {"T-1": ST}, CFG)
    state, live, i, k = None, [], 0, 0
    while i < len(readings):
        n = cuts[k % len(cuts)]
        out = detect(state, readings[i:i + n], ST, CFG)
        state = orjson.loads(orjson.dumps(out.state.to_json()))
        live += out.conditions
        i, k = i + n, k + 1
    assert live == burst


@hsettings(max_examples=30, deadline=None)
@given(series, st.lists(st.integers(1, 10), min_size=1, max_size=20), st.lists(st.booleans(), min_size=1, max_size=20))
def test_detectors_kept_alive_between_batches_give_what_their_saved_state_gives(steps, cuts, retries) -> None:
    """The worker's live detectors (`LiveDetectors`) change nothing, also when a batch is retried
    from its older state (a failed transaction) or the state was written by someone else."""
    readings, minute = [], 0
    for gap, value in steps:
        minute += gap * 5
        status = Status.MEASURING if value is not None else Status.FAULT
        readings.append(Reading(station_id="T-1", parameter="COD", value=value, unit="mg/L", ts=T0 + timedelta(minutes=minute), status=status))
    readings = list({r.ts: r for r in readings}.values())
    cold_state, warm_state, live, i, k = None, None, LiveDetectors(), 0, 0
    while i < len(readings):
        batch = readings[i:i + cuts[k % len(cuts)]]
        cold = detect(cold_state, batch, ST, CFG)
        if retries[k % len(retries)]:
            detect(warm_state, batch, ST, CFG, live)  # a first attempt whose transaction fails: its state is dropped
        warm = detect(warm_state, batch, ST, CFG, live)
        assert warm.conditions == cold.conditions
        assert replace(warm.state, token=None) == replace(cold.state, token=None)
        cold_state, warm_state = orjson.loads(orjson.dumps(cold.state.to_json())), orjson.loads(orjson.dumps(warm.state.to_json()))
        i, k = i + len(batch), k + 1
    assert "token" not in cold_state and warm_state["token"] == live["T-1"][0]


def test_a_group_relearns_after_a_long_gap_and_not_after_a_short_one() -> None:
    """A group silent longer than the relearn gap starts its learning afresh (its detector's count restarts), and the
    first vector after any gap closes its alerts; after a gap shorter than the relearn gap it keeps what it learned."""
    station = make_station("T-1").model_copy(update={
        "parameters": {**ST.parameters, "TSS": ST.parameters["COD"].model_copy(update={"symbol": "TSS"})},
        "channels": (DetectorChannel(detector="multivariate", columns=("COD", "TSS")),)})
    cfg = DetectionConfig(relearn_gap_s=7200.0)

    def pair(minute: int) -> list[Reading]:
        base = 50.0 + (minute % 7)
        return [cod(minute, base, minutes=1), cod(minute, 2 * base, minutes=1).model_copy(update={"parameter": "TSS"})]

    learned = detect(None, [r for m in range(40) for r in pair(m)], station, cfg).state
    n_before = learned.groups["COD,TSS"].detector["n"]  # type: ignore[index]
    short = detect(learned, pair(40 + 60), station, cfg).state  # an hour's silence: a gap, not a relearning
    assert short.groups["COD,TSS"].detector["n"] == n_before + 1  # type: ignore[index]
    long = detect(learned, pair(40 + 180), station, cfg).state  # three hours: past the relearn gap
    assert long.groups["COD,TSS"].detector["n"] == 1  # type: ignore[index]
