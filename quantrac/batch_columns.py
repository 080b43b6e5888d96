"""A batch of readings as numpy columns, and sums per (key, time bucket) over them.

The worker's store takes a batch as columns (`BatchColumns`), straight from the decoded Kafka
records (`from_wire`), so it builds no Python object per reading: the readings writer COPYs the
columns, and the set-based writes (rollups, completeness, delivery counts) add a batch's sums per
bucket to their rows in one statement each. `Reading`s are built from the columns only where one
is needed (detection, conflicts, dead letters). Bucket starts follow
`quantrac.timebuckets.bucket_start` exactly (a property test checks it).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable, Sequence

import numpy as np
import numpy.typing as npt

from quantrac.domain import Reading, Status
from quantrac.timebuckets import BUCKET_WIDTHS, ONE_US, as_datetime, bucket_start, epoch_us
from quantrac.wire_columns import STATUSES, ReadingColumns

_HOUR_US = 3600 * 1_000_000

Ints = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]


RecordInfo = tuple[datetime, str]
"""Receive time and source of one `quantrac.readings` record."""

_STATUS_CODE = {s: i for i, s in enumerate(STATUSES)}


@dataclass(frozen=True)
class BatchColumns:
    """One row per reading, in batch order: its series (an index into `series_keys`), event time, value,
    status and unit, and the record it came in."""

    series_keys: list[tuple[str, str]]
    """(station, parameter) of each series index."""
    series: Ints
    ts_us: Ints
    """Event time in microseconds since the Unix epoch (UTC)."""
    values: Floats
    """The value, NaN when the reading has none (see `missing`)."""
    valid: Bools
    """`Reading.is_valid_measurement` of each reading."""
    missing: Bools
    """The reading has no value (None; a NaN value is a value)."""
    status: npt.NDArray[np.uint8]
    """Index into `quantrac.wire_columns.STATUSES`."""
    unit_keys: list[str]
    unit: Ints
    """Index into `unit_keys`."""
    ts: list[datetime]
    """Event time of each row as sent (with its UTC offset), for the readings built from the columns."""
    record: Ints
    """Index into `records` of each row's record."""
    records: list[RecordInfo]

    def __len__(self) -> int:
        return len(self.ts_us)

    def take(self, rows: Ints) -> BatchColumns:
        """The batch of the given rows (indices, in that order); series, units and records keep their indices."""
        ts = self.ts
        return BatchColumns(series_keys=self.series_keys, series=self.series[rows], ts_us=self.ts_us[rows],
                            values=self.values[rows], valid=self.valid[rows], missing=self.missing[rows],
                            status=self.status[rows], unit_keys=self.unit_keys, unit=self.unit[rows],
                            ts=[ts[i] for i in rows.tolist()], record=self.record[rows], records=self.records)

    def reading(self, row: int) -> Reading:
        """The row as a `Reading`."""
        station_id, parameter = self.series_keys[int(self.series[row])]
        return Reading(station_id=station_id, parameter=parameter,
                       value=None if self.missing[row] else float(self.values[row]),
                       unit=self.unit_keys[int(self.unit[row])], ts=self.ts[row], status=STATUSES[int(self.status[row])])

    def readings(self) -> list[Reading]:
        """Every row as a `Reading`, in order (for the stages that still take them)."""
        keys, units = self.series_keys, self.unit_keys
        values = [None if m else v for v, m in zip(self.values.tolist(), self.missing.tolist(), strict=True)]
        return [Reading(station_id=keys[k][0], parameter=keys[k][1], value=v, unit=units[u], ts=t, status=STATUSES[c])
                for k, v, u, t, c in zip(self.series.tolist(), values, self.unit.tolist(), self.ts, self.status.tolist(),
                                         strict=True)]

    def stations(self) -> tuple[list[str], Ints]:
        """The batch's station ids, and each row's index into them."""
        names: dict[str, int] = {}
        of_series = np.fromiter((names.setdefault(k[0], len(names)) for k in self.series_keys), np.int64,
                                len(self.series_keys))
        return list(names), of_series[self.series]

    def per_station(self) -> dict[str, int]:
        """Rows per station."""
        names, station_of = self.stations()
        return dict(zip(names, np.bincount(station_of, minlength=len(names)).tolist(), strict=True))

    def rows_of(self, readings: Iterable[Reading]) -> Bools:
        """Which rows have the key (station, parameter, time) of one of the readings."""
        keys = {(r.station_id, r.parameter, epoch_us(r.ts)) for r in readings}
        if not keys:
            return np.zeros(len(self), np.bool_)
        series_keys = self.series_keys
        return np.fromiter(((*series_keys[k], t) in keys for k, t in zip(self.series.tolist(), self.ts_us.tolist(),
                                                                          strict=True)), np.bool_, len(self))

    def record_rows(self) -> list[tuple[RecordInfo, Ints]]:
        """Each record's receive time and source, with its rows."""
        order = np.argsort(self.record, kind="stable")
        bounds = np.searchsorted(self.record[order], np.arange(len(self.records) + 1))
        return [(info, order[bounds[i]:bounds[i + 1]]) for i, info in enumerate(self.records)]


