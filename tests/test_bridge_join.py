"""The bridge joins a station's waiting readings records into one: same readings, same order, same counts, nothing lost."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest.bridge import AckQueue, Bridge, Count, OutgoingRecord, PendingMessage, join_records
from quantrac.failures import RECORD_ATTEMPTS
from quantrac.settings import Settings
from quantrac.wire import encode_wire_readings, join_wire_readings

READINGS, DEADLETTERS = "quantrac.readings", "quantrac.readings.deadletter"
T0 = datetime(2026, 12, 2, 23, 0, tzinfo=timezone.utc)

texts = st.text(min_size=1, max_size=12)  # any text: quotes, backslashes, `"readings":[` itself
wire_readings = st.lists(st.fixed_dictionaries({
    "parameter": texts, "value": st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False)),
    "unit": texts, "ts": st.just("2026-12-02T23:00:00+07:00"), "status": st.sampled_from(["00", "01", "02"])}), max_size=4)


@given(texts, st.sampled_from(["mqtt", "tt10"]), st.lists(wire_readings, min_size=1, max_size=5))
def test_joined_values_are_the_encoding_of_the_readings_joined(station: str, source: str, batches: list[list[dict]]) -> None:
    times = [T0 + timedelta(milliseconds=i) for i in range(len(batches))]
    values = [encode_wire_readings(station, readings, at, source) for readings, at in zip(batches, times, strict=True)]
    joined = join_wire_readings(values)
    assert joined == encode_wire_readings(station, [r for readings in batches for r in readings], times[-1], source)


record_plans = st.lists(st.tuples(st.sampled_from(["A", "B", 'C"readings":[']), st.booleans(), st.integers(1, 6),
                                  st.integers(0, 2)), max_size=40)


def plan_records(plan: list[tuple[str, bool, int, int]], topic: str = READINGS) -> list[OutgoingRecord]:
    """One record per (station, is readings, readings, failures so far); dead letters and retried ones are never joined."""
    records = []
    for mid, (station, is_readings, n, failures) in enumerate(plan):
        message = PendingMessage(mid=mid, qos=1, remaining=1)
        readings = [{"parameter": f"P{mid}", "value": float(i), "unit": "mg/L", "ts": f"t{i}", "status": "00"} for i in range(n)]
        value = encode_wire_readings(station, readings, T0 + timedelta(seconds=mid), "mqtt")
        counts = (Count(station, "forwarded", n),) + ((Count(station, "late", n),) if mid % 3 == 0 else ())
        records.append(OutgoingRecord(topic if is_readings else DEADLETTERS, station.encode(), value, message, counts,
                                      failures=failures if mid % 4 == 0 else 0))
    return records


def readings_by_station(records: list[OutgoingRecord]) -> dict[bytes | None, list[str]]:
    out: dict[bytes | None, list[str]] = {}
    for record in records:
        if record.topic == READINGS:
            out.setdefault(record.key, []).extend(r["parameter"] + r["ts"] for r in orjson.loads(record.value)["readings"])
    return out


def counted(records: list[OutgoingRecord]) -> Counter[tuple[str, str, str]]:
    total: Counter[tuple[str, str, str]] = Counter()
    for record in records:
        for c in record.counts:
            total[(c.station_id, c.counter, c.reason)] += c.n
    return total


@given(record_plans, st.integers(100, 2000))
def test_joining_keeps_every_message_its_readings_in_order_and_its_counts(plan: list[tuple[str, bool, int, int]],
                                                                         max_bytes: int) -> None:
    records = plan_records(plan)
    joined = join_records(records, READINGS, max_bytes)
    # every message is carried by exactly one record, once
    assert sorted(m.mid for r in joined for m in r.messages()) == list(range(len(records)))
    # a station's readings in arrival order, and the other records in theirs
    assert readings_by_station(joined) == readings_by_station(records)
    assert [r for r in joined if not r.parts and r.topic == DEADLETTERS] == [r for r in records if r.topic == DEADLETTERS]
    assert counted(joined) == counted(records)
    for record in joined:
        if record.parts:
            assert len(record.value) <= max_bytes and len(record.parts) > 1
            assert all(p.topic == READINGS and p.key == record.key and not p.failures for p in record.parts)
            assert orjson.loads(record.value)["received_at"] == orjson.loads(record.parts[-1].value)["received_at"]


@given(record_plans)
def test_pubacks_of_joined_records_go_out_in_arrival_order(plan: list[tuple[str, bool, int, int]]) -> None:
    records = plan_records(plan)
    acked: list[int] = []
    queue = AckQueue(lambda mid, _qos: acked.append(mid))
    for record in records:
        queue.arrived(record.message)
    joined = join_records(records, READINGS, 1000)
    for record in reversed(joined):  # confirmed last to first: nothing may go out before the first is confirmed
        if record.parts:
            queue.confirm_all(record.messages())
        else:
            queue.confirm(record.message)
        assert acked == [] or acked == list(range(len(acked)))
    assert acked == list(range(len(records))) and len(queue) == 0


@pytest.mark.integration
def test_a_joined_record_kafka_refuses_goes_back_as_its_messages_each_tried_and_quarantined_alone(stack: Settings) -> None:
    from kafka.errors import MessageSizeTooLargeError

    own = stack.model_copy(update={"readings_topic": "quantrac.test.join-refused", "deadletter_topic": "quantrac.test.join-refused.dl"})
    bridge = Bridge(own, {})  # its producer on the session's Kafka; its MQTT client never connects
    refused = MessageSizeTooLargeError("refused by the test")
    try:
        records = plan_records([("A", True, 2, 0), ("A", True, 3, 0), ("B", True, 1, 0)], own.readings_topic)
        for record in records:
            bridge.acks.arrived(record.message)
        joined, alone = join_records(records, own.readings_topic, 10_000)
        assert joined.parts == tuple(records[:2]) and alone is records[2]
        bridge._on_failed(joined, refused)  # noqa: SLF001 (kafka-python's errback)
        parts = bridge._outbox.take(timeout=0)  # noqa: SLF001
        assert [p.value for p in parts] == [r.value for r in records[:2]] and all(p.alone and not p.parts for p in parts)
        assert join_records(parts, own.readings_topic, 10_000) == parts  # never joined again
        for part in parts:  # each is now tried on its own, then replaced by its own quarantine stand-in
            record = part
            for _ in range(RECORD_ATTEMPTS):
                bridge._on_failed(record, refused)  # noqa: SLF001
                [record] = bridge._outbox.take(timeout=0)  # noqa: SLF001
            assert record.quarantine and record.topic == own.deadletter_topic and record.message is part.message
            assert orjson.loads(record.value)["payload_size"] == len(part.value)
        assert len(bridge.acks) == 3  # nothing acknowledged before Kafka confirms the stand-ins
    finally:
        bridge.producer.close(timeout=5)
