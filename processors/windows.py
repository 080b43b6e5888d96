"""Event-time tumbling windows of one station + parameter: 5-min, 1-h and 24-h (local day) means.

State is a plain JSON dict, so it lives in a Faust table. Buckets come from
`quantrac.timebuckets` (5 min and 1 h aligned to UTC; the 24-h basis is the local day in
Asia/Ho_Chi_Minh, how the department reads a daily mean, not a trailing 24 h).

Every reading counts in its bucket's total; only valid ones (status 00, finite, within the
instrument range) count in the mean. When is a mean judged?
- at once when the bucket is complete: it holds as many readings as the station's interval
  allows, and one of them is in its last interval (give or take half an interval of jitter), so a
  full hour is judged as soon as its last reading arrives, and a gateway that sends more often than
  its registry interval (every 2 s for a 300-s station) does not complete an hour in its first
  minute or a day in its first ten;
- otherwise when the watermark (the station's newest event time minus the allowed lateness)
  passes the bucket's end; the bucket is then dropped.
A late reading (within the lateness) into a bucket already judged marks it to be judged again.
A mean is judged only when enough of the expected readings are valid (`min_coverage`), and only
when its bucket can hold more than one reading: the 5-min mean of a station reporting every
5 minutes is its instantaneous value, already judged as such (no second, identical alert).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np

from quantrac.timebuckets import BUCKET_WIDTHS, bucket_end, bucket_start, readings_in

BASES: dict[str, str] = {"5m": "5m", "1h": "1h", "24h": "1d"}
"""Averaging basis → `quantrac.timebuckets` bucket."""

SUM, VALID, TOTAL, DIRTY, END, EXPECTED = range(6)
JUDGE, LAST_SLOT = 1, 2
"""Bits of a bucket's `DIRTY` field: it took a reading since it was last judged; it holds a reading in its last interval
(`reaches_end`). A state written before the second bit existed has neither set on a judged bucket, and such a bucket
completes at its next reading in its last interval, or closes at the watermark."""


def last_slot_start(end: Any, interval_s: Any) -> Any:
    """Where the last interval of a bucket ending at `end` begins, half an interval of jitter allowed (numbers or arrays)."""
    return end - 1.5 * interval_s


def reaches_end(t: float, end: float, interval_s: int) -> bool:
    """Whether a reading at `t` is in the last interval of a bucket ending at `end` (`last_slot_start`)."""
    return t >= last_slot_start(end, interval_s)


def is_complete(entry: list[Any]) -> bool:
    """Whether a bucket holds as many readings as its station's interval allows, one of them in its last interval."""
    return entry[TOTAL] >= entry[EXPECTED] and bool(entry[DIRTY] & LAST_SLOT)


@dataclass(frozen=True)
class WindowMean:
    """A regulatory average (5 min, 1 h, day) closed over its bucket."""
    basis: str
    start: datetime
    end: datetime
    mean: float
    n_valid: int
    n_total: int
    expected: int


def epoch(ts: datetime) -> float:
    """Seconds since the epoch, the time axis of window arithmetic."""
    return ts.timestamp()


def from_epoch(seconds: float) -> datetime:
    """The aware UTC datetime of an epoch second."""
    return datetime.fromtimestamp(seconds, tz=timezone.utc)


FIXED_WIDTH_S = {bucket: int(width.total_seconds()) for bucket, width in BUCKET_WIDTHS.items() if bucket != "1d"}
"""Seconds of each bucket aligned to UTC (the local day's are looked up: `day_bounds`)."""
_last_day = [math.inf, -math.inf]
"""[start, end) in epoch seconds of the last local day looked up: consecutive readings almost always
fall in the same day, and the time-zone conversion is the dearest step of a reading's window bookkeeping."""


def day_bounds(ts: datetime, t: float | None = None) -> tuple[float, float]:
    """[start, end) in epoch seconds of the local day (`quantrac.timebuckets`, day zone) that holds `ts`
    (`t`: its epoch, when the caller has it)."""
    t = ts.timestamp() if t is None else t
    if not _last_day[0] <= t < _last_day[1]:
        start = bucket_start(ts, "1d")
        _last_day[:] = [start.timestamp(), bucket_end(start, "1d").timestamp()]
    return _last_day[0], _last_day[1]


def day_table(t: Any) -> Any:
    """`day_bounds` of each epoch second in the array `t`: an array of rows [start, end), from one lookup per UTC day
    the times fall in (a local day of 23 hours or more meets at most three of them, and the days tile the time axis)."""
    days = np.unique(np.floor(t / 86400.0))
    edges = sorted({bound for d in days.tolist() for second in (d * 86400.0, d * 86400.0 + 43200.0, d * 86400.0 + 86399.999)
                    for bound in day_bounds(from_epoch(second), second)})
    starts = np.array(edges[:-1])
    found = np.searchsorted(starts, t, side="right") - 1
    return np.column_stack((starts[found], np.array(edges[1:])[found])) if len(t) else np.zeros((0, 2))


