"""The benchmarks' pure verdicts (bench/common.py): consumer lag of the end-to-end bench, the soak's stored rate."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bench.common import lag_bounded, lag_slope, memory_trend, slope_per_hour, stored_rates, sustained


def test_a_commit_saw_tooth_is_bounded_and_a_growing_backlog_is_not() -> None:
    saw = [138, 193, 299, 269, 396, 522, 377, 502, 621, 757, 769, 895, 521, 614, 774, 419, 546, 672, 798, 592,
           721, 728, 855, 480, 558, 732, 857, 625, 752]  # 1,000 readings/s, all stored within 4 s
    growing = [274, 485, 678, 910, 1184, 990, 1244, 1429, 1746, 2038, 1790, 2044, 2260, 2545]  # 2,000 readings/s
    assert lag_bounded(saw, messages_per_s=125)
    assert not lag_bounded(growing, messages_per_s=250)
    assert lag_slope(growing) > 150 and abs(lag_slope(saw[10:])) < 10


def test_a_step_the_publisher_could_not_offer_is_not_sustained() -> None:
    """A flat lag says nothing of a rate the publisher did not reach (20,000 offered, 7,585 published on a slow
    machine: e2e-20261203T225017Z)."""
    flat = [400, 420, 380, 410, 400, 390, 405, 415, 395]
    assert sustained(20_000, 19_990, lost=0, drain_s=1.9, lags=flat, messages_per_s=2_500)
    assert not sustained(20_000, 7_585, lost=0, drain_s=1.9, lags=flat, messages_per_s=2_500)
    assert not sustained(20_000, 19_990, lost=1, drain_s=1.9, lags=flat, messages_per_s=2_500)
    assert not sustained(20_000, 19_990, lost=0, drain_s=11, lags=flat, messages_per_s=2_500)
    assert not sustained(20_000, 19_990, lost=0, drain_s=1.9, lags=[400 + 300 * i for i in range(9)], messages_per_s=2_500)


@given(st.floats(-1000, 1000), st.floats(0, 10_000), st.integers(3, 120))
def test_slope_of_a_line_is_its_slope(slope: float, start: float, n: int) -> None:
    assert abs(lag_slope([start + slope * i for i in range(n)]) - slope) < 1e-6 * max(1.0, abs(slope) + start)


@given(st.lists(st.integers(0, 10_000), min_size=3, max_size=90), st.integers(1, 10_000))
def test_a_lag_that_only_falls_is_bounded(samples: list[int], rate: int) -> None:
    assert lag_bounded(sorted(samples, reverse=True), messages_per_s=rate)


def test_the_soak_stored_rate_compares_the_first_and_last_five_minutes() -> None:
    minutes = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0]
    halving = [(m, int(600 * 60 * m if m <= 5 else 600 * 60 * 5 + 300 * 60 * (m - 5))) for m in minutes]
    rates = stored_rates(halving)
    assert rates == {"first_per_s": 600.0, "last_per_s": 300.0, "last_to_first": 0.5}
    assert stored_rates(halving[:8]) is None  # 8 minutes: no two separate windows


@given(st.floats(1, 50_000), st.integers(10, 60))
def test_a_steady_soak_keeps_its_stored_rate(rate: float, n: int) -> None:
    rates = stored_rates([(float(m), int(rate * 60 * m)) for m in range(1, n + 1)])
    assert rates is not None and abs(rates["last_to_first"] - 1) < 0.01


def test_a_worker_that_warms_up_then_stays_flat_is_told_from_a_leak() -> None:
    minutes = [float(m) for m in range(1, 31)]
    warming = [176 + 8 * min(m, 20) for m in minutes]  # the soak of 2026-12-03: up for 20 minutes, then flat
    leaking = [176 + 8 * m for m in minutes]
    warm, leak = memory_trend(minutes, warming), memory_trend(minutes, leaking)
    assert warm["slope_mib_per_hour"] is not None and warm["slope_mib_per_hour"] > 200
    assert warm["last_third_slope_mib_per_hour"] == 0.0
    assert leak["slope_mib_per_hour"] == leak["last_third_slope_mib_per_hour"] == 480.0


@given(st.floats(-100, 100), st.floats(1, 1000), st.integers(3, 60))
def test_the_slope_of_a_line_per_hour(per_min: float, start: float, n: int) -> None:
    minutes = [float(m) for m in range(n)]
    slope = slope_per_hour(minutes, [start + per_min * m for m in minutes])
    assert slope is not None and abs(slope - per_min * 60) < 0.01 + 1e-9 * abs(per_min)
