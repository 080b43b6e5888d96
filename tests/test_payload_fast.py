"""The bridge's one-pass validation (`decode_wire`) against the pydantic reference (`decode_message`).

For any message, both refuse it with the same rejection, or keep the same readings (the same
Kafka record bytes once encoded) and refuse the same readings with the same reasons and messages.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.payload import Limits, MessageRejected, decode_message, decode_wire
from quantrac.wire import encode_readings, encode_wire_readings
from tests.utils.builders import make_station, topic

NOW = datetime(2026, 11, 29, 14, 5, tzinfo=timezone.utc)
STATION = make_station("HD-FAST-01")
STATIONS = {STATION.id: STATION}
LIMITS = Limits(max_payload_bytes=4096, max_rejections_per_message=5)

parameters = st.sampled_from(["COD", "pH", "Flow"] * 4 + ["BOD", "", "cod", None, 3, ["COD"]])
values = (st.sampled_from([0, 1, -0.0, 85.2, 85.2, 1e308, 1e12, -1e12, 1.0000001e12, 10**13, True, None, "85", float("nan"),
                           float("inf")])
          | st.floats(allow_nan=True) | st.integers(-2**63, 2**63 - 1))
units = st.sampled_from(["mg/L", "mg/l", "g/L", "ug/L", "-", "", "m3/s", "m3/h", "L/s", "kPa", "°C", " MG/L ", "x", None, 1, ["mg/L"]])
statuses = st.sampled_from(["00"] * 4 + ["01", "02", "03", "", 0, None, ["00"]])


def rarely(draw: st.DrawFn, one_in: int) -> bool:
    """True about once in `one_in` draws (hypothesis' integers favour their bounds)."""
    return draw(st.integers(1, one_in * 7)) % one_in == 3 % one_in


@st.composite
def items(draw: st.DrawFn) -> Any:
    if rarely(draw, 20):
        return draw(st.sampled_from([None, 1, "COD", [], {"value": 1}]))
    item: dict[str, Any] = {"parameter": draw(parameters)}
    for name, strategy in (("value", values), ("unit", units), ("status", statuses)):
        if not rarely(draw, 6):
            item[name] = draw(strategy)
    return item


@st.composite
def messages(draw: st.DrawFn) -> tuple[str, bytes]:
    offset = timedelta(hours=draw(st.sampled_from([0, 7, -3])))
    ts = (NOW - timedelta(minutes=draw(st.integers(-10, 60 * 24 * 800)))).astimezone(timezone(offset))
    body: dict[str, Any] = {
        "ts": draw(st.sampled_from([ts.isoformat()] * 6 + [ts.replace(tzinfo=None).isoformat(), "yesterday", 5])),
        "readings": draw(st.lists(items(), max_size=12)),
    }
    if rarely(draw, 10):
        body["station_id"] = draw(st.sampled_from([STATION.id, "HD-OTHER-01"]))
    if rarely(draw, 20):
        del body["readings"]
    station = draw(st.sampled_from([STATION.id] * 8 + ["HD-UNKNOWN-01", "a/b"]))
    return topic(station), orjson.dumps(body)  # NaN and infinities are written as null


def outcome(decode: Any, topic_text: str, raw: bytes) -> tuple[str, Any]:
    try:
        return "kept", decode(topic_text, raw, STATIONS, NOW, LIMITS)
    except MessageRejected as rejected:
        return "refused", rejected.rejection


@settings(max_examples=400, deadline=None)
@given(messages())
def test_one_pass_validation_keeps_and_refuses_what_the_reference_does(message: tuple[str, bytes]) -> None:
    topic_text, raw = message
    ref_kind, ref = outcome(decode_message, topic_text, raw)
    fast_kind, fast = outcome(decode_wire, topic_text, raw)
    assert fast_kind == ref_kind
    if ref_kind == "refused":
        assert fast == ref
        return
    assert fast.station_id == ref.station_id
    assert fast.rejections == ref.rejections
    assert all(r.ts == fast.ts for r in ref.readings)
    assert encode_wire_readings(fast.station_id, fast.readings, NOW, "mqtt") == encode_readings(ref.station_id, ref.readings, NOW, "mqtt")


def test_a_repeated_parameter_is_kept_twice_when_equal_and_refused_as_conflict_when_not() -> None:
    body = {"ts": NOW.isoformat(), "readings": [
        {"parameter": "COD", "value": 5.0}, {"parameter": "COD", "value": 5.0}, {"parameter": "COD", "value": 6.0},
        {"parameter": "pH", "value": 7.0, "status": "02"}, {"parameter": "pH", "value": 7.0}]}
    batch = decode_wire(topic(STATION.id), orjson.dumps(body), STATIONS, NOW, LIMITS)
    assert [(r["parameter"], r["value"]) for r in batch.readings] == [("COD", 5.0), ("COD", 5.0), ("pH", 7.0)]
    assert [(r.reason, r.index) for r in batch.rejections] == [("conflict", 2), ("conflict", 4)]
    assert batch.rejections == decode_message(topic(STATION.id), orjson.dumps(body), STATIONS, NOW, LIMITS).rejections
