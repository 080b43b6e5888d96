"""The Kafka topics the pipeline needs, created when missing: production (the worker) and the local stack both use this."""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any

import structlog

from quantrac.settings import Settings

if TYPE_CHECKING:
    from kafka.admin import KafkaAdminClient

log = structlog.get_logger(__name__)

ADMIN_TIMEOUT_S = 3.0


class TopicsError(RuntimeError):
    """The topics could not be created before the deadline; the message names them and the broker."""


def kafka_admin(settings: Settings) -> KafkaAdminClient:
    """A kafka-python admin client for settings.kafka_bootstrap with short timeouts (for probes and topics)."""
    from kafka.admin import KafkaAdminClient

    return KafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap.split(","),
        client_id="quantrac-stack",
        request_timeout_ms=10_000,
        api_version_auto_timeout_ms=int(ADMIN_TIMEOUT_S * 1000),
    )


def ensure_topics(settings: Settings) -> None:
    """Create the quantrac topics if missing (replication factor 1), and grow any with too few partitions.

    Retries until settings.stack_start_timeout_s: right after start the controller may not be ready.
    """
    wanted = {
        settings.readings_topic: settings.topic_partitions,
        settings.deadletter_topic: settings.topic_partitions,
        settings.alerts_topic: settings.topic_partitions,
    }
    deadline = time.monotonic() + settings.stack_start_timeout_s
    while True:
        try:
            _create_topics(settings, wanted)
            return
        except Exception as exc:
            if time.monotonic() >= deadline:
                raise TopicsError(f"could not create the Kafka topics {sorted(wanted)} on {settings.kafka_bootstrap}: {exc}") from exc
            log.info("kafka.topics.retry", error=f"{type(exc).__name__}: {exc}")
            time.sleep(1.0)


LEADER_WAIT_S = 30.0
"""Longest wait for a new topic's partitions to have leaders."""


def _wait_for_leaders(admin: Any, names: list[str]) -> None:
    """Return once every partition of `names` has a leader, or after ``LEADER_WAIT_S`` (logged).

    A client that fetches a new topic's metadata before its partitions have leaders keeps that
    view until its next metadata refresh (aiokafka: `metadata_max_age_ms`, 300 s by default;
    faust-streaming PR 279). Starting the worker once the leaders are known avoids that; its clients
    also refresh every `QUANTRAC_WORKER_KAFKA_METADATA_MAX_AGE_S`.
    """
    deadline = time.monotonic() + LEADER_WAIT_S
    leaderless: list[str] = names
    while time.monotonic() < deadline:
        described = admin.describe_topics(names)
        leaderless = sorted({t["topic"] for t in described
                             if t.get("error_code") or not t["partitions"] or any(p["leader"] < 0 for p in t["partitions"])})
        if not leaderless:
            return
        time.sleep(0.2)
    log.warning("kafka.topics.leaderless", topics=leaderless, waited_s=LEADER_WAIT_S,
                fix="check the broker's log; clients see these partitions once their metadata refreshes")


def _create_topics(settings: Settings, wanted: dict[str, int], configs: dict[str, str] | None = None) -> None:
    from kafka.admin import NewPartitions, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = kafka_admin(settings)
    try:
        existing = {t["topic"]: len(t["partitions"]) for t in admin.describe_topics() if t["topic"] in wanted}
        missing = [NewTopic(name, count, 1, topic_configs=configs or {}) for name, count in wanted.items() if name not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(missing, timeout_ms=30_000)
            log.info("kafka.topics.created", topics=[t.name for t in missing])
            _wait_for_leaders(admin, [t.name for t in missing])
        grow = {name: NewPartitions(wanted[name]) for name, count in existing.items() if count < wanted[name]}
        if grow:
            admin.create_partitions(grow, timeout_ms=30_000)
            log.info("kafka.topics.grown", topics={name: wanted[name] for name in grow})
    finally:
        admin.close()
