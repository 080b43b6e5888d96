"""The Faust application: only the App and its topics; agents live in their own modules.

Settings follow the faust-streaming traps in the stack notes: at-least-once with idempotent
writes, explicit partitions, no standby replicas on one broker, no web server in the worker.
"""

from __future__ import annotations

from faust.types import TableT

from processors.consumer import HoldingConsumer, HoldingTransport
from processors.events import holding
from processors.faust_compat import CompatApp
from quantrac.settings import get_settings

settings = get_settings()


class App(CompatApp):
    """faust.App whose consumer never commits past an unprocessed reading (`processors/consumer.py`)."""

    transport_class = HoldingTransport


app = App(
    settings.worker_id,
    broker=settings.kafka_url,
    value_serializer="raw",
    key_serializer="raw",
    processing_guarantee="at_least_once",
    topic_partitions=settings.topic_partitions,
    topic_replication_factor=1,
    table_standby_replicas=0,
    store="memory://",
    web_enabled=False,
    datadir=str(settings.run_dir / "faust"),
    consumer_auto_offset_reset="earliest",
    Event=holding({settings.readings_topic}),
    # Do not wait for in-flight events at rebalance or shutdown: the agent acknowledges a batch
    # only after it is stored (noack_take), so an unfinished batch is redelivered, harmlessly.
    stream_wait_empty=False,
    broker_session_timeout=10.0,
    broker_heartbeat_interval=3.0,
    broker_commit_every=1000,
    broker_commit_interval=1.0,
    consumer_metadata_max_age_ms=int(settings.worker_kafka_metadata_max_age_s * 1000),
    producer_metadata_max_age_ms=int(settings.worker_kafka_metadata_max_age_s * 1000),
)

HoldingConsumer.gapless_topics = frozenset({settings.readings_topic})
readings_topic = app.topic(settings.readings_topic, value_type=bytes, key_type=bytes,
                           partitions=settings.topic_partitions, internal=False)
alerts_topic = app.topic(settings.alerts_topic, value_type=bytes, key_type=bytes,
                         partitions=settings.topic_partitions, internal=False)
deadletter_topic = app.topic(settings.deadletter_topic, value_type=bytes, key_type=bytes,
                             partitions=settings.topic_partitions, internal=False)
"""Conflicts and quarantined records the worker sets aside (the bridge's dead-letter keeper stores them)."""


def _state_table(name: str, help_: str) -> TableT:
    """A changelog-backed table of JSON bytes keyed by station id (bytes; the app serialises raw).

    `use_partitioner=True`: the changelog partition comes from the key with Kafka's default
    (murmur2) partitioner, the one the bridge's producer uses for the same key, so a station's
    state is co-partitioned with its readings even when a `stream.take` batch mixes partitions,
    and the wall-clock timer can write too (no current event needed).

    The changelog is compacted, but Kafka compacts only closed segments and its default segment
    is 1 GiB: every state written since the topic was created stayed, and a worker's start-up
    (which reads the whole changelog back) took minutes after a long run (383 MB for 200 stations
    after a soak). Small, time-rolled segments keep it near one state per station.
    """
    return app.Table(name, default=None, key_type=bytes, value_type=bytes,
                     partitions=settings.topic_partitions, use_partitioner=True, help=help_,
                     extra_topic_configs=CHANGELOG_TOPIC_CONFIG)


CHANGELOG_TOPIC_CONFIG = {"segment.bytes": str(16 * 1024 * 1024), "segment.ms": str(10 * 60 * 1000),
                          "min.cleanable.dirty.ratio": "0.2"}
"""Kafka settings of the state tables' changelog topics (applied when Faust creates them)."""


detection_table = _state_table("detection-state", "Per station: event-time windows, rule runs and detector states (JSON).")
liveness_table = _state_table("station-liveness", "Per station: newest event time, newest receive time, offline flag (JSON).")
