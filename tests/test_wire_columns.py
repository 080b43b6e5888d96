"""The columnar decoder gives exactly the readings of the validated one, and leaves it every record it cannot take as is."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.pipeline import DeadLetter, decode_records
from quantrac.batch_columns import from_records, from_wire
from quantrac.domain import Reading, Status
from quantrac.timebuckets import epoch_us
from quantrac.wire import decode_sourced, encode_readings
from quantrac.wire_columns import STATUSES, decode_columns

T0 = datetime(2026, 11, 29, 3, 0, tzinfo=timezone(timedelta(hours=7)))


def _reading(station: str, parameter: str, value: float | None, minutes: int, status: Status = Status.MEASURING) -> Reading:
    return Reading(station_id=station, parameter=parameter, value=value, unit="mg/L", ts=T0 + timedelta(minutes=minutes),
                   status=status)


def test_a_bridge_record_becomes_rows_of_columns_and_the_same_readings() -> None:
    readings = [_reading("S-1", "COD", 12.5, 0), _reading("S-1", "pH", None, 0, Status.FAULT), _reading("S-1", "COD", 13.0, 5)]
    raw = encode_readings("S-1", readings, T0, "mqtt")
    columns = decode_columns([raw, encode_readings("S-2", [], T0, "import")])
    assert columns.series == [("S-1", "COD"), ("S-1", "pH")]
    assert columns.series_index.tolist() == [0, 1, 0]
    assert columns.event_t.tolist() == [T0.timestamp(), T0.timestamp(), T0.timestamp() + 300]
    assert columns.value[0] == 12.5 and np.isnan(columns.value[1]) and columns.value[2] == 13.0
    assert [STATUSES[c] for c in columns.status.tolist()] == [Status.MEASURING, Status.FAULT, Status.MEASURING]
    assert columns.record.tolist() == [0, 0, 0] and columns.slow == []
    assert columns.records() == {0: decode_sourced(raw), 1: ([], T0, "import")}


JSONISH = st.recursive(st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats(allow_nan=False, allow_infinity=False)
                       | st.text(max_size=8), lambda inner: st.lists(inner, max_size=3)
                       | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=6)

FIELD_VALUES: dict[str, Any] = {
    "parameter": st.sampled_from(["COD", "pH"]) | JSONISH,
    "value": st.none() | st.floats(allow_nan=False, allow_infinity=False) | st.integers(-2**63, 2**64 - 1) | st.booleans()
    | st.sampled_from(["1.5", "x"]),
    "unit": st.just("mg/L") | JSONISH,
    "ts": st.sampled_from(["2026-11-29T03:00:00+07:00", "2026-11-29T03:05:00Z", "2026-11-29T03:05:00", "yesterday"]) | JSONISH,
    "status": st.sampled_from(["00", "01", "02", "03", "99"]) | JSONISH,
}


@st.composite
def records(draw: st.DrawFn) -> bytes:
    """A record in the bridge's form, with some of its fields left out or replaced by anything JSON can hold."""
    def field(name: str, good: Any) -> dict[str, Any]:
        choice = draw(st.integers(0, 31))  # mostly as the bridge writes it
        return {} if choice == 31 else {name: good if choice < 28 else draw(FIELD_VALUES.get(name, JSONISH))}

    readings = [{**field("parameter", "COD"), **field("value", 1.0), **field("unit", "mg/L"),
                 **field("ts", "2026-11-29T03:00:00+07:00"), **field("status", "00")}
                for _ in range(draw(st.integers(0, 3)))]
    body = {"v": 1, **field("station_id", "S-1"), **field("source", "mqtt"),
            **field("received_at", "2026-11-29T03:00:01+07:00"), **field("readings", readings)}
    return draw(st.sampled_from([orjson.dumps(body), orjson.dumps(body), b"\xff not json", orjson.dumps([body])]))


def _validated(raw: bytes) -> tuple[list[Reading], datetime, str] | str:
    try:
        return decode_sourced(raw)
    except Exception as exc:  # noqa: BLE001 (what failed is compared, whatever it is)
        return type(exc).__name__


@settings(max_examples=300, deadline=None)
@given(st.lists(records(), max_size=6))
def test_the_columns_give_what_the_validated_decoder_gives_and_leave_it_the_rest(raws: list[bytes]) -> None:
    columns = decode_columns(raws)
    taken = columns.records()
    assert set(taken) | set(columns.slow) == set(range(len(raws))) and not set(taken) & set(columns.slow)
    for index, record in taken.items():
        assert _validated(raws[index]) == record
    assert columns.ts_us.tolist() == [epoch_us(ts) for ts in columns.ts]
    wire, built = from_wire(columns), from_records([taken[i] for i in sorted(taken)])
    assert wire.ts_us.tolist() == built.ts_us.tolist()
    assert [wire.unit_keys[u] for u in wire.unit.tolist()] == [built.unit_keys[u] for u in built.unit.tolist()]
    undecodable: list[DeadLetter] = []
    decoded = decode_records(raws, undecodable)
    expected = [r for r in map(_validated, raws) if not isinstance(r, str)]
    assert decoded == expected
    assert len(undecodable) == sum(isinstance(r, str) for r in map(_validated, raws))


def test_a_naive_time_taken_as_a_receive_time_is_still_refused_as_an_event_time() -> None:
    naive = "2026-11-29T03:00:00"
    body = {"v": 1, "station_id": "S-1", "source": "mqtt", "received_at": naive,
            "readings": [{"parameter": "COD", "value": 1.0, "unit": "mg/L", "ts": naive, "status": "00"}]}
    columns = decode_columns([orjson.dumps(body)])
    assert columns.slow == [0] and len(columns) == 0  # left to the validated decoder, which names what is wrong
