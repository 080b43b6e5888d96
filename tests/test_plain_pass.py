"""The plain pass (`processors.plain_pass`) gives exactly what the scalar pass gives (issue 15).

The oracle is `detect_batch(..., plain=False)`: every station through `_station_pass`, reading by
reading. Readings are generated as in `tests/test_detection_open_keys.py` (every bound crossed now and
then, faults, calibration, late and out-of-order readings, gaps), on stations whose pH and COD also
have a rate-of-change bound, and cut into batches; keys are opened and resolved elsewhere between
batches. Conditions, late readings, the open keys after each batch and the states must be equal, and
the plain pass must have been taken (the test is not vacuous).
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

import tests.test_detection_engine_wiring as wiring
from alerts.rules import OpenKeys
from processors.detection import DetectionConfig, LiveDetectors, detect_batch
from processors.detection_state import StationState, plain
from quantrac.domain import Reading, Station, Status
from tests.test_detection_open_keys import CONFIG, KEYS, STATIONS, T0, UNITS, in_batches, readings_of, steps


def with_rate_bounds(station: Station) -> Station:
    """The station with a rate-of-change bound on pH (0.05 a minute) and COD (3 mg/L a minute)."""
    bounds = {"pH": 0.05, "COD": 3.0}
    parameters = {p: spec.model_copy(update={"max_rate_per_min": bounds.get(p)}) for p, spec in station.parameters.items()}
    return station.model_copy(update={"parameters": parameters})


RATE_STATIONS = {sid: with_rate_bounds(s) for sid, s in STATIONS.items()}


def judge_both(readings: list[Reading], cuts: list[int], elsewhere: list[tuple[set, set]],
               stations: dict[str, Station], config: DetectionConfig = CONFIG) -> None:
    """Judge the readings in batches both ways and compare everything after each batch."""
    states: dict = {}
    oracle_states: dict = {}
    keys: OpenKeys = set()
    oracle_keys: OpenKeys = set()
    for batch, opened, resolved in in_batches(readings, cuts, elsewhere):
        keys = (keys | opened) - resolved
        oracle_keys = (oracle_keys | opened) - resolved
        new, found, late = detect_batch(batch, states, stations, config, None, keys)
        new_o, found_o, late_o = detect_batch(batch, oracle_states, stations, config, None, oracle_keys, plain=False)
        assert found == found_o
        assert late == late_o and keys == oracle_keys
        assert new == new_o
        states.update(new)
        oracle_states.update(new_o)


def rule_state(state: StationState) -> tuple:
    """What detection keeps of a station, its detectors' states as dicts whichever form they are kept in (its token
    left out)."""
    return state.newest_t, state.late_count, {
        p: (ps.last_t, ps.windows, ps.rate_bins, ps.fault, ps.calibration, ps.incident,
            {name: plain(d) for name, d in ps.detectors.items()}) for p, ps in state.parameters.items()}, {
        g: (gs.last_t, plain(gs.detector)) for g, gs in state.groups.items()}


def judge_live_and_scalar(readings: list[Reading], cuts: list[int], elsewhere: list[tuple[set, set]],
                          stations: dict[str, Station], written: list[bool], config: DetectionConfig = CONFIG) -> None:
    """Judge the readings as the worker does (live rows kept between batches, states written out now and then: after
    the batches `written` marks) and through the scalar pass; conditions after every batch, and the rule state
    whenever it is written out, must be equal."""
    live = LiveDetectors()
    states: dict = {}
    oracle_states: dict = {}
    keys: OpenKeys = set()
    oracle_keys: OpenKeys = set()
    for k, (batch, opened, resolved) in enumerate(in_batches(readings, cuts, elsewhere)):
        keys, oracle_keys = (keys | opened) - resolved, (oracle_keys | opened) - resolved
        new, found, late = detect_batch(batch, states, stations, config, live, keys, owned=True, save_rows=False)
        new_o, found_o, late_o = detect_batch(batch, oracle_states, stations, config, None, oracle_keys, plain=False)
        assert found == found_o and late == late_o and keys == oracle_keys
        states.update(new)
        oracle_states.update(new_o)
        if written[k % len(written)] or k == len(cuts) - 1:
            live.save_rows(states)
            assert {i: rule_state(s) for i, s in states.items()} == {i: rule_state(s) for i, s in oracle_states.items()}
    live.save_rows(states)
    assert {i: rule_state(s) for i, s in states.items()} == {i: rule_state(s) for i, s in oracle_states.items()}


@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                                  HealthCheck.function_scoped_fixture])
@given(st.lists(steps, min_size=10, max_size=80), st.lists(st.integers(1, 90), min_size=1, max_size=6),
       st.lists(st.tuples(st.sets(st.sampled_from(KEYS), max_size=4), st.sets(st.sampled_from(KEYS), max_size=4)),
                min_size=1, max_size=6), st.booleans(), st.lists(st.booleans(), min_size=1, max_size=5))
def test_rows_kept_between_batches_give_what_the_scalar_pass_gives(plain_outcomes: list[bool], generated, cuts,
                                                                    elsewhere, rate_bounds: bool, written) -> None:
    """The worker keeps a plain station's windows and bins as rows between batches (`RuleRows`) and writes them into
    its state only when the state is written out or the scalar pass takes the station: the same conditions, and the
    same state when written, as the scalar pass."""
    judge_live_and_scalar(readings_of(generated), cuts, elsewhere, RATE_STATIONS if rate_bounds else STATIONS, written)


def test_normal_batches_with_kept_rows_match(plain_outcomes: list[bool]) -> None:
    """Two hours of normal readings with the rows kept between batches and the states written out every third batch,
    then a late reading that sends K-0 through the scalar pass, which must first take the kept rows."""
    readings = normal_run(120)
    readings.append(readings[0].model_copy(update={"ts": readings[-1].ts - timedelta(minutes=3)}))
    judge_live_and_scalar(readings, [15], [(set(), set())], RATE_STATIONS, [False, False, True])
    assert plain_outcomes[-1] is False and sum(plain_outcomes) >= 20


@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                                  HealthCheck.function_scoped_fixture])
@given(st.lists(steps, min_size=10, max_size=80), st.lists(st.integers(1, 90), min_size=1, max_size=6),
       st.lists(st.tuples(st.sets(st.sampled_from(KEYS), max_size=4), st.sets(st.sampled_from(KEYS), max_size=4)),
                min_size=1, max_size=6), st.booleans())
def test_the_plain_pass_gives_what_the_scalar_pass_gives(plain_outcomes: list[bool], generated, cuts, elsewhere,
                                                         rate_bounds: bool) -> None:
    judge_both(readings_of(generated), cuts, elsewhere, RATE_STATIONS if rate_bounds else STATIONS)


def normal_run(minutes: int, ph: list[float] | None = None, start: int = 0) -> list[Reading]:
    """K-0 reporting every minute, every value normal (pH `ph[minute]` when given)."""
    out = []
    for m in range(start, start + minutes):
        ts = T0 + timedelta(minutes=m, seconds=7)
        values = {"COD": 50.0 + (m % 3), "pH": 7.0 if ph is None else ph[m - start], "Flow": 300.0}
        out += [Reading(station_id="K-0", parameter=p, value=v, unit=UNITS[p], ts=ts, status=Status.MEASURING)
                for p, v in values.items()]
    return out


def test_normal_batches_take_the_plain_pass_and_match(plain_outcomes: list[bool]) -> None:
    """Two hours of normal readings in batches of 5 minutes: after the first batch every one is plain (the windows
    close, the rate bins fill), and the states equal the scalar pass's."""
    judge_both(normal_run(120), [15], [(set(), set())], RATE_STATIONS)
    assert len(plain_outcomes) == 24 and all(plain_outcomes)


