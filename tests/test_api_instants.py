"""Instants a request names: bounded to what the calendar can show and round, so none answers 500."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from fastapi import HTTPException
from hypothesis import example, given
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from api.deps import EARLIEST, LATEST, Day, Instant, local_time
from api.routes.history import MAX_BUCKETS, local_day, within_bucket_limit
from quantrac.settings import Settings
from quantrac.timebuckets import bucket_start

INSTANT = TypeAdapter(Instant)
DAY = TypeAdapter(Day)
SETTINGS = Settings()


def test_the_calendar_edge_is_refused_with_the_bounds_named() -> None:
    for text in ("9999-12-31T23:59:59+00:00", "0001-01-01T00:00:00+07:00", "1899-12-31T23:00:00+00:00"):
        with pytest.raises(ValidationError) as refused:
            INSTANT.validate_python(text)
        assert "1900-01-01 to 9998-12-31 (UTC)" in str(refused.value)
    assert INSTANT.validate_python("2026-12-06T06:30:00+07:00") == datetime(2026, 12, 5, 23, 30, tzinfo=timezone.utc)
    with pytest.raises(ValidationError):
        INSTANT.validate_python("2026-12-06T06:30:00")  # no offset


offsets = st.builds(timezone, st.timedeltas(min_value=timedelta(hours=-23, minutes=-59),
                                            max_value=timedelta(hours=23, minutes=59)))


@given(st.datetimes(timezones=offsets))
@example(datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone.utc))
@example(datetime(9998, 12, 31, 20, tzinfo=timezone(timedelta(hours=-5))))
@example(datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=7))))
def test_an_accepted_instant_can_be_shown_and_bucketed(ts: datetime) -> None:
    """Any aware instant is refused with a validation error, or accepted and then shown in the display zone and rounded
    to its local day without an overflow."""
    try:
        accepted = INSTANT.validate_python(ts)
    except ValidationError:
        assert not EARLIEST <= ts <= LATEST or ts.utcoffset() is None
        return
    shown = local_time(accepted, SETTINGS)
    assert shown is not None and str(shown.tzinfo) == SETTINGS.display_timezone and shown == accepted
    assert bucket_start(accepted, "1d") <= accepted


@given(st.dates())
@example(date(9999, 12, 31))
@example(date(1, 1, 1))
def test_an_accepted_day_has_its_local_bounds(day: date) -> None:
    """A compliance day at the calendar's edge answered 500 (its local midnight could not be put in UTC)."""
    try:
        accepted = DAY.validate_python(day)
    except ValidationError as refused:
        assert not EARLIEST.date() <= day <= LATEST.date() and "1900-01-01 to 9998-12-31" in str(refused)
        return
    window = local_day(accepted, ZoneInfo(SETTINGS.display_timezone), datetime.now(timezone.utc))
    assert window.start < window.end


def test_an_instant_stored_at_the_calendar_edge_is_shown_in_utc() -> None:
    edge = datetime.max.replace(tzinfo=timezone.utc)
    assert local_time(edge, SETTINGS) == edge and local_time(edge, SETTINGS).utcoffset() == timedelta(0)  # type: ignore[union-attr]


def test_a_range_of_more_buckets_than_an_answer_holds_is_refused_before_reading() -> None:
    start = datetime(2000, 1, 1, tzinfo=timezone.utc)
    within_bucket_limit(start, start + timedelta(days=MAX_BUCKETS), "1d")
    within_bucket_limit(start, start + timedelta(hours=MAX_BUCKETS), "1h", "hour")
    with pytest.raises(HTTPException) as refused:
        within_bucket_limit(start, start + timedelta(days=MAX_BUCKETS + 1), "1d")
    assert refused.value.status_code == 422 and "at most 8784 1d buckets" in refused.value.detail
    with pytest.raises(HTTPException) as hourly:
        within_bucket_limit(start, start + timedelta(hours=MAX_BUCKETS, minutes=1), "1h", "hour")
    assert "8784 hour buckets" in hourly.value.detail
