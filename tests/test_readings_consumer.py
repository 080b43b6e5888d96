"""The worker's readings consumer on the real Kafka: which stations its partitions hold."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest
from aiokafka import ConsumerRecord
from hypothesis import given
from hypothesis import strategies as st
from kafka.admin import NewTopic

from processors.readings_consumer import ReadingsConsumer, newest_records
from quantrac.kafka_topics import kafka_admin
from quantrac.settings import Settings

pytestmark = pytest.mark.integration


def test_partition_count_is_the_topics_own_when_it_has_more_than_the_setting(stack: Settings) -> None:
    """A topic is grown to QUANTRAC_TOPIC_PARTITIONS, never shrunk: with more partitions than the setting, the producers
    place stations by the topic's count, and a worker that filtered its liveness entries by the setting would miss
    (or take another worker's) stations and misjudge them offline."""
    topic = f"quantrac.test.partitions-{os.getpid()}-{os.urandom(3).hex()}"
    partitions = stack.topic_partitions + 3
    own = stack.model_copy(update={"readings_topic": topic, "worker_id": f"{topic}-group"})
    admin = kafka_admin(stack)
    admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    try:
        counted = asyncio.run(_count_once_assigned(own))
    finally:
        admin.delete_topics([topic])
        admin.close()

    assert counted == partitions


async def _count_once_assigned(settings: Settings, timeout_s: float = 30.0) -> int:
    consumer = ReadingsConsumer(settings, asyncio.Lock())
    await consumer.start()
    try:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not consumer.assignment():
            assert asyncio.get_running_loop().time() < deadline, "no partitions assigned"
            await consumer.batch()
        return consumer.partition_count()
    finally:
        await consumer.stop()


@given(st.lists(st.tuples(st.sampled_from(["a", "b"]), st.integers(0, 3), st.integers(0, 50)), max_size=40))
def test_newest_records_keeps_each_partitions_highest_offset(keys) -> None:
    """What the worker commits and notes as processed: per partition its record of the highest offset, in whatever order
    the records come."""
    records = [ConsumerRecord(topic=t, partition=p, offset=o, timestamp=o * 1000, timestamp_type=0, key=None, value=b"",
                              checksum=None, serialized_key_size=0, serialized_value_size=0, headers=())
               for t, p, o in keys]
    found = {(tp.topic, tp.partition): record.offset for tp, record in newest_records(records).items()}
    expected: dict[tuple[str, int], int] = {}
    for t, p, o in keys:
        expected[(t, p)] = max(expected.get((t, p), o), o)
    assert found == expected


def test_a_batch_fetched_before_a_revocation_is_of_an_earlier_generation_once_the_partitions_are_revoked(
        stack: Settings) -> None:
    """The worker drops a batch of an earlier generation. A batch fetched before a rebalance and handled between the
    revocation and the new assignment was stored, then its commit refused (its partitions no longer assigned), and its
    next owner judged it a second time; so a revocation starts a generation of its own."""
    topic = f"quantrac.test.revoke-{os.getpid()}-{os.urandom(3).hex()}"
    own = stack.model_copy(update={"readings_topic": topic, "worker_id": f"{topic}-group"})
    kafka_admin(stack).create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])

    async def generations() -> tuple[int, list[int]]:
        first = ReadingsConsumer(own, asyncio.Lock())
        second = ReadingsConsumer(own, asyncio.Lock())
        at_revocation: list[int] = []
        revoke = first.on_partitions_revoked

        async def noted(revoked: Any) -> None:
            await revoke(revoked)
            if revoked:  # the group calls it before the first assignment too, with nothing to revoke
                at_revocation.append(first.generation)

        first.on_partitions_revoked = noted  # type: ignore[method-assign]
        await first.start()
        try:
            deadline = asyncio.get_running_loop().time() + 60
            fetched_in, _ = await first.batch()
            while not first.assignment():
                assert asyncio.get_running_loop().time() < deadline, "the first consumer got no partitions"
                fetched_in, _ = await first.batch()
            await second.start()
            try:
                while not (second.assignment() and at_revocation):
                    assert asyncio.get_running_loop().time() < deadline, "no rebalance after the second consumer joined"
                    await asyncio.gather(first.batch(), second.batch())
            finally:
                await second.stop()
        finally:
            await first.stop()
        return fetched_in, at_revocation

    fetched_in, at_revocation = asyncio.run(generations())
    assert at_revocation[0] != fetched_in
