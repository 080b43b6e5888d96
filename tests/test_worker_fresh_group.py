"""A worker on a consumer group that never committed (every first start, every test session) commits no
offset before the readings under it are stored, loses nothing to a SIGKILL, and starts where the log
starts. On the real Kafka and PostgreSQL of the session.

What a fresh group lost in test runs, and why, is in docs/operations.md ("an archive dropped by TimescaleDB's
retention job").
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
import pytest

from quantrac.settings import Settings
from tests.utils.fleet import scrape
from tests.utils.fresh_worker import FreshGroup, fresh_group
from tests.utils.poll import wait_for
from tests.utils.ports import free_ports

pytestmark = pytest.mark.integration

COMMIT_INTERVAL_S = 1.0
"""A time for the worker to commit in if it would: it commits after each batch (processors/readings_consumer.py),
and its batch waits at most `QUANTRAC_WORKER_BATCH_LATENCY_S` (0.5 s) for records."""


@pytest.fixture()
def group(stack: Settings) -> Iterator[FreshGroup]:
    fresh = fresh_group(stack, stack.run_dir / "test-logs" / "fresh-group")
    try:
        yield fresh
    finally:
        fresh.stop()


def records_taken(port: int) -> float:
    return scrape(port).get(("quantrac_worker_records_in_total", frozenset()), 0.0)


def test_no_offset_is_committed_before_its_readings_are_stored_and_a_sigkill_then_loses_nothing(group: FreshGroup) -> None:
    partitions = len(group.stations)
    with psycopg.connect(group.settings.pg_dsn) as blocker:
        blocker.execute("LOCK TABLE readings IN SHARE MODE")  # the worker's batch waits for this transaction
        port = free_ports(1)[0]
        first = group.start_worker(QUANTRAC_WORKER_METRICS_PORT=str(port))
        group.send()
        wait_for(lambda: records_taken(port) >= partitions, timeout=90, interval=0.2,
                 what="the worker holding a batch of every partition's record, its store blocked")
        watched_until = time.monotonic() + 3 * COMMIT_INTERVAL_S + 1.0  # several of the worker's commit rounds
        while time.monotonic() < watched_until:
            committed = group.committed()
            assert not any(committed.values()), f"an offset was committed before its reading was stored: {committed}"
            assert first.alive(), first.tail()
            time.sleep(0.3)  # poll interval of the watch above
        first.proc.kill()
        first.proc.wait(10)
        blocker.rollback()
    second = group.start_worker()
    wait_for(lambda: all(group.stored().values()), timeout=120, interval=0.5,
             what=f"every partition's reading stored by the worker started after the SIGKILL:\n{second.tail()}")
    assert set(group.stored().values()) == {1}, "each reading stored once"
    wait_for(lambda: group.committed() == dict.fromkeys(group.stations, 1), timeout=30, interval=0.5,
             what="the group's offsets committed past the stored readings")


def test_a_fresh_group_on_a_log_that_no_longer_starts_at_zero_stores_and_commits_everything(group: FreshGroup) -> None:
    """The first records of every partition deleted (retention does this): the group starts at the log's
    first offset, so holding commits to that offset never stalls a partition."""
    from kafka import KafkaAdminClient
    from kafka.structs import TopicPartition

    group.send(per_partition=3)
    admin = KafkaAdminClient(bootstrap_servers=group.settings.kafka_bootstrap.split(","), client_id="quantrac-test-delete")
    try:
        admin.delete_records({TopicPartition(group.settings.readings_topic, p): 2 for p in group.stations})
    finally:
        admin.close()
    group.start_worker()
    wait_for(lambda: group.committed() == dict.fromkeys(group.stations, 3), timeout=90, interval=0.5,
             what="every partition committed to its end")
    assert set(group.stored().values()) == {1}, "only the record left in each log was there to store"
