"""The detection state's JSON form: versioned, and a state written before the typed state still loads.

`tests/data/detection_state_v1.json` is the state the worker wrote before `processors.detection_state`
(keys `v`, `p`, `mv`, `mv_t`, `w`, `cal`, ...), made by `detect(None, first_part(), STATION, CFG)`
with that code: a deployment that ran it had states like it.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson

from processors.detection import DetectionConfig, LiveDetectors, detect
from processors.detection_state import (
    VERSION,
    CalibrationRun,
    FaultRun,
    GroupState,
    SnapshotPlan,
    StateCache,
    StationState,
    decode_state,
    encode_state,
)
from quantrac.domain import DetectorChannel, Reading, Status
from tests.utils.builders import make_station

T0 = datetime(2026, 11, 29, 3, 0, tzinfo=timezone.utc)
STATION = make_station("T-STATE", cod_limit=100.0).model_copy(update={"channels": (
    DetectorChannel(detector="spike"), DetectorChannel(detector="drift"), DetectorChannel(detector="flatline"),
    DetectorChannel(detector="multivariate", columns=("COD", "pH")))})
CFG = DetectionConfig()
V1 = Path(__file__).parent / "data" / "detection_state_v1.json"
V1_REST_ACTIVE = Path(__file__).parent / "data" / "detection_state_v1_rest_active.json"
"""The active conditions the old code gave on `rest()` after that state."""


def _readings(start: int, stop: int) -> list[Reading]:
    """COD, pH and Flow every 5 min: a daily wave, a calibration run, device faults and an excursion."""
    out: list[Reading] = []
    for i in range(start, stop):
        ts = T0 + timedelta(minutes=5 * i)
        cod = 40.0 + 10.0 * math.sin(i / 20.0) + (150.0 if 150 <= i < 160 else 0.0)
        cod_status = Status.CALIBRATING if 90 <= i < 95 else Status.MEASURING
        out.append(Reading(station_id=STATION.id, parameter="COD", value=round(cod, 1), unit="mg/L", ts=ts, status=cod_status))
        faulty = 100 <= i < 104 or i == 139
        out.append(Reading(station_id=STATION.id, parameter="pH", value=None if faulty else round(7.0 + 0.1 * math.cos(i / 7.0), 2),
                           unit="-", ts=ts, status=Status.FAULT if faulty else Status.MEASURING))
        out.append(Reading(station_id=STATION.id, parameter="Flow", value=float(i % 3), unit="m3/h", ts=ts))
    return out


def first_part() -> list[Reading]:
    """The readings the old-format state was made from (it stops inside a fault run and after a calibration)."""
    return _readings(0, 140)


def rest() -> list[Reading]:
    """What arrives after the restart: the fault clears, then an excursion."""
    return _readings(140, 200)


def _json(conditions: list) -> list:
    return orjson.loads(orjson.dumps(conditions, default=str))


def test_a_state_written_before_the_typed_state_is_migrated_and_detection_goes_on_as_it_did() -> None:
    old = orjson.loads(V1.read_bytes())
    assert old["v"] == 1 and "version" not in old  # the layout a running deployment's changelog holds
    state = StationState.from_json(old)
    assert state is not None
    cod, ph = state.parameters["COD"], state.parameters["pH"]
    assert cod.calibration == CalibrationRun(None, old["p"]["COD"]["cal"][1], 1500.0)
    assert ph.fault == FaultRun(old["p"]["pH"]["fault"][0], 1)
    assert cod.detectors == old["p"]["COD"]["det"] and cod.windows == old["p"]["COD"]["w"]
    assert state.groups["COD,pH"] == GroupState(old["mv_t"]["mv:COD,pH"], old["mv"]["mv:COD,pH"])
    assert (state.newest_t, state.late_count, state.plan) == (old["newest"], old["late"], old["plan"])

    migrated = detect(old, rest(), STATION, CFG)
    unbroken = detect(detect(None, first_part(), STATION, CFG).state, rest(), STATION, CFG)
    assert migrated.conditions == unbroken.conditions and migrated.state == unbroken.state
    # and the alarms are those the code that wrote the old state raised on the same readings
    assert [c for c in _json(migrated.conditions) if c["active"]] == orjson.loads(V1_REST_ACTIVE.read_bytes())
    assert any(c.rule == "device_fault" and not c.active for c in migrated.conditions)  # the open fault run was kept


def test_the_json_form_is_versioned_and_reads_back_to_the_same_state() -> None:
    out = detect(None, first_part(), STATION, CFG, live=LiveDetectors())
    as_json = orjson.loads(orjson.dumps(out.state.to_json()))
    assert as_json["version"] == VERSION and set(as_json) == {
        "version", "newest_t", "late_count", "plan", "token", "parameters", "groups"}
    assert set(as_json["parameters"]["COD"]) == {
        "last_t", "windows", "rate_bins", "fault", "calibration", "incident", "detectors"}
    assert StationState.from_json(as_json) == out.state
    again = detect(as_json, rest(), STATION, CFG)
    assert again.conditions == detect(out.state, rest(), STATION, CFG).conditions


def test_a_state_of_an_unknown_version_starts_afresh() -> None:
    newer = {**detect(None, first_part(), STATION, CFG).state.to_json(), "version": VERSION + 1}
    assert StationState.from_json(newer) is None
    assert detect(newer, rest(), STATION, CFG).conditions == detect(None, rest(), STATION, CFG).conditions


def test_the_callers_state_is_left_as_it_was() -> None:
    out = detect(None, first_part(), STATION, CFG)
    before = out.state.to_json()
    detect(out.state, rest(), STATION, CFG)
    assert out.state.to_json() == before


def test_the_worker_works_on_the_state_it_kept_and_its_snapshot_judges_the_same() -> None:
    cache, live = StateCache(), LiveDetectors()
    first = detect(None, first_part(), STATION, CFG, live)
    cache.keep(STATION.id, first.state)
    snapshot = encode_state(first.state)
    kept = cache.kept(STATION.id)
    assert kept is first.state
    in_place = detect(kept, rest(), STATION, CFG, live, owned=True)
    assert in_place.state is kept
    fresh = detect(decode_state(snapshot), rest(), STATION, CFG)
    assert in_place.conditions == fresh.conditions
    assert orjson.loads(orjson.dumps(in_place.state.to_json())) | {"token": None} == (
        orjson.loads(orjson.dumps(fresh.state.to_json())) | {"token": None})


def test_the_kept_state_is_dropped_after_a_failed_batch_and_after_a_rebalance() -> None:
    cache = StateCache()
    first = detect(None, first_part(), STATION, CFG)
    cache.keep(STATION.id, first.state)
    cache.keep("T-OTHER", first.state)
    cache.forget([STATION.id])  # its batch failed half-way
    assert cache.kept(STATION.id) is None and cache.kept("T-OTHER") is first.state
    cache.clear()  # a rebalance
    assert cache.kept("T-OTHER") is None
    assert decode_state(encode_state(first.state)) == first.state


def test_snapshots_come_once_an_interval_per_station_spread_over_the_batches() -> None:
    plan = SnapshotPlan(5.0)
    stations = [f"S{i:03d}" for i in range(200)]
    assert plan.due(stations, ["S000"], now=100.0) == {"S000"}  # nothing in the table yet: at once
    per_batch = [plan.due(stations, [], now=100.0 + 0.5 * k) for k in range(1, 41)]  # 20 s of batches
    written = [station for batch in per_batch for station in batch]
    assert sorted(set(written)) == stations and len(written) in range(3 * 200, 4 * 200 + 1)  # once every 5 s each
    assert max(len(batch) for batch in per_batch) <= 40  # a trickle, never all 200 at once
    restarted = SnapshotPlan(5.0)  # the table holds X's state already: written in its first period
    assert restarted.due(["X"], [], now=0.0) == set() and restarted.due(["X"], [], now=5.0) == {"X"}
