"""`send_or_quarantine` (TT10 watcher, importer, replay) on a real Kafka: a record Kafka refuses does not hold back the others."""

from __future__ import annotations

import uuid

import pytest
from kafka import KafkaConsumer

from ingest.producer import CONSUMER_OPTIONS, make_producer, send_or_quarantine
from quantrac.settings import Settings
from quantrac.wire import QUARANTINE_HEAD, decode_deadletter
from tests.utils.poll import wait_for

pytestmark = pytest.mark.integration


def test_a_record_kafka_refuses_is_quarantined_and_the_others_are_sent(stack: Settings) -> None:
    tag = uuid.uuid4().hex[:8]
    readings, dead = f"quantrac.test.refused-{tag}", f"quantrac.test.refused-{tag}.deadletter"
    small = stack.model_copy(update={"kafka_max_request_bytes": 100_000})
    records = [(readings, b"A", b"first"), (readings, b"A", b"x" * 200_000), (readings, b"A", b"third")]
    producer = make_producer(small, "quantrac-test-refused")
    try:
        assert send_or_quarantine(producer, records, stage="import", deadletter_topic=dead) == [1]
    finally:
        producer.close()
    consumer = KafkaConsumer(readings, dead, bootstrap_servers=stack.kafka_bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, **CONSUMER_OPTIONS)
    got: dict[str, list[bytes]] = {readings: [], dead: []}

    def both() -> bool:
        for tp, batch in consumer.poll(timeout_ms=500).items():
            got[tp.topic].extend(r.value for r in batch)
        return len(got[readings]) == 2 and len(got[dead]) == 1
    try:
        wait_for(both, timeout=30, what="two records and one quarantine dead letter")
    finally:
        consumer.close()
    assert got[readings] == [b"first", b"third"]
    body = decode_deadletter(got[dead][0])
    assert (body["reason"], body["stage"], body["station_id"], body["payload_size"]) == ("quarantined", "import", "A", 200_000)
    assert body["payload"] == b"x" * QUARANTINE_HEAD and body["truncated"] is True
