"""Event-time windows: means against numpy on the same window, closing by completeness or watermark."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from processors import windows
from quantrac.timebuckets import bucket_start

T0 = datetime(2026, 11, 29, 3, 0, tzinfo=timezone.utc)  # 10:00 in Hanoi


def test_an_hour_is_judged_as_soon_as_it_is_complete() -> None:
    w: dict = {}
    for i in range(11):
        windows.add(w, T0 + timedelta(minutes=5 * i), 10.0 * i, 300)
    assert windows.due(w, watermark=0, min_coverage=0.5) == []  # a 5-min bucket of a 5-min station is its one value
    windows.add(w, T0 + timedelta(minutes=55), 110.0, 300)
    [hour] = windows.due(w, watermark=0, min_coverage=0.5)
    assert (hour.basis, hour.start, hour.mean, hour.n_valid, hour.expected) == ("1h", T0, 55.0, 12, 12)
    assert windows.due(w, watermark=0, min_coverage=0.5) == []  # nothing new


def test_a_gateway_faster_than_its_interval_completes_an_hour_only_at_its_end() -> None:
    """A 300-s station whose gateway sends every 2 s has its 12 readings after 24 s: the hour is complete only once a
    reading is in its last interval, so a wild first minute is not judged as the hour's mean."""
    w: dict = {}
    for i in range(1560):  # 52 minutes of readings every 2 s: 900 in the first 30 s, then normal
        windows.add(w, T0 + timedelta(seconds=2 * i), 900.0 if i < 15 else 60.0, 300)
        assert windows.due(w, watermark=0, min_coverage=0.5) == [], f"judged at reading {i}"
    windows.add(w, T0 + timedelta(minutes=55), 60.0, 300)  # the last interval of the hour (from 52:30, for jitter)
    [hour] = windows.due(w, watermark=0, min_coverage=0.5)
    assert hour.basis == "1h" and hour.n_valid == 1561 and hour.mean == pytest.approx((15 * 900 + 1546 * 60) / 1561)


def test_a_last_reading_early_by_jitter_still_completes_the_hour() -> None:
    w: dict = {}
    for i in range(12):
        windows.add(w, T0 + timedelta(minutes=5 * i, seconds=-100 if i == 11 else 0), 10.0, 300)
    assert [m.basis for m in windows.due(w, watermark=0, min_coverage=0.5)] == ["1h"]


def test_an_incomplete_hour_is_judged_when_the_watermark_passes_its_end_and_then_dropped() -> None:
    w: dict = {}
    for i in range(8):
        windows.add(w, T0 + timedelta(minutes=5 * i), 100.0, 300)
    windows.due(w, watermark=0, min_coverage=0.5)
    end = (T0 + timedelta(hours=1)).timestamp()
    assert [m.basis for m in windows.due(w, watermark=end - 1, min_coverage=0.5)] == []
    [hour] = windows.due(w, watermark=end, min_coverage=0.5)
    assert (hour.basis, hour.n_valid, hour.n_total) == ("1h", 8, 8)
    assert str(int(T0.timestamp())) not in w["1h"]


def test_invalid_readings_count_in_the_total_not_in_the_mean_and_coverage_is_required() -> None:
    w: dict = {}
    for i in range(12):
        windows.add(w, T0 + timedelta(minutes=5 * i), 500.0 if i < 5 else None, 300)
    hourly = [m for m in windows.due(w, watermark=0, min_coverage=0.5) if m.basis == "1h"]
    assert hourly == []  # 5 valid of 12 expected < 50 %
    w = {}
    for i in range(12):
        windows.add(w, T0 + timedelta(minutes=5 * i), 500.0 if i < 6 else None, 300)
    [hour] = [m for m in windows.due(w, watermark=0, min_coverage=0.5) if m.basis == "1h"]
    assert (hour.mean, hour.n_valid, hour.n_total) == (500.0, 6, 12)


