"""Pure logic of the set-based writes: a batch as columns, bucket starts in numpy, sums per bucket,
checked against `bucket_start` and plain Python over the readings."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from processors.rollups import bucket_sums
from quantrac import completeness
from quantrac.batch_columns import as_datetime, batch_columns, bucket_starts_us, stored_columns
from quantrac.domain import Reading, Status
from quantrac.timebuckets import EPOCH, ROLLUPS, bucket_start

instants = st.datetimes(min_value=datetime(1960, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(timezone.utc))
values = st.one_of(st.none(), st.floats(min_value=-1e6, max_value=1e6),
                   st.sampled_from([math.nan, math.inf, -math.inf]))
readings = st.lists(st.builds(Reading, station_id=st.sampled_from(["A", "B"]), parameter=st.sampled_from(["COD", "pH"]),
                              value=values, unit=st.just("mg/L"), status=st.sampled_from(list(Status)), ts=instants),
                    max_size=40)


@settings(deadline=None)  # the machine is shared: timing says nothing here
@given(ts=st.lists(instants, min_size=1, max_size=20), bucket=st.sampled_from(sorted(ROLLUPS)))
def test_numpy_bucket_starts_are_bucket_start(ts: list[datetime], bucket: str) -> None:
    us = batch_columns([Reading(station_id="A", parameter="COD", value=1.0, unit="mg/L", ts=t) for t in ts]).ts_us
    assert [as_datetime(u) for u in us.tolist()] == ts
    assert [as_datetime(u) for u in bucket_starts_us(us, bucket).tolist()] == [bucket_start(t, bucket) for t in ts]


def test_the_microsecond_before_a_bucket_is_in_the_previous_one() -> None:
    edge = datetime(2059, 12, 31, 17, 0, tzinfo=timezone.utc)  # local midnight, where floats lose the microsecond
    us = batch_columns([Reading(station_id="A", parameter="COD", value=1.0, unit="mg/L", ts=t)
                        for t in (edge - timedelta(microseconds=1), edge)]).ts_us
    assert [as_datetime(u) for u in bucket_starts_us(us, "1d").tolist()] == [edge - timedelta(days=1), edge]
    assert as_datetime(0) == EPOCH


@settings(deadline=None)
@given(batch=readings, bucket=st.sampled_from(sorted(ROLLUPS)))
def test_bucket_sums_are_count_sum_min_max_of_valid_values_per_series_and_bucket(batch: list[Reading], bucket: str) -> None:
    sums = bucket_sums(batch_columns(batch), bucket)
    got = {(s, p, as_datetime(start * 1_000_000)): (n, v, total, low, high) for s, p, start, n, v, total, low, high in zip(
        sums["stations"], sums["parameters"], sums["starts"], sums["counts"], sums["valids"], sums["totals"], sums["mins"],
        sums["maxs"], strict=True)}
    expected: dict[tuple[str, str, datetime], list[Reading]] = {}
    for r in batch:
        expected.setdefault((r.station_id, r.parameter, bucket_start(r.ts, bucket)), []).append(r)
    assert set(got) == set(expected)
    for key, members in expected.items():
        valid = [m.value for m in members if m.is_valid_measurement and m.value is not None]
        n, v, total, low, high = got[key]
        assert (n, v) == (len(members), len(valid))
        assert math.isclose(total, math.fsum(valid), rel_tol=1e-12, abs_tol=1e-9)
        assert (low, high) == ((min(valid), max(valid)) if valid else (math.inf, -math.inf))


@settings(deadline=None)
@given(batch=readings, late=st.sets(st.integers(min_value=0, max_value=39)))
def test_completeness_tally_counts_received_valid_and_late_per_station_period_and_bucket(batch: list[Reading],
                                                                                        late: set[int]) -> None:
    late_readings = [r for i, r in enumerate(batch) if i in late]
    late_keys = {(r.station_id, r.parameter, r.ts) for r in late_readings}
    expected: dict[tuple[str, str, datetime], list[int]] = {}
    for r in batch:
        for period, bucket in completeness.PERIODS.items():
            entry = expected.setdefault((r.station_id, period, bucket_start(r.ts, bucket)), [0, 0, 0])
            entry[0] += 1
            entry[1] += int(r.is_valid_measurement)
            entry[2] += int((r.station_id, r.parameter, r.ts) in late_keys)
    assert completeness.tally(batch, late_readings) == expected


offsets = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))


@settings(deadline=None)
@given(st.lists(st.datetimes(min_value=datetime(1960, 1, 1), max_value=datetime(2100, 1, 1), timezones=offsets),
                min_size=1, max_size=20))
def test_epoch_seconds_from_the_columns_are_the_readings_timestamps(ts: list[datetime]) -> None:
    """Detection takes a reading's time as `ts_us / 1e6` from the worker's columns (`processors.station_rows`) and as
    `ts.timestamp()` from a `Reading` (its scalar pass): one float, whatever the offset it was sent with."""
    us = batch_columns([Reading(station_id="A", parameter="COD", value=1.0, unit="mg/L", ts=t) for t in ts]).ts_us
    assert (us / 1e6).tolist() == [t.timestamp() for t in ts]


@settings(deadline=None)
@given(batch=readings)
def test_rows_read_back_from_the_store_make_the_columns_their_readings_make(batch: list[Reading]) -> None:
    """The state replay takes stored rows as columns without building a `Reading` each: the same columns."""
    rows = [(r.station_id, r.parameter, r.ts, r.value, r.unit, r.status.value) for r in batch]
    got, expected = stored_columns(rows), batch_columns(batch)
    assert [repr(r) for r in got.readings()] == [repr(r) for r in expected.readings()]  # NaN values: equal as text
    assert got.series_keys == expected.series_keys and got.unit_keys == expected.unit_keys
    for name in ("series", "ts_us", "valid", "missing", "status", "unit", "record"):
        assert getattr(got, name).tolist() == getattr(expected, name).tolist(), name
    assert got.values.tobytes() == expected.values.tobytes()