def _columns(series_keys: list[tuple[str, str]], series: Ints, ts: list[datetime], values: Floats, missing: Bools,
             status: npt.NDArray[np.uint8], unit_keys: list[str], unit: Ints, record: Ints,
             records: list[RecordInfo], ts_us: Ints | None = None) -> BatchColumns:
    if ts_us is None:
        ts_us = np.fromiter(map(epoch_us, ts), np.int64, len(ts))
    valid = (status == _STATUS_CODE[Status.MEASURING]) & np.isfinite(values)
    return BatchColumns(series_keys=series_keys, series=series, ts_us=ts_us, values=values, valid=valid, missing=missing,
                        status=status, unit_keys=unit_keys, unit=unit, ts=ts, record=record, records=records)


def _codes(keys: Sequence[Any]) -> tuple[list[Any], Ints]:
    """Distinct keys in order of first appearance, and each key's index into them."""
    index: dict[Any, int] = {}
    codes = np.fromiter((index.setdefault(k, len(index)) for k in keys), np.int64, len(keys))
    return list(index), codes


def batch_columns(readings: Sequence[Reading], record: Sequence[int] | None = None,
                  records: Sequence[RecordInfo] = ()) -> BatchColumns:
    """The readings as columns (`record`: each reading's index into `records`; none given: all of record 0)."""
    return _from_fields([(r.station_id, r.parameter) for r in readings], [r.ts for r in readings],
                        [r.value for r in readings], [r.unit for r in readings], [r.status for r in readings], record, records)


StoredRow = tuple[str, str, datetime, "float | None", str, str]
"""A reading as read back from `readings`: station, parameter, time, value, unit, status code."""


def stored_columns(rows: Sequence[StoredRow]) -> BatchColumns:
    """Readings read back from the store as columns, the same as `batch_columns` of their `Reading`s, with no model
    built: a state replay after a rebalance reads tens of thousands of them."""
    return _from_fields([(r[0], r[1]) for r in rows], [r[2] for r in rows], [r[3] for r in rows], [r[4] for r in rows],
                        [r[5] for r in rows])


def _from_fields(series_keys: list[tuple[str, str]], ts: list[datetime], values: Sequence[float | None],
                 units: Sequence[str], statuses: Sequence[str], record: Sequence[int] | None = None,
                 records: Sequence[RecordInfo] = ()) -> BatchColumns:
    """Columns of readings given field by field; a status as its `Status` or its code (`Status` is a `StrEnum`)."""
    n = len(ts)
    keys, series = _codes(series_keys)
    unit_keys, unit = _codes(units)
    number = np.fromiter((np.nan if v is None else v for v in values), np.float64, n)
    missing = np.fromiter((v is None for v in values), np.bool_, n)
    status = np.fromiter((_STATUS_CODE[c] for c in statuses), np.uint8, n)  # type: ignore[index]
    rows = np.zeros(n, np.int64) if record is None else np.asarray(record, np.int64)
    return _columns(keys, series, ts, number, missing, status, unit_keys, unit, rows, list(records))


def as_columns(readings: BatchColumns | Sequence[Reading]) -> BatchColumns:
    """The batch as columns (`batch_columns` of readings; columns as they are)."""
    return readings if isinstance(readings, BatchColumns) else batch_columns(readings)


def from_records(records: Sequence[tuple[Sequence[Reading], datetime, str]]) -> BatchColumns:
    """Decoded records (readings, receive time, source) as one batch."""
    readings = [r for rs, *_ in records for r in rs]
    record = [i for i, (rs, *_) in enumerate(records) for _ in rs]
    return batch_columns(readings, record, [(received_at, source) for _, received_at, source in records])


def from_wire(columns: ReadingColumns) -> BatchColumns:
    """The columns `quantrac.wire_columns.decode_columns` read (its `slow` records left out), as a batch."""
    taken = sorted(columns.taken)
    position = np.zeros(max(taken, default=-1) + 1, np.int64)
    position[taken] = np.arange(len(taken))
    return _columns(list(columns.series), columns.series_index.astype(np.int64), columns.ts, columns.value,
                    np.isnan(columns.value), columns.status, columns.unit_keys, columns.unit, position[columns.record],
                    [columns.taken[i] for i in taken], columns.ts_us)


def bucket_starts_us(ts_us: Ints, bucket: str) -> Ints:
    """`bucket_start` of each time (epoch microseconds), as epoch microseconds.

    5-minute and hour buckets are floors of UTC time; a day is looked up once per distinct hour
    (a local day is a union of whole UTC hours), so the zone rules stay `bucket_start`'s.
    """
    if bucket != "1d":
        width = BUCKET_WIDTHS[bucket] // ONE_US
        return ts_us - ts_us % width
    hours, where = np.unique(ts_us - ts_us % _HOUR_US, return_inverse=True)
    days = [epoch_us(bucket_start(as_datetime(h), "1d")) for h in hours.tolist()]
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
