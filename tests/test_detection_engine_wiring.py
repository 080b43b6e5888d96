"""The worker's detection step on the columnar engine gives what it gives on the scalar classes (issue 15).

`detect_batch` collects a batch's detector work across stations and advances each engine bank once
(`processors.detection_banks`). `LiveDetectors(scalar=True)` runs the same step on the scalar
River-style classes, one object per series: the oracle. Generated batches over several stations
(generic channels and two multivariate groups of different sizes, quick hyperparameters so that
the detectors warm up and flag within a test), with gaps (some past the relearn gap), device-fault
and calibration runs, missing parameters, out-of-order and late readings, cut into batches at
random points, must give the same conditions and the same states on both.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import orjson
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from processors.detection import DetectionConfig, LiveDetectors, detect_batch
from processors.detectors import default_params
from quantrac.domain import DetectorChannel, Reading, Station, Status
from tests.utils.builders import make_station

T0 = datetime(2026, 11, 29, 3, 0, tzinfo=timezone.utc)
PARAMETERS = ("COD", "pH", "Flow")
UNITS = {"COD": "mg/L", "pH": "-", "Flow": "m3/h"}
CONFIG = DetectionConfig(
    detector_params={name: {k: v for k, v in default_params(name).items() if k != "names"}
                     for name in ("spike", "drift", "flatline", "multivariate")},
    relearn_gap_s=7200.0, gap_min_s=1200.0, lateness_s=900.0, incident_hold_s=600.0)


def station(station_id: str) -> Station:
    """A wastewater station with every generic channel and two groups (two parameters, and all three)."""
    channels = (DetectorChannel(detector="spike"), DetectorChannel(detector="drift"), DetectorChannel(detector="flatline"),
                DetectorChannel(detector="multivariate", columns=("COD", "pH")),
                DetectorChannel(detector="multivariate", columns=PARAMETERS))
    return make_station(station_id).model_copy(update={"channels": channels})


STATIONS = {s.id: s for s in (station(f"W-{i}") for i in range(3))}

kinds = st.sampled_from(["normal"] * 8 + ["spike", "flat", "fault", "calibrating", "missing", "none"])
rows = st.tuples(st.sampled_from([1] * 12 + [-2, -4, 0, 30, 200]),  # 5-minute steps: out of order, late, gaps
                 st.lists(kinds, min_size=3, max_size=3), st.integers(0, 2), st.integers(-4, 4))


def readings_of(steps: list[tuple[int, list[str], int, int]]) -> list[Reading]:
    """Readings of the stations, interleaved in the generated order: levels with quantised noise, spikes and stuck values."""
    minute = {sid: 0 for sid in STATIONS}
    out: list[Reading] = []
    for gap, per_parameter, which, noise in steps:
        sid = f"W-{which}"
        minute[sid] += 5 * gap
        ts = T0 + timedelta(minutes=minute[sid])
        for p, base, kind in zip(PARAMETERS, (60.0, 7.2, 300.0), per_parameter, strict=True):
            value: float | None = round(base + noise * base / 50, 2)
            status = Status.MEASURING
            if kind == "missing":
                continue
            if kind == "spike":
                value = base * 3
            elif kind == "flat":
                value = base
            elif kind == "none":
                value = None
            elif kind in ("fault", "calibrating"):
                status = Status.FAULT if kind == "fault" else Status.CALIBRATING
            out.append(Reading(station_id=sid, parameter=p, value=value, unit=UNITS[p], ts=ts, status=status))
    return list({(r.station_id, r.parameter, r.ts): r for r in out}.values())


@hsettings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(rows, min_size=40, max_size=220), st.lists(st.integers(1, 120), min_size=1, max_size=8),
       st.booleans(), st.lists(st.booleans(), min_size=1, max_size=6))
def test_the_engine_gives_the_scalar_classes_conditions_and_states(steps, cuts, with_open_keys, through_json) -> None:
    readings = readings_of(steps)
    engine, scalar = LiveDetectors(), LiveDetectors(scalar=True)
    engine_states: dict = {}
    scalar_states: dict = {}
    engine_keys: set | None = set() if with_open_keys else None
    scalar_keys: set | None = set() if with_open_keys else None
    i = k = 0
    while i < len(readings):
        batch = readings[i:i + cuts[k % len(cuts)]]
        new_e, found_e, late_e = detect_batch(batch, engine_states, STATIONS, CONFIG, engine, engine_keys)
        new_s, found_s, late_s = detect_batch(batch, scalar_states, STATIONS, CONFIG, scalar, scalar_keys)
        assert found_e == found_s and late_e == late_s
        assert engine_keys == scalar_keys
        for sid in new_s:
            assert replace(new_e[sid], token=None) == replace(new_s[sid], token=None)
        as_json = through_json[k % len(through_json)]  # as written by another worker: the rows reload from JSON
        engine_states.update({sid: orjson.loads(orjson.dumps(replace(s, token=None).to_json())) if as_json else s
                              for sid, s in new_e.items()})
        scalar_states.update({sid: orjson.loads(orjson.dumps(s.to_json())) for sid, s in new_s.items()})
        i, k = i + len(batch), k + 1


def test_the_generated_batches_reach_the_anomaly_paths() -> None:
    """The generator is not vacuous: a plain run of it flags spikes, stuck values and a group, and closes at gaps."""
    steps = [(1, ["normal", "normal", "normal"], 0, n % 5 - 2) for n in range(40)]
    steps += [(1, ["spike", "normal", "normal"], 0, 0), (1, ["normal"] * 3, 0, 1)]
    steps += [(1, ["flat", "normal", "normal"], 0, 0) for _ in range(25)]
    steps += [(200, ["normal", "normal", "normal"], 0, 0)]
    _, found, _ = detect_batch(readings_of(steps), {}, STATIONS, CONFIG, LiveDetectors(), None)
    rules = {c.rule for c in found if c.active}
    assert {"anomaly_spike", "anomaly_flatline"} <= rules
    assert any(c.data_stopped for c in found)