def bucket_bounds(ts: datetime, t: float, bucket: str) -> tuple[float, float]:
    """[start, end) in epoch seconds of `ts`'s bucket: `quantrac.timebuckets`' buckets, on numbers."""
    width = FIXED_WIDTH_S.get(bucket)
    if width is None:
        return day_bounds(ts, t)
    start = t // width * width  # exact: an epoch with microseconds is far (> 1e-7 s) from a whole-second boundary
    return start, start + width


Touched = list[tuple[str, int, list[Any]]]
"""(basis, bucket start in epoch s, bucket) of the buckets a reading was counted in."""


def add(windows: dict[str, Any], ts: datetime, value: float | None, interval_s: int, t: float | None = None) -> Touched:
    """Count one reading in its bucket of every basis; `value` None (invalid) counts only in the total.

    A bucket is `[sum, valid, total, dirty, end (epoch s), expected readings]`. `t`: the epoch of
    `ts`, when the caller has it. Returns the buckets it was counted in.
    """
    t = ts.timestamp() if t is None else t
    touched: Touched = []
    for basis, bucket in BASES.items():
        start, end = bucket_bounds(ts, t, bucket)
        buckets = windows.setdefault(basis, {})
        key = str(int(start))
        entry = buckets.get(key)
        if entry is None:
            entry = buckets[key] = new_bucket(start, end, interval_s)
        if value is not None:
            entry[SUM] += value
            entry[VALID] += 1
        entry[TOTAL] += 1
        entry[DIRTY] = JUDGE | (LAST_SLOT if entry[DIRTY] & LAST_SLOT or reaches_end(t, end, interval_s) else 0)
        touched.append((basis, int(start), entry))
    return touched


def earliest_end(windows: dict[str, Any]) -> float:
    """The end of the first bucket to close: until the watermark passes it, only buckets that
    just took a reading can become due."""
    return min((entry[END] for buckets in windows.values() for entry in buckets.values()), default=math.inf)


def due(windows: dict[str, Any], watermark: float, min_coverage: float,
        quiet: tuple[float, float] | None = None) -> list[WindowMean]:
    """Means to judge now (complete or closed buckets with news); closed buckets are dropped. Means within `quiet`
    ([low, high]) are judged all the same but not given (`processors.rule_columns.MeanGate`)."""
    found: list[WindowMean] = []
    for basis in BASES:
        buckets = windows.get(basis)
        if not buckets:
            continue
        for key in sorted(buckets, key=int) if len(buckets) > 1 else list(buckets):
            entry = buckets[key]
            closed = entry[END] <= watermark
            if entry[DIRTY] & JUDGE and (closed or is_complete(entry)):
                if _judge(basis, int(key), entry, min_coverage, found, quiet):
                    quiet = None  # a mean outside may open its key: judge the rest
            if closed:
                del buckets[key]
    return found


def completes(touched: Touched) -> bool:
    """Whether a bucket a reading just counted in is complete: only then can `complete` find a mean."""
    return any(is_complete(entry) for _, _, entry in touched)


def can_give_mean(touched: Touched) -> bool:
    """Whether `complete` can find a mean among the buckets a reading just counted in: one complete, not judged since
    its last reading, and able to hold more than one reading (a station reporting every 5 minutes completes its 5-min
    bucket with each reading, and that bucket's mean is the reading itself)."""
    return any(entry[DIRTY] & JUDGE and entry[EXPECTED] > 1 and is_complete(entry) for _, _, entry in touched)


def complete(touched: Touched, min_coverage: float, quiet: tuple[float, float] | None = None) -> list[WindowMean]:
    """`due` when the watermark has passed no bucket's end: only the buckets a reading just counted in can be due,
    and only by being complete."""
    found: list[WindowMean] = []
    for basis, start, entry in touched:
        if entry[DIRTY] & JUDGE and is_complete(entry):
            if _judge(basis, start, entry, min_coverage, found, quiet):
                quiet = None
    return found


def _judge(basis: str, start: int, entry: list[Any], min_coverage: float, found: list[WindowMean],
           quiet: tuple[float, float] | None) -> bool:
    """A due bucket is judged once until it takes another reading; its mean counts when enough readings were valid,
    and is given unless within `quiet`. Whether it was given."""
    entry[DIRTY] &= LAST_SLOT
    mean = counted_mean(entry[EXPECTED], entry[VALID], entry[SUM], min_coverage)
    if mean is not None and (quiet is None or not quiet[0] <= mean <= quiet[1]):
        found.append(WindowMean(basis, from_epoch(start), from_epoch(entry[END]), mean, entry[VALID], entry[TOTAL],
                                entry[EXPECTED]))
        return True
    return False


def counted_mean(expected: int, valid: int, sum_: float, min_coverage: float) -> float | None:
    """A bucket's mean when it counts: the bucket can hold more than one reading and enough of them were valid."""
    if expected > 1 and valid > 0 and valid >= math.ceil(min_coverage * expected):
        return sum_ / valid
    return None


def new_bucket(start: float, end: float, interval_s: int) -> list[Any]:
    """An empty bucket `[start, end)` of a station reporting every `interval_s`, in the layout of `add`."""
    return [0.0, 0, 0, 0, float(end), readings_in(end - start, interval_s)]
