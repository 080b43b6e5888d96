"""Time buckets on event time, shared by the stream windows and the store's rollups.

Buckets of 5 minutes and 1 hour are aligned to UTC (the same instants in every zone with a
whole-hour offset); day buckets are local days in the display zone (Asia/Ho_Chi_Minh), which is
how the department reads a daily mean.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
ONE_US = timedelta(microseconds=1)
BUCKET_WIDTHS: dict[str, timedelta] = {"5m": timedelta(minutes=5), "1h": timedelta(hours=1), "1d": timedelta(days=1)}
DAY_ZONE = ZoneInfo("Asia/Ho_Chi_Minh")
ROLLUPS: dict[str, str] = {"5m": "readings_5m", "1h": "readings_1h", "1d": "readings_1d"}
"""The store's rollup table of each bucket width (written by processors/rollups.py, read by the API)."""


def bucket_start(ts: datetime, bucket: str, day_zone: ZoneInfo = DAY_ZONE) -> datetime:
    """Start (UTC) of the bucket of width `bucket` ("5m", "1h", "1d") that holds `ts`."""
    if ts.tzinfo is None:
        raise ValueError("bucket_start needs a timezone-aware timestamp")
    if bucket == "1d":
        local = ts.astimezone(day_zone)
        return local.replace(hour=0, minute=0, second=0, microsecond=0).astimezone(timezone.utc)
    width = BUCKET_WIDTHS[bucket]
    utc = ts.astimezone(timezone.utc)
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    return epoch + ((utc - epoch) // width) * width


def bucket_end(start: datetime, bucket: str) -> datetime:
    """The end of the bucket that starts at `start`."""
    return start + BUCKET_WIDTHS[bucket]


def expected_count(start: datetime, end: datetime, interval_s: int) -> int:
    """Readings a station reporting every `interval_s` sends in [start, end)."""
    return readings_in((end - start).total_seconds(), interval_s)


def readings_in(span_s: float, interval_s: int) -> int:
    """Readings a station reporting every `interval_s` sends in `span_s` seconds (at least one)."""
    return max(1, int(span_s // interval_s))


def epoch_us(ts: datetime) -> int:
    """An aware time in microseconds since the epoch."""
    return (ts - EPOCH) // ONE_US


def as_datetime(us: int) -> datetime:
    """Microseconds since the epoch as a UTC datetime."""
    return EPOCH + timedelta(microseconds=int(us))
