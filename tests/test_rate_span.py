"""Rate of change over a span: noise at any sampling rate does not trip it, a real ramp or step does."""

from __future__ import annotations

import statistics
from datetime import datetime, timedelta, timezone

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from processors import rate_span
from processors.detection import DetectionConfig, detect, rate_span_s
from quantrac.domain import ParameterSpec, Reading, Station, StationKind

T0 = datetime(2026, 11, 30, 1, 0, tzinfo=timezone.utc)
PH = ParameterSpec(symbol="pH", unit="-", range_min=0, range_max=14, max_rate_per_min=0.2)
CONFIG = DetectionConfig(detectors=())


def station(interval_s: int, spec: ParameterSpec = PH) -> Station:
    return Station(id="RATE-1", name="rate test", zone="Z", facility="F", kind=StationKind.WASTEWATER,
                   expected_interval_s=interval_s, parameters={"pH": spec})


def rate_alarms(values: np.ndarray, interval_s: int, spec: ParameterSpec = PH) -> list[int]:
    """Indices of the readings whose rate-of-change condition is active, fed one message at a time."""
    st_ = station(interval_s, spec)
    state = None
    active = []
    for i, v in enumerate(values):
        r = Reading(station_id=st_.id, parameter="pH", value=float(v), unit="-", ts=T0 + timedelta(seconds=interval_s * i))
        out = detect(state, [r], st_, CONFIG)
        state = out.state
        if any(c.rule == "rate_of_change" and c.active for c in out.conditions):
            active.append(i)
    return active


def readings_for(minutes: float, interval_s: int) -> int:
    return max(4, int(minutes * 60 / interval_s))


@settings(max_examples=25, deadline=None)
@given(interval_s=st.sampled_from([1, 2, 3, 5, 10, 30, 60, 120, 300]), sigma=st.floats(0.005, 0.05),
       heavy=st.booleans(), seed=st.integers(0, 2**31))
def test_noise_at_any_sampling_rate_does_not_trip_the_rate(interval_s: int, sigma: float, heavy: bool, seed: int) -> None:
    """pH noise up to 0.05 (heavy-tailed or not) around a steady level, sampled every 1 s … 5 min: never a rate alarm.

    Two readings 1 s apart differing by 0.05 are 3 pH/min, fifteen times the bound: the old pairwise rule fired here.
    """
    rng = np.random.default_rng(seed)
    n = min(readings_for(60, interval_s), 1200)
    noise = rng.standard_t(3, n) * sigma / 1.7 if heavy else rng.normal(0, sigma, n)
    values = np.clip(7.0 + noise, 6.5, 7.5)
    assert rate_alarms(values, interval_s) == []


