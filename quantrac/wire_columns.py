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
    """The columns as Python lists while records are read, with as little as possible done per reading.

    A reading's (parameter, unit, status) is looked up as one *kind* of its station, made (its series, unit and
    status code found) the first time it is seen; its time text as an index into the distinct times, parsed once.
    So a reading costs two dictionary lookups and three appends (kind, time, value); the series, unit, status and time
    columns are taken from the kinds and times at the end, the record and receive-time columns from each record's
    count. A record found not in the bridge's exact form on one of its readings has its rows taken back
    (`_drop_from`), so a good record costs no second pass."""

    def __init__(self) -> None:
        self.out = ReadingColumns()
        self.series: dict[tuple[str, str], int] = {}
        self.units: dict[str, int] = {}
        self.kinds: dict[str, dict[tuple[str, str, str], int]] = {}
        """Per station: the kind index of each (parameter, unit, status text) read."""
        self.kind_series: list[int] = []
        self.kind_unit: list[int] = []
        self.kind_status: list[int] = []
        self.times: dict[str, tuple[datetime, float, int, bool]] = {}
        self.time_index: dict[str, int] = {}
        """Index of each time text with a UTC offset into `parsed`, `time_t` and `time_us`."""
        self.parsed: list[datetime] = []
        self.time_t: list[float] = []
        self.time_us: list[int] = []
        self.kind: list[int] = []
        self.time_of: list[int] = []
        self.value: list[float] = []
        self.record_index: list[int] = []
        self.record_rows: list[int] = []
        self.received_t: list[float] = []
        """Per record taken: its index in the raw batch, its number of rows and its receive time (epoch seconds)."""

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

    def _event_time(self, text: str) -> int | None:
        """The index of a reading's time text not indexed yet; None if it has no UTC offset or does not parse."""
        found = self.time(text)
        if found is None or not found[3]:
            return None
        index = self.time_index[text] = len(self.parsed)
        self.parsed.append(found[0])
        self.time_t.append(found[1])
        self.time_us.append(found[2])
        return index

    def _kind(self, station_id: str, kinds: dict[tuple[str, str, str], int], key: tuple[str, str, str]) -> int | None:
        """The index of a kind of the station not seen yet; None if its status is not a known code."""
        parameter, unit, status = key
        code = _STATUS_CODE.get(status)
        if code is None:
            return None
        series = self.series.get((station_id, parameter))
        if series is None:
            series = self.series[(station_id, parameter)] = len(self.out.series)
            self.out.series.append((station_id, parameter))
        unit_code = self.units.get(unit)
        if unit_code is None:
            unit_code = self.units[unit] = len(self.units)
        index = kinds[key] = len(self.kind_series)
        self.kind_series.append(series)
        self.kind_unit.append(unit_code)
        self.kind_status.append(code)
        return index

    def take(self, index: int, raw: bytes) -> bool:
        """Add the record's rows; False (and nothing added) when the record is not in the bridge's exact form."""
        try:
            body = _DECODER.decode(raw)
        except msgspec.MsgspecError:
            return False
        received = self.time(body.received_at)
        if received is None:
            return False
        first = len(self.kind)
        if not self._rows(body.station_id, body.readings):
            self._drop_from(first)
            return False
        self.record_index.append(index)
        self.record_rows.append(len(self.kind) - first)
        self.received_t.append(received[1])
        self.out.taken[index] = (received[0], body.source)
        return True

    def _rows(self, station_id: str, readings: list[_WireReading]) -> bool:
        """Append a row for each reading; False at the first one not in the bridge's form."""
        kinds = self.kinds.get(station_id)
        if kinds is None:
            kinds = self.kinds[station_id] = {}
        time_index, nan = self.time_index, float("nan")
        add_kind, add_time, add_value = self.kind.append, self.time_of.append, self.value.append
        for r in readings:
            value = r.value
            if type(value) is float:
                number = value
            elif value is None:
                number = nan
            elif abs(value) <= 2**53:
                number = float(value)
            else:
                return False
            t = time_index.get(r.ts)
            if t is None:
                t = self._event_time(r.ts)
                if t is None:
                    return False
            key = (r.parameter, r.unit, r.status)
            kind = kinds.get(key)
            if kind is None:
                kind = self._kind(station_id, kinds, key)
                if kind is None:
                    return False
            add_kind(kind)
            add_time(t)
            add_value(number)
        return True

    def _drop_from(self, first: int) -> None:
        """Take back the rows from `first` on (a record left to the validated decoder)."""
        for column in (self.kind, self.time_of, self.value):
            del column[first:]

    def columns(self) -> ReadingColumns:
        out = self.out
        kind = np.array(self.kind, np.int64)
        time_of = np.array(self.time_of, np.int64)
        rows = np.array(self.record_rows, np.int64)
        out.series_index = np.array(self.kind_series, np.int32)[kind]
        out.status = np.array(self.kind_status, np.uint8)[kind]
        out.unit = np.array(self.kind_unit, np.int64)[kind]
        out.unit_keys = list(self.units)
        out.event_t = np.array(self.time_t, np.float64)[time_of]
        out.ts_us = np.array(self.time_us, np.int64)[time_of]
        parsed = self.parsed
        out.ts = [parsed[i] for i in self.time_of]
        out.value = np.array(self.value, np.float64)
        out.record = np.repeat(np.array(self.record_index, np.int32), rows)
        out.received_t = np.repeat(np.array(self.received_t, np.float64), rows)
        return out


def decode_columns(raws: Sequence[bytes]) -> ReadingColumns:
    """The batch's readings in columns; the records not in the bridge's exact form are named in `slow`."""
    builder = _Builder()
    for index, raw in enumerate(raws):
        if not builder.take(index, raw):
            builder.out.slow.append(index)
    return builder.columns()
