from datetime import datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from quantrac.timebuckets import BUCKET_WIDTHS, bucket_end, bucket_start

VN = timezone(timedelta(hours=7))


def test_day_bucket_is_the_local_day_in_vietnam() -> None:
    ts = datetime(2026, 11, 29, 18, 30, tzinfo=timezone.utc)  # 01:30 on 30 Nov in Hà Nội
    assert bucket_start(ts, "1d") == datetime(2026, 11, 30, 0, 0, tzinfo=VN)


def test_five_minute_bucket() -> None:
    assert bucket_start(datetime(2026, 11, 29, 21, 7, 59, tzinfo=VN), "5m") == datetime(2026, 11, 29, 21, 5, tzinfo=VN)


@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(timezone.utc)),
       st.sampled_from(sorted(BUCKET_WIDTHS)))
def test_every_instant_falls_in_its_bucket(ts: datetime, bucket: str) -> None:
    start = bucket_start(ts, bucket)
    assert start <= ts < bucket_end(start, bucket)
    assert bucket_start(start, bucket) == start