@pytest.mark.parametrize("case", ["late", "fault", "gap", "hot", "open_key", "rate", "mean_outside"])
def test_what_is_not_plain_goes_through_the_scalar_pass(plain_outcomes: list[bool], case: str) -> None:
    """Each thing that can give a condition makes the batch not plain, and the scalar pass then gives the same."""
    first = normal_run(30)
    second = normal_run(10, start=30)
    keys: set = set()
    resolved: set = set()
    if case == "late":
        second.append(first[0].model_copy(update={"ts": T0 + timedelta(minutes=5, seconds=9)}))
    elif case == "fault":
        second[0] = second[0].model_copy(update={"status": Status.FAULT})
    elif case == "gap":
        second = normal_run(10, start=60)
    elif case == "hot":
        second[1] = second[1].model_copy(update={"value": 9.5})
    elif case == "open_key":
        keys = {("K-0", "COD", "exceedance_1h")}
    elif case == "rate":
        second = normal_run(10, ph=[7.0 - 0.1 * m for m in range(10)], start=30)
    elif case == "mean_outside":
        # a COD reading over the limit in the last 5 minutes of the first batch, whose minute 29 is missing: the
        # bucket's mean is over the limit and judged when the watermark closes it, in the second batch; the
        # reading's own keys are resolved in between, so nothing else in the second batch is hot
        first[3 * 28] = first[3 * 28].model_copy(update={"value": 395.0})
        del first[3 * 29]
        second = normal_run(10, start=36)
        resolved = set(KEYS)
    judge_both(first + second, [len(first), len(second)], [(keys, set()), (set(), resolved)], RATE_STATIONS)
    assert plain_outcomes[-1] is False


