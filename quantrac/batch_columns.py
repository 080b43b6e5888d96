"""A batch of readings as numpy columns, and sums per (key, time bucket) over them.

The store's set-based writes (rollups, completeness) add a batch's bucket sums to their rows in
one statement each; this module computes those sums without a Python object per bucket member.
Bucket starts follow `quantrac.timebuckets.bucket_start` exactly (a property test checks it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Sequence

import numpy as np
import numpy.typing as npt

from quantrac.domain import Reading, Status
from quantrac.timebuckets import BUCKET_WIDTHS, bucket_start

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_ONE_US = timedelta(microseconds=1)
_HOUR_US = 3600 * 1_000_000

Ints = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class BatchColumns:
    """One row per reading: its series (an index into `series_keys`), event time, value and validity."""

    series_keys: list[tuple[str, str]]
    """(station, parameter) of each series index, in order of first appearance."""
    series: Ints
    ts_us: Ints
    """Event time in microseconds since the Unix epoch (UTC)."""
    values: Floats
    """The value, NaN when the reading has none."""
    valid: Bools
    """`Reading.is_valid_measurement` of each reading."""


def batch_columns(readings: Sequence[Reading]) -> BatchColumns:
    """The readings as columns."""
    index: dict[tuple[str, str], int] = {}
    series = np.fromiter((index.setdefault((r.station_id, r.parameter), len(index)) for r in readings), np.int64,
                         len(readings))
    ts_us = np.fromiter(((r.ts - EPOCH) // _ONE_US for r in readings), np.int64, len(readings))
    values = np.fromiter((math.nan if r.value is None else r.value for r in readings), np.float64, len(readings))
    measuring = np.fromiter((r.status is Status.MEASURING for r in readings), np.bool_, len(readings))
    return BatchColumns(series_keys=list(index), series=series, ts_us=ts_us,
                        values=values, valid=measuring & np.isfinite(values))


def as_datetime(us: int) -> datetime:
    """Microseconds since the epoch as a UTC datetime."""
    return EPOCH + timedelta(microseconds=int(us))


def bucket_starts_us(ts_us: Ints, bucket: str) -> Ints:
    """`bucket_start` of each time (epoch microseconds), as epoch microseconds.

    5-minute and hour buckets are floors of UTC time; a day is looked up once per distinct hour
    (a local day is a union of whole UTC hours), so the zone rules stay `bucket_start`'s.
    """
    if bucket != "1d":
        width = BUCKET_WIDTHS[bucket] // _ONE_US
        return ts_us - ts_us % width
    hours, where = np.unique(ts_us - ts_us % _HOUR_US, return_inverse=True)
    days = [(bucket_start(as_datetime(h), "1d") - EPOCH) // _ONE_US for h in hours.tolist()]
    return np.asarray(days, dtype=np.int64)[where]


@dataclass(frozen=True)
class Groups:
    """Readings grouped by (key, bucket start): `order` sorts them by group, `firsts` starts each group in it."""

    order: Ints
    firsts: Ints
    keys: Ints
    starts_us: Ints

    def sum(self, column: npt.NDArray[np.generic]) -> npt.NDArray[np.generic]:
        """Per group: the sum of `column`."""
        return np.add.reduceat(column[self.order], self.firsts) if len(self.firsts) else column[:0]

    def min(self, column: Floats) -> Floats:
        """Per group: the least of `column`."""
        return np.minimum.reduceat(column[self.order], self.firsts) if len(self.firsts) else column[:0]

    def max(self, column: Floats) -> Floats:
        """Per group: the greatest of `column`."""
        return np.maximum.reduceat(column[self.order], self.firsts) if len(self.firsts) else column[:0]


def group(keys: Ints, starts_us: Ints) -> Groups:
    """Group the rows by (key, bucket start), sorted by key then start."""
    order = np.lexsort((starts_us, keys))
    sorted_keys, sorted_starts = keys[order], starts_us[order]
    change = np.ones(len(order), dtype=np.bool_)
    change[1:] = (sorted_keys[1:] != sorted_keys[:-1]) | (sorted_starts[1:] != sorted_starts[:-1])
    firsts = np.flatnonzero(change)
    return Groups(order=order, firsts=firsts, keys=sorted_keys[firsts], starts_us=sorted_starts[firsts])