@settings(max_examples=15, deadline=None)
@given(interval_s=st.sampled_from([1, 5, 10, 60, 300]), speed=st.floats(0.4, 2.0), seed=st.integers(0, 2**31))
def test_a_real_ramp_trips_the_rate_at_any_sampling_rate(interval_s: int, speed: float, seed: int) -> None:
    """A level rising 5 pH at 2-10x the bound, with noise, is caught within the ramp or the span after it."""
    rng = np.random.default_rng(seed)
    calm = readings_for(20, interval_s)
    after = readings_for(20, interval_s)
    ramp_s = 5.0 / speed * 60
    t = np.arange(calm + int(ramp_s // interval_s) + after) * interval_s
    level = 7.0 + np.clip((t - calm * interval_s) / 60.0 * speed, 0.0, 5.0)
    values = level + rng.normal(0, 0.02, t.size)
    alarms = rate_alarms(values, interval_s)
    assert alarms, "a 5-pH ramp at several times the bound raised no rate alarm"
    assert calm <= alarms[0] and t[alarms[0]] <= calm * interval_s + ramp_s + 300


def test_a_station_reporting_once_a_span_is_judged_on_consecutive_readings() -> None:
    """At the 5-min TT10 cadence the span is one interval: the change between two readings, as the catalogue meant."""
    bins: list = []
    t0 = T0.timestamp()
    bins = rate_span.add(bins, t0, 7.0, 300)
    assert rate_span.levels(bins) is None  # one reading: nothing to compare with
    bins = rate_span.add(bins, t0 + 300, 8.5, 300)
    found = rate_span.levels(bins)
    assert found is not None and (found.from_level, found.to_level, found.minutes) == (7.0, 8.5, 5.0)
    assert found.rate_per_min == 0.3


def test_a_single_spike_among_fast_readings_does_not_make_a_rate() -> None:
    values = np.full(900, 7.0)
    values[600] = 9.0
    assert rate_alarms(values, 1) == []


def test_after_a_gap_the_rate_waits_for_a_span_of_new_data() -> None:
    bins = rate_span.add([], 0.0, 7.0, 300)
    bins = rate_span.add(bins, 3600.0, 9.0, 300)  # an hour later: the old bin is dropped
    assert rate_span.levels(bins) is None and len(bins) == 1


def test_the_span_is_the_parameters_own_else_the_workers_never_under_the_station_interval() -> None:
    assert rate_span_s(station(60), PH, CONFIG) == 300.0
    assert rate_span_s(station(900), PH, CONFIG) == 900.0
    assert rate_span_s(station(60), PH.model_copy(update={"rate_span_s": 600.0}), CONFIG) == 600.0


def reference_levels(bins: list[list[float]]) -> rate_span.Levels | None:
    """`rate_span.levels` as first written: filters and `statistics.median`."""
    if not bins:
        return None
    newest = bins[-1][0]
    head = [b for b in bins if b[0] <= newest - rate_span.HEAD_MIN_AGE_BINS]
    tail = [b for b in bins if b[0] >= newest - rate_span.TAIL_MAX_AGE_BINS]
    if not head or not tail:
        return None
    return rate_span.Levels(sum(b[2] / b[1] for b in head) / len(head), statistics.median(b[3] / b[1] for b in head),
                            sum(b[2] / b[1] for b in tail) / len(tail), statistics.median(b[3] / b[1] for b in tail))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 10_000, allow_nan=False), st.floats(-1e6, 1e6, allow_nan=False)),
                min_size=1, max_size=200), st.sampled_from([1.0, 60.0, 300.0, 3600.0]))
def test_the_levels_are_those_of_the_filters_and_statistics_median(points: list[tuple[float, float]], span_s: float) -> None:
    bins: list[list[float]] = []
    for t, value in sorted(points):
        bins = rate_span.add(bins, t, value, span_s)
        assert rate_span.levels(bins) == reference_levels(bins)


@settings(max_examples=25, deadline=None)
@given(interval_s=st.sampled_from([10, 60, 300]), speed=st.floats(0.0, 0.6), seed=st.integers(0, 2**31),
       opened=st.booleans())
def test_with_open_keys_the_rate_conditions_are_the_ones_wanted_of_all(interval_s: int, speed: float, seed: int,
                                                                       opened: bool) -> None:
    """The open-keys path skips a clear rate with no open key before building it; what it keeps is what `wanted`
    keeps of every condition the oracle builds, near the bound too."""
    rng = np.random.default_rng(seed)
    n = readings_for(30, interval_s)
    values = 7 + speed * np.arange(n) * interval_s / 60 + rng.normal(0, 0.01, n)
    st_ = station(interval_s)
    state_all = state_keys = None
    keys: set[tuple[str, str, str]] = {(st_.id, "pH", "rate_of_change")} if opened else set()
    for i, v in enumerate(values):
        r = Reading(station_id=st_.id, parameter="pH", value=float(v), unit="-", ts=T0 + timedelta(seconds=interval_s * i))
        every = detect(state_all, [r], st_, CONFIG)
        kept = detect(state_keys, [r], st_, CONFIG, open_keys=keys)
        state_all, state_keys = every.state, kept.state
        wanted = [c for c in every.conditions if c.rule == "rate_of_change" and (c.active or
                  (c.station_id, c.parameter, c.rule) in keys)]
        for c in wanted:
            if c.active:
                keys.add((c.station_id, c.parameter, c.rule))
        assert [c for c in kept.conditions if c.rule == "rate_of_change"] == wanted
