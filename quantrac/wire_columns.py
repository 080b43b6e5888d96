"""A batch of `quantrac.readings` records decoded straight into columns, one row per reading.

`decode_columns` reads the records the bridge writes (msgspec into typed structs, which checks the
fields' types while it parses, then the times and codes; no model objects) into numpy columns: series index (station + parameter), event time, value, status, and the
record's receive time and source. A record it cannot take exactly as `quantrac.wire.decode_sourced`
would (a foreign producer's, a value pydantic would have to coerce, anything malformed) is left out
and named in `slow`: the caller decodes those the validated way, which quarantines what is wrong.
For the same bytes both ways give the same readings (tests/test_wire_columns.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Sequence

import msgspec
import numpy as np

from quantrac.domain import Reading, Status
from quantrac.timebuckets import epoch_us

STATUSES: tuple[Status, ...] = tuple(Status)
"""Status of each code in `ReadingColumns.status`."""
_STATUS_CODE = {s.value: i for i, s in enumerate(STATUSES)}


class _WireReading(msgspec.Struct, gc=False):
    """A reading of a record in the bridge's form; other fields are passed over, as `quantrac.wire` does."""

    parameter: str
    value: float | int | None
    unit: str
    ts: str
    status: str


class _WireRecord(msgspec.Struct, gc=False):
    """A `quantrac.readings` record in the bridge's form (`quantrac.wire.encode_readings`)."""

    station_id: str
    readings: list[_WireReading]
    received_at: str
    source: str = "mqtt"


_DECODER = msgspec.json.Decoder(_WireRecord)


@dataclass
class ReadingColumns:
    """Readings of a batch of records in columns (row order: record order, then the record's own order)."""

    series: list[tuple[str, str]] = field(default_factory=list)
    """(station, parameter) of each series index."""
    series_index: np.ndarray = field(default_factory=lambda: np.empty(0, np.int32))
    event_t: np.ndarray = field(default_factory=lambda: np.empty(0, np.float64))
    """Event time, epoch seconds."""
    value: np.ndarray = field(default_factory=lambda: np.empty(0, np.float64))
    """NaN where the reading has no value."""
    status: np.ndarray = field(default_factory=lambda: np.empty(0, np.uint8))
    """Index into `STATUSES`."""
    record: np.ndarray = field(default_factory=lambda: np.empty(0, np.int32))
    """Index (into the raw batch) of each row's record."""
    received_t: np.ndarray = field(default_factory=lambda: np.empty(0, np.float64))
    """Receive time of each row's record, epoch seconds (NaN when sent without a UTC offset)."""
    ts: list[datetime] = field(default_factory=list)
    """Event time of each row as sent (with its UTC offset), for the readings built from the columns."""
    ts_us: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    """Event time, microseconds since the epoch (`quantrac.timebuckets.epoch_us`, once per distinct time text)."""
    unit_keys: list[str] = field(default_factory=list)
    """The distinct units, in order of first appearance."""
    unit: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    """Index into `unit_keys`."""
    taken: dict[int, tuple[datetime, str]] = field(default_factory=dict)
    """Receive time and source of each record taken, by its index in the raw batch."""
    slow: list[int] = field(default_factory=list)
    """Indices of the records left to the validated decoder."""

    def __len__(self) -> int:
        return len(self.event_t)

    def records(self) -> dict[int, tuple[list[Reading], datetime, str]]:
        """Per record index: its readings, receive time and source, as `quantrac.wire.decode_sourced` gives them.

        What the columns cost to turn back into model objects, for the stages that still take `Reading`s."""
        out: dict[int, tuple[list[Reading], datetime, str]] = {
            index: ([], received_at, source) for index, (received_at, source) in self.taken.items()}
        values = self.value.tolist()
        codes = self.status.tolist()
        units = self.unit.tolist()
        for row, (index, series) in enumerate(zip(self.record.tolist(), self.series_index.tolist(), strict=True)):
            station_id, parameter = self.series[series]
            value = values[row]
            out[index][0].append(Reading(station_id=station_id, parameter=parameter, value=None if value != value else value,
                                         unit=self.unit_keys[units[row]], ts=self.ts[row], status=STATUSES[codes[row]]))
        return out


