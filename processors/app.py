"""The Faust application: only the App and its topics; agents live in their own modules.

Settings follow the faust-streaming traps in the stack notes: at-least-once with idempotent
writes, explicit partitions, no web server in the worker. The app has no table: the worker's
per-station state is in the store (`processors.worker_state`), so a rebalance has no changelog to
recover.
"""

from __future__ import annotations

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

