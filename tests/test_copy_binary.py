"""The numpy binary COPY buffer is byte for byte what psycopg's own binary `write_row` makes of the same rows; the
writer's key logic on columns is plain Python's over the readings."""

from __future__ import annotations

import math
import zlib
from datetime import datetime, timedelta, timezone

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from psycopg import postgres, pq
from psycopg._copy_base import BinaryFormatter  # the oracle: psycopg's row-by-row binary formatter
from psycopg.adapt import Transformer

from processors.copy_binary import copy_buffer
from processors.reading_writer import _repeats_that_differ, first_of_each_key
from quantrac.batch_columns import BatchColumns, batch_columns
from quantrac.domain import Reading, Status

TYPES = ["int4", "text", "text", "timestamptz", "float8", "text", "text"]
zones = st.sampled_from([timezone.utc, timezone(timedelta(hours=7)), timezone(timedelta(hours=-3, minutes=-30))])
readings = st.lists(st.builds(
    Reading, station_id=st.sampled_from(["A", "HD-ĐẠI-AN", "B" * 70]), parameter=st.sampled_from(["COD", "pH", "NH₄⁺"]),
    value=st.one_of(st.none(), st.floats(), st.sampled_from([0.0, -0.0, math.nan, math.inf])),
    unit=st.sampled_from(["mg/L", "", "°C"]), status=st.sampled_from(list(Status)),
    ts=st.datetimes(min_value=datetime(1960, 1, 1), max_value=datetime(2100, 1, 1), timezones=zones)), max_size=30)


def series_id(station_id: str, parameter: str) -> int:
    """A series id for the test: any int4, one per series."""
    return (zlib.crc32(f"{station_id}/{parameter}".encode()) & 0xFFFFFFF) - 0x8000000


def psycopg_rows(rows: list[Reading]) -> bytes:
    formatter = BinaryFormatter(Transformer())
    formatter.transformer.set_dumper_types([postgres.types[t].oid for t in TYPES], pq.Format.BINARY)
    out = bytearray()
    for r in rows:
        out += formatter.write_row((series_id(r.station_id, r.parameter), r.station_id, r.parameter, r.ts, r.value,
                                    r.unit, r.status.value))
    out += formatter.end()
    return bytes(out)


def buffer_of(batch: BatchColumns) -> bytes:
    return copy_buffer(batch, [series_id(*key) for key in batch.series_keys])


@settings(deadline=None)  # the machine is shared: timing says nothing here
@given(rows=readings)
def test_the_buffer_is_psycopgs_binary_rows(rows: list[Reading]) -> None:
    assert buffer_of(batch_columns(rows)) == psycopg_rows(rows)


@given(rows=readings, data=st.data())
def test_a_subset_of_a_batch_is_the_buffer_of_its_rows(rows: list[Reading], data: st.DataObject) -> None:
    keep = data.draw(st.lists(st.integers(0, max(len(rows) - 1, 0)), max_size=len(rows))) if rows else []
    assert buffer_of(batch_columns(rows).take(np.array(keep, np.int64))) == psycopg_rows([rows[i] for i in keep])



T0 = datetime(2026, 11, 29, 3, 0, tzinfo=timezone.utc)
repeating = st.lists(st.builds(
    Reading, station_id=st.sampled_from(["A", "B"]), parameter=st.sampled_from(["COD", "pH"]),
    value=st.one_of(st.none(), st.sampled_from([1.0, 2.0, math.nan])), unit=st.just("mg/L"),
    status=st.sampled_from(list(Status)),
    ts=st.builds(lambda minutes, zone: (T0 + timedelta(minutes=minutes)).astimezone(zone), st.integers(0, 2), zones)),
    max_size=30)


@given(rows=repeating)
def test_the_writer_keeps_the_first_of_each_key_and_finds_the_repeats_that_differ(rows: list[Reading]) -> None:
    """Columns against plain Python over the readings: the first reading of each (station, parameter, time), and
    the later ones whose value or status differs from it (a NaN value differs from every value, as in Python)."""
    first: dict[tuple[str, str, datetime], int] = {}
    for i, r in enumerate(rows):
        first.setdefault((r.station_id, r.parameter, r.ts), i)
    batch = batch_columns(rows)
    assert first_of_each_key(batch).tolist() == sorted(first.values())
    expected = []
    for i, r in enumerate(rows):
        kept = rows[first[(r.station_id, r.parameter, r.ts)]]
        if i not in first.values() and (r.value != kept.value or r.status != kept.status):
            expected.append((i, kept.value, kept.status.value))
    got = _repeats_that_differ(batch, first_of_each_key(batch))
    assert [(i, "NaN" if v != v else v, s) for i, v, s in got] == [
        (i, "NaN" if v is not None and v != v else v, s) for i, v, s in expected]