class _Builder:
    """The columns as Python lists while records are read; parsed times are shared between rows.

    A record's rows are appended as they are read; a record found not in the bridge's form on one of its
    readings has its rows taken back (`_drop_from`), so a good record costs no second pass."""

    def __init__(self) -> None:
        self.out = ReadingColumns()
        self.series: dict[tuple[str, str], int] = {}
        self.times: dict[str, tuple[datetime, float, int, bool]] = {}
        self.units: dict[str, int] = {}
        self.unit: list[int] = []
        self.event_us: list[int] = []
        self.index: list[int] = []
        self.event_t: list[float] = []
        self.value: list[float] = []
        self.status: list[int] = []
        self.record: list[int] = []
        self.received_t: list[float] = []

    def time(self, text: str) -> tuple[datetime, float, int, bool] | None:
        """The parsed time, its epoch seconds and microseconds (NaN and 0 without a UTC offset) and whether it has an
        offset; each text parsed once."""
        found = self.times.get(text)
        if found is None:
            try:
                parsed = datetime.fromisoformat(text)
            except ValueError:
                return None
            aware = parsed.utcoffset() is not None
            found = self.times[text] = (parsed, parsed.timestamp(), epoch_us(parsed), True) if aware \
                else (parsed, float("nan"), 0, False)
        return found

    def take(self, index: int, raw: bytes) -> bool:
        """Add the record's rows; False (and nothing added) when the record is not in the bridge's exact form."""
        try:
            body = _DECODER.decode(raw)
        except msgspec.MsgspecError:
            return False
        received = self.time(body.received_at)
        if received is None:
            return False
        first = len(self.index)
        if not self._rows(body.station_id, body.readings, index, received[1]):
            self._drop_from(first)
            return False
        self.out.taken[index] = (received[0], body.source)
        return True

    def _rows(self, station_id: str, readings: list[_WireReading], index: int, received_t: float) -> bool:
        """Append a row for each reading; False at the first one not in the bridge's form."""
        series_of, units, nan = self.series, self.units, float("nan")
        add_series, add_ts, add_t, add_us = self.index.append, self.out.ts.append, self.event_t.append, self.event_us.append
        add_value, add_status, add_unit = self.value.append, self.status.append, self.unit.append
        add_record, add_received = self.record.append, self.received_t.append
        for r in readings:
            parameter, unit, value = r.parameter, r.unit, r.value
            ts = self.time(r.ts)
            code = _STATUS_CODE.get(r.status)
            if ts is None or not ts[3] or code is None:
                return False
            if value is None:
                number = nan
            elif type(value) is float or abs(value) <= 2**53:
                number = float(value)
            else:
                return False
            key = (station_id, parameter)
            series = series_of.get(key)
            if series is None:
                series = series_of[key] = len(self.out.series)
                self.out.series.append(key)
            unit_code = units.get(unit)
            if unit_code is None:
                unit_code = units[unit] = len(units)
            add_series(series)
            add_ts(ts[0])
            add_t(ts[1])
            add_us(ts[2])
            add_value(number)
            add_status(code)
            add_unit(unit_code)
            add_record(index)
            add_received(received_t)
        return True

    def _drop_from(self, first: int) -> None:
        """Take back the rows from `first` on (a record left to the validated decoder)."""
        for column in (self.index, self.out.ts, self.event_t, self.event_us, self.value, self.status, self.unit,
                       self.record, self.received_t):
            del column[first:]

    def columns(self) -> ReadingColumns:
        out = self.out
        out.series_index = np.array(self.index, np.int32)
        out.event_t = np.array(self.event_t, np.float64)
        out.value = np.array(self.value, np.float64)
        out.status = np.array(self.status, np.uint8)
        out.record = np.array(self.record, np.int32)
        out.received_t = np.array(self.received_t, np.float64)
        out.ts_us = np.array(self.event_us, np.int64)
        out.unit_keys = list(self.units)
        out.unit = np.array(self.unit, np.int64)
        return out


def decode_columns(raws: Sequence[bytes]) -> ReadingColumns:
    """The batch's readings in columns; the records not in the bridge's exact form are named in `slow`."""
    builder = _Builder()
    for index, raw in enumerate(raws):
        if not builder.take(index, raw):
            builder.out.slow.append(index)
    return builder.columns()