def test_a_late_reading_reopens_its_judged_bucket() -> None:
    w: dict = {}
    for i in range(12):
        windows.add(w, T0 + timedelta(minutes=5 * i), 10.0, 300)
    windows.due(w, watermark=0, min_coverage=0.5)
    windows.add(w, T0 + timedelta(minutes=7), 130.0, 300)  # a 13th reading, late but within lateness
    hour = [m for m in windows.due(w, watermark=0, min_coverage=0.5) if m.basis == "1h"]
    assert hour[0].mean == pytest.approx((12 * 10 + 130) / 13)


def test_the_24h_basis_is_the_local_day() -> None:
    w: dict = {}
    windows.add(w, datetime(2026, 11, 29, 16, 59, tzinfo=timezone.utc), 1.0, 300)  # 23:59 Hanoi, 29 Nov
    windows.add(w, datetime(2026, 11, 29, 17, 0, tzinfo=timezone.utc), 1.0, 300)   # 00:00 Hanoi, 30 Nov
    assert sorted(int(k) for k in w["24h"]) == [int(datetime(2026, 11, 28, 17, tzinfo=timezone.utc).timestamp()),
                                                 int(datetime(2026, 11, 29, 17, tzinfo=timezone.utc).timestamp())]


readings = st.lists(st.tuples(st.integers(0, 24 * 3600 - 1), st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False))),
                    min_size=1, max_size=200)


@hsettings(max_examples=100, deadline=None)
@given(readings)
def test_every_closed_window_mean_equals_numpy_over_the_same_readings(rs: list[tuple[int, float | None]]) -> None:
    w: dict = {}
    for offset, value in rs:
        windows.add(w, T0 + timedelta(seconds=offset), value, 60)
    closed = windows.due(w, watermark=(T0 + timedelta(days=3)).timestamp(), min_coverage=0.0)
    for mean in closed:
        bucket = windows.BASES[mean.basis]
        same = [v for off, v in rs if bucket_start(T0 + timedelta(seconds=off), bucket) == mean.start]
        valid = np.array([v for v in same if v is not None])
        assert (mean.n_total, mean.n_valid) == (len(same), valid.size)
        assert mean.mean == pytest.approx(float(np.mean(valid)), rel=1e-9, abs=1e-6)
    expected_buckets = {(b, bucket_start(T0 + timedelta(seconds=off), windows.BASES[b]))
                        for off, v in rs if v is not None for b in windows.BASES}
    assert {(m.basis, m.start) for m in closed} == expected_buckets
    assert all(not buckets for buckets in w.values())


@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.sampled_from(
    [timezone.utc, timezone(timedelta(hours=7)), timezone(timedelta(hours=-3, minutes=-30))])),
       st.sampled_from(["5m", "1h", "1d"]))
def test_window_bounds_on_numbers_are_the_time_buckets(ts: datetime, bucket: str) -> None:
    from quantrac.timebuckets import bucket_end
    start = bucket_start(ts, bucket)
    assert windows.bucket_bounds(ts, ts.timestamp(), bucket) == (start.timestamp(), bucket_end(start, bucket).timestamp())


@hsettings(max_examples=100, deadline=None)
@given(readings, st.sampled_from([60, 300, 3600]), st.floats(0.0, 1.0))
def test_a_reading_that_can_give_no_mean_by_completing_finds_none(rs: list[tuple[int, float | None]], interval_s: int,
                                                                   coverage: float) -> None:
    """`can_give_mean` False: `complete` finds nothing (it only settles the buckets), so the worker may skip judging."""
    w: dict = {}
    for offset, value in rs:
        touched = windows.add(w, T0 + timedelta(seconds=offset), value, interval_s)
        if not windows.can_give_mean(touched):
            assert windows.complete(touched, coverage) == []


@given(st.lists(st.floats(-2e9, 4e9, allow_nan=False), max_size=40))
def test_day_table_gives_each_time_its_local_day(seconds: list[float]) -> None:
    """`windows.day_table` (the compiled plain pass's days) is `day_bounds` of each time, over times days and decades
    apart as well as seconds."""
    found = windows.day_table(np.array(seconds, dtype=np.float64))
    assert found.shape == (len(seconds), 2)
    for t, (start, end) in zip(seconds, found.tolist(), strict=True):
        assert (start, end) == windows.day_bounds(windows.from_epoch(t), t)
