"""Pure logic of the store and the history API: bucket choice, bucket lists, missing marks, limits."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from api.routes.history import bucket_starts, choose_bucket, hours_outside, local_day, with_missing
from processors.rollups import touched_buckets
from quantrac.domain import Limit, Reading
from quantrac.timebuckets import DAY_ZONE, bucket_start

T0 = datetime(2026, 11, 17, 17, 0, tzinfo=timezone.utc)
instants = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2060, 1, 1), timezones=st.just(timezone.utc))


def test_auto_bucket_follows_the_range_length() -> None:
    assert choose_bucket("auto", T0, T0 + timedelta(days=1)) == "raw"
    assert choose_bucket("auto", T0, T0 + timedelta(days=1, seconds=1)) == "5m"
    assert choose_bucket("auto", T0, T0 + timedelta(days=7)) == "5m"
    assert choose_bucket("auto", T0, T0 + timedelta(days=90)) == "1h"
    assert choose_bucket("auto", T0, T0 + timedelta(days=91)) == "1d"
    assert choose_bucket("1h", T0, T0 + timedelta(days=400)) == "1h"


@settings(deadline=None)  # the machine is shared: timing says nothing here
@given(start=instants, hours=st.integers(min_value=1, max_value=24 * 10), bucket=st.sampled_from(["5m", "1h", "1d"]))
def test_bucket_starts_are_consecutive_buckets_covering_the_range(start: datetime, hours: int, bucket: str) -> None:
    end = start + timedelta(hours=hours)
    starts = bucket_starts(start, end, bucket)
    assert starts[0] <= start < (starts[1] if len(starts) > 1 else end + timedelta(days=1))
    assert starts[-1] < end
    assert all(bucket_start(s, bucket) == s for s in starts)
    assert all(bucket_start(b - timedelta(microseconds=1), bucket) == a for a, b in zip(starts, starts[1:], strict=False))


@given(ts=instants)
def test_local_days_are_whole_utc_hours_so_days_roll_up_from_hours(ts: datetime) -> None:
    day = bucket_start(ts, "1d")
    assert bucket_start(day, "1h") == day
    assert day.astimezone(DAY_ZONE).hour == 0


def test_missing_buckets_are_nulls_and_future_buckets_are_not_expected() -> None:
    starts = bucket_starts(T0, T0 + timedelta(hours=4), "1h")
    rows = [{"parameter": "COD", "bucket": T0, "avg": 5.0, "min": 4.0, "max": 6.0, "count": 12, "count_valid": 12},
            {"parameter": "COD", "bucket": T0 + timedelta(hours=1), "avg": None, "min": None, "max": None, "count": 3, "count_valid": 0}]
    points = with_missing(rows, ["COD"], starts, now=T0 + timedelta(hours=2, minutes=30))
    assert [(p["bucket"] - T0, p["missing"], p["count"]) for p in points] == [
        (timedelta(0), False, 12), (timedelta(hours=1), True, 3), (timedelta(hours=2), True, 0)]


def test_touched_buckets_are_distinct_and_bounded() -> None:
    readings = [Reading(station_id="S", parameter="COD", value=1.0, unit="mg/L", ts=T0 + timedelta(minutes=m)) for m in (0, 1, 4, 5, 61)]
    assert [(k[2] - T0, k[3] - k[2]) for k in touched_buckets(readings, "5m")] == [
        (timedelta(0), timedelta(minutes=5)), (timedelta(minutes=5), timedelta(minutes=5)), (timedelta(minutes=60), timedelta(minutes=5))]
    assert len(touched_buckets(readings, "1d")) == 1


def test_hours_outside_a_two_sided_limit() -> None:
    hourly = [{"bucket": T0, "avg": 9.5}, {"bucket": T0 + timedelta(hours=1), "avg": 7.0},
              {"bucket": T0 + timedelta(hours=2), "avg": 5.0}, {"bucket": T0 + timedelta(hours=3), "avg": None}]
    over = hours_outside(hourly, Limit(low=5.5, high=9.0, source="test"))
    assert [(h.hour - T0, h.bound, h.limit) for h in over] == [(timedelta(0), "high", 9.0), (timedelta(hours=2), "low", 5.5)]
    assert hours_outside(hourly, None) == []


def test_the_elapsed_part_of_a_local_day() -> None:
    window = local_day(datetime(2026, 11, 18).date(), DAY_ZONE, now=T0 + timedelta(hours=6))
    assert (window.start, window.end, window.elapsed) == (T0, T0 + timedelta(days=1), timedelta(hours=6))
    assert local_day(datetime(2026, 11, 18).date(), DAY_ZONE, now=T0 - timedelta(hours=1)).elapsed == timedelta(0)
