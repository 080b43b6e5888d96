"""The MQTT contract: every reason code, and generated input that never crashes the decoder."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.payload import MAX_MAGNITUDE, Limits, MessageRejected, decode_message
from quantrac.domain import Status
from quantrac.registry import RegistryCache, RegistrySnapshot
from tests.utils.builders import make_station, topic

NOW = datetime(2026, 11, 29, 14, 5, tzinfo=timezone.utc)
STATION = make_station("HD-TEST-01")
STATIONS = {STATION.id: STATION}


def decode(body: object, *, station_id: str = STATION.id, raw: bytes | None = None):
    data = raw if raw is not None else orjson.dumps(body)
    return decode_message(topic(station_id), data, STATIONS, NOW, Limits(max_payload_bytes=4096))


def reading(**overrides: object) -> dict[str, object]:
    return {"parameter": "COD", "value": 85.2, "unit": "mg/L", "status": "00", **overrides}


def test_contract_example_decodes_with_event_time_and_default_status() -> None:
    batch = decode({"ts": "2026-11-29T21:05:00+07:00",
                    "readings": [reading(), {"parameter": "pH", "value": 7.1, "unit": "-"}]})
    assert [(r.parameter, r.value, r.status) for r in batch.readings] == [("COD", 85.2, Status.MEASURING), ("pH", 7.1, Status.MEASURING)]
    assert batch.readings[0].ts == datetime(2026, 11, 29, 14, 5, tzinfo=timezone.utc)
    assert batch.rejections == []


@pytest.mark.parametrize(("body", "reason"), [
    ({"ts": "2026-11-29T21:05:00", "readings": [reading()]}, "no_offset"),
    ({"ts": (NOW + timedelta(minutes=6)).isoformat(), "readings": [reading()]}, "future"),
    ({"ts": (NOW - timedelta(days=731)).isoformat(), "readings": [reading()]}, "too_old"),
    ({"ts": NOW.isoformat()}, "schema"),
    ([1, 2], "schema"),
    ({"ts": NOW.isoformat(), "station_id": "HD-OTHER", "readings": [reading()]}, "topic_mismatch"),
])
def test_message_level_rejections(body: object, reason: str) -> None:
    with pytest.raises(MessageRejected) as exc:
        decode(body)
    assert exc.value.rejection.reason == reason
    assert STATION.id in exc.value.rejection.message


@pytest.mark.parametrize(("ts", "shown"), [(1764865640, "ts 1764865640 (a JSON number)"), (None, "ts null (a JSON null)"),
                                            ("yesterday", "ts 'yesterday'")])
def test_a_time_that_is_not_iso_8601_is_shown_as_the_gateway_sent_it(ts: object, shown: str) -> None:
    with pytest.raises(MessageRejected) as exc:
        decode({"ts": ts, "readings": [reading()]})
    assert exc.value.rejection.reason == "no_offset"
    assert f"{shown} is not an ISO 8601 time" in exc.value.rejection.message


@pytest.mark.parametrize(("ts", "why"), [("2026-13-45T21:05:00+07:00", "month must be in 1..12"),
                                         ("2026-02-30T21:05:00+07:00", "day is out of range for month"),
                                         ("2026-11-29T25:05:00+07:00", "hour must be in 0..23")])
def test_a_time_that_cannot_exist_names_the_value_and_the_fix(ts: str, why: str) -> None:
    with pytest.raises(MessageRejected) as exc:
        decode({"ts": ts, "readings": [reading()]})
    message = exc.value.rejection.message
    assert exc.value.rejection.reason == "no_offset"
    assert f"ts {ts!r} is not a real time ({why})" in message and "e.g. 2026-11-29T21:05:00+07:00" in message


@pytest.mark.parametrize(("raw", "reason"), [(b"{not json", "bad_json"), (b"\xff\xfe\x00", "not_utf8"), (b" " * 5000, "oversize")])
def test_undecodable_bytes(raw: bytes, reason: str) -> None:
    with pytest.raises(MessageRejected) as exc:
        decode(None, raw=raw)
    assert exc.value.rejection.reason == reason


GOOD = b'{"ts": "2026-11-29T21:05:00+07:00", "readings": [{"parameter": "COD", "value": 85.2, "unit": "mg/L"}]}'


@pytest.mark.parametrize(("raw", "reason", "said"), [
    (GOOD.replace(b"85.2", b"NaN"), "bad_json", "NaN and Infinity are not JSON numbers"),
    (GOOD.replace(b"85.2", b"-Infinity"), "bad_json", "send a reading that has no value as null with status 01 or 02"),
    (GOOD.replace(b"mg/L", b"mg/\xb5L"), "not_utf8", f"byte 0xb5 at offset {GOOD.index(b'mg/L') + 3}, after 'lue\": 85.2, \"unit\": \"mg/'"),
    (GOOD.decode().encode("utf-16"), "not_utf8", "payload is UTF-16"),
    (GOOD + b"}", "bad_json", f"unexpected content after document at line 1 column {len(GOOD) + 1}"),
    (GOOD.replace(b"COD", b"\\ud800"), "bad_json", "escape without its pair"),
    (b"", "bad_json", "payload is empty (a gateway clearing a retained message"),
])
def test_a_payload_that_is_not_utf8_json_is_told_where_and_what_to_send(raw: bytes, reason: str, said: str) -> None:
    with pytest.raises(MessageRejected) as exc:
        decode(None, raw=raw)
    assert exc.value.rejection.reason == reason
    assert said in exc.value.rejection.message, exc.value.rejection.message


def test_a_utf8_byte_order_mark_is_passed_over() -> None:
    batch = decode(None, raw=b"\xef\xbb\xbf" + GOOD)
    assert [(r.parameter, r.value) for r in batch.readings] == [("COD", 85.2)] and batch.rejections == []


def test_unknown_station_and_bad_topic() -> None:
    with pytest.raises(MessageRejected) as exc:
        decode({"ts": NOW.isoformat(), "readings": [reading()]}, station_id="HD-NOPE")
    assert exc.value.rejection.reason == "unknown_station"
    with pytest.raises(MessageRejected) as exc:
        decode_message("quantrac/v1/other", b"{}", STATIONS, NOW)
    assert exc.value.rejection.reason == "topic_mismatch"


def test_a_retired_station_is_told_from_an_unknown_one() -> None:
    registry = RegistryCache(lambda: RegistrySnapshot(STATIONS, frozenset({"HD-OLD-01"})))
    body = orjson.dumps({"ts": NOW.isoformat(), "readings": [reading()]})
    rejected = {}
    for station_id in ("HD-OLD-01", "HD-NOPE"):
        with pytest.raises(MessageRejected) as exc:
            decode_message(topic(station_id), body, registry, NOW)
        rejected[station_id] = exc.value.rejection
    assert rejected["HD-OLD-01"].reason == "station_retired" and "re-activate" in rejected["HD-OLD-01"].message
    assert rejected["HD-NOPE"].reason == "unknown_station"
    assert decode_message(topic(STATION.id), body, registry, NOW).readings  # an active station is unaffected


@pytest.mark.parametrize(("item", "reason"), [
    (reading(parameter="SO2"), "unknown_parameter"),
    (reading(unit="kg/m3"), "bad_unit"),
    (reading(value="85"), "bad_value"),
    (reading(value=True), "bad_value"),
    (reading(status="03"), "bad_status"),
    (reading(value=None), "missing_value"),
    ({"value": 3}, "schema"),
])
def test_reading_level_rejection_keeps_the_valid_readings(item: dict[str, object], reason: str) -> None:
    batch = decode({"ts": NOW.isoformat(), "readings": [item, reading(parameter="pH", value=7.0, unit="-")]})
    assert [r.parameter for r in batch.readings] == ["pH"]
    assert [(r.reason, r.index) for r in batch.rejections] == [(reason, 0)]


@pytest.mark.parametrize(("item", "reason", "fix"), [
    (reading(parameter="cod"), "unknown_parameter", "symbols are exact: send 'COD'"),
    (reading(parameter="COD "), "unknown_parameter", "symbols are exact: send 'COD'"),
    (reading(parameter="SO2"), "unknown_parameter", "add it to the registry or fix the gateway"),
    (reading(value="7,5"), "bad_value", "uses ',' as decimal separator; send a JSON number with '.' (7.5)"),
    (reading(value=" 85.2"), "bad_value", "is text; send it as a JSON number, without quotes (85.2)"),
    (reading(value="n/a"), "bad_value", "'n/a' is not a finite number; send a JSON number"),
    (reading(status=0), "bad_status", "send the text '00', two digits in quotes"),
    (reading(status="2"), "bad_status", "send the text '02', two digits in quotes"),
    (reading(status="03"), "bad_status", "01 (calibrating) or 02 (fault)"),
])
def test_a_careless_gateways_mistake_is_refused_with_the_fix_it_needs(item: dict[str, object], reason: str,
                                                                      fix: str) -> None:
    """Symbols in the wrong case, a Vietnamese decimal comma, a number sent as text, a status without its zero: each
    is refused (nothing is guessed) with the exact thing to send."""
    [rejection] = decode({"ts": NOW.isoformat(), "readings": [item]}).rejections
    assert rejection.reason == reason
    assert fix in rejection.message and STATION.id in rejection.message
    assert rejection.message.endswith("(fault)") == (fix == "01 (calibrating) or 02 (fault)")


def test_a_long_value_is_named_clipped_in_the_message() -> None:
    [rejection] = decode({"ts": NOW.isoformat(), "readings": [reading(value="x" * 3000)]}).rejections
    assert rejection.reason == "bad_value" and len(rejection.message) < 200 and "…" in rejection.message


def test_nan_and_infinity_are_rejected() -> None:
    raw = b'{"ts": "2026-11-29T21:05:00+07:00", "readings": [{"parameter": "COD", "value": NaN}]}'
    with pytest.raises(MessageRejected) as exc:
        decode(None, raw=raw)
    assert exc.value.rejection.reason == "bad_json"
    with pytest.raises(MessageRejected) as exc:
        decode(None, raw=raw.replace(b"NaN", b"1e999"))
    assert exc.value.rejection.reason == "bad_json"


@pytest.mark.parametrize("value", [1e12, -1e12, 0.0, 10**12])
def test_a_value_within_any_instruments_reach_is_kept(value: float) -> None:
    assert [r.value for r in decode({"ts": NOW.isoformat(), "readings": [reading(value=value)]}).readings] == [value]


@pytest.mark.parametrize("value", [1.7976931348623157e308, -1e13, 1.000001e12, 10**13])
def test_a_value_beyond_any_instruments_reach_is_refused_with_its_station_parameter_and_fix(value: float) -> None:
    batch = decode({"ts": NOW.isoformat(), "readings": [reading(value=value), reading(parameter="pH", value=7.0, unit="-")]})
    assert [r.parameter for r in batch.readings] == ["pH"]
    [rejection] = batch.rejections
    assert (rejection.reason, rejection.parameter) == ("bad_value", "COD")
    assert STATION.id in rejection.message and "beyond what any instrument reports" in rejection.message
    assert "check the gateway's scaling" in rejection.message


def test_exact_unit_conversion_and_aliases() -> None:
    batch = decode({"ts": NOW.isoformat(), "readings": [reading(value=0.0852, unit="g/L"), reading(parameter="Flow", value=1.0, unit="m3/s")]})
    assert [(r.value, r.unit) for r in batch.readings] == [(pytest.approx(85.2), "mg/L"), (3600.0, "m3/h")]
    assert decode({"ts": NOW.isoformat(), "readings": [reading(unit="mg/l")]}).readings[0].unit == "mg/L"


def test_missing_value_is_accepted_for_fault_and_calibration() -> None:
    batch = decode({"ts": NOW.isoformat(), "readings": [reading(value=None, status="02"), reading(parameter="pH", value=None, status="01")]})
    assert [(r.value, r.status) for r in batch.readings] == [(None, Status.FAULT), (None, Status.CALIBRATING)]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600) | st.from_regex(r'\{"ts": ?"[0-9T:+-]{0,30}", ?"readings": ?\[.{0,80}\]\}', fullmatch=True).map(str.encode))
def test_arbitrary_bytes_are_decoded_or_rejected_with_a_reason(raw: bytes) -> None:
    try:
        batch = decode(None, raw=raw)
    except MessageRejected as exc:
        assert exc.rejection.reason and exc.rejection.message
    else:
        assert all(r.reason and r.message for r in batch.rejections)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["COD", "pH", "Flow"]), st.floats(-MAX_MAGNITUDE, MAX_MAGNITUDE),
                          st.sampled_from(["00", "01", "02"])), min_size=1, max_size=10, unique_by=lambda t: t[0]),
       st.integers(min_value=-12, max_value=14))
def test_valid_payloads_keep_every_value_and_the_instant(items: list[tuple[str, float, str]], offset_h: int) -> None:
    units = {"COD": "mg/L", "pH": "-", "Flow": "m3/h"}
    ts = NOW.astimezone(timezone(timedelta(hours=offset_h)))
    batch = decode({"ts": ts.isoformat(), "readings": [{"parameter": p, "value": v, "unit": units[p], "status": s} for p, v, s in items]})
    assert [(r.parameter, r.value, r.status.value) for r in batch.readings] == [(p, float(v), s) for p, v, s in items]
    assert all(r.ts == NOW for r in batch.readings)
