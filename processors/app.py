"""The Faust application: only the App and its topics; agents live in their own modules.

Settings follow the faust-streaming traps in the stack notes: at-least-once with idempotent
writes, explicit partitions, no standby replicas on one broker, no web server in the worker.
"""

from __future__ import annotations

import faust

from quantrac.settings import get_settings

settings = get_settings()

app = faust.App(
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
    # Do not wait for in-flight events at rebalance or shutdown: a batch that is still being
    # retried is simply not acked, and its redelivery is harmless (idempotent writes).
    stream_wait_empty=False,
    broker_session_timeout=10.0,
    broker_heartbeat_interval=3.0,
    broker_commit_every=1000,
    broker_commit_interval=1.0,
)

readings_topic = app.topic(settings.readings_topic, value_type=bytes, key_type=bytes,
                           partitions=settings.topic_partitions, internal=False)
alerts_topic = app.topic(settings.alerts_topic, value_type=bytes, key_type=bytes,
                         partitions=settings.topic_partitions, internal=False)
