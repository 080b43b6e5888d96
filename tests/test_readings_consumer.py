"""The worker's readings consumer on the real Kafka: which stations its partitions hold."""

from __future__ import annotations

import asyncio
import os

import pytest
from kafka.admin import NewTopic

from processors.readings_consumer import ReadingsConsumer
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