@pytest.mark.parametrize("ph_per_min", [0.0, 0.03])
def test_readings_sharing_rate_bins_match(plain_outcomes: list[bool], ph_per_min: float) -> None:
    """K-0 reporting every 5 seconds, so a rate bin (25 s) takes several readings and a 5-min bucket completes long
    before it ends: with pH steady the batch's bound proves every rate quiet at once; with pH rising 0.03 a minute
    (under its 0.05 bound, but too fast for that proof) the levels are computed reading by reading. Both are plain."""
    readings = []
    for k in range(12 * 20):
        ts = T0 + timedelta(seconds=5 * k + 3)
        values = {"COD": 50.0 + (k % 7) * 0.1, "pH": 7.0 + ph_per_min * k / 12 + (k % 3) * 0.001, "Flow": 300.0}
        readings += [Reading(station_id="K-0", parameter=p, value=v, unit=UNITS[p], ts=ts, status=Status.MEASURING)
                     for p, v in values.items()]
    judge_both(readings, [3 * 40, 3 * 17, 3 * 61], [(set(), set())], RATE_STATIONS)
    assert sum(plain_outcomes) >= 3


@hsettings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                                  HealthCheck.function_scoped_fixture])
@given(st.lists(wiring.rows, min_size=20, max_size=120), st.lists(st.integers(1, 60), min_size=1, max_size=6),
       st.lists(st.booleans(), min_size=1, max_size=4))
def test_groups_of_plain_stations_get_the_scalar_pass_vectors(plain_outcomes: list[bool], steps, cuts, written) -> None:
    """Stations with two multivariate groups (two parameters, and all three), readings missing now and then: a plain
    station's vectors are taken from the batch's columns (`PlainBatch.vectors`), a station in the scalar pass's from its
    readings, and both must give the scalar pass's conditions and states, with the rows kept or written each batch."""
    readings = wiring.readings_of(steps)
    judge_both(readings, cuts, [(set(), set())], wiring.STATIONS, wiring.CONFIG)
    judge_live_and_scalar(readings, cuts, [(set(), set())], wiring.STATIONS, written, wiring.CONFIG)


def test_normal_batches_of_a_station_with_groups_are_plain_and_match(plain_outcomes: list[bool]) -> None:
    """Normal readings every 5 minutes at W-0, with pH missing at every seventh: plain batches, and the group of all
    three parameters skips the times pH is missing as the scalar pass does."""
    steps = [(1, ["missing" if k % 7 == 3 and p == 1 else "normal" for p in range(3)], 0, k % 5 - 2) for k in range(80)]
    judge_live_and_scalar(wiring.readings_of(steps), [24], [(set(), set())], wiring.STATIONS, [False, True], wiring.CONFIG)
    assert sum(plain_outcomes) >= 2


def test_readings_of_a_parameter_the_station_does_not_have_are_left_out_as_by_the_scalar_pass(
        plain_outcomes: list[bool]) -> None:
    """K-0 also sends TSS, which it does not have: its batches are still plain, the TSS readings judged by nothing and
    counted nowhere, as the scalar pass does."""
    readings = []
    for r in normal_run(60):
        readings.append(r)
        if r.parameter == "Flow":
            readings.append(Reading(station_id="K-0", parameter="TSS", value=20.0, unit="mg/L", ts=r.ts,
                                    status=Status.MEASURING))
    judge_both(readings, [20], [(set(), set())], RATE_STATIONS)
    judge_live_and_scalar(readings, [20], [(set(), set())], RATE_STATIONS, [False, True])
    assert sum(plain_outcomes) >= 10
