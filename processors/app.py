"""The Faust application: only the App and the topics it produces to; the readings path and the timers live
in their own modules.

Faust runs the worker (its task, timers and producer); the readings come through
`processors.readings_consumer`, in the consumer group `QUANTRAC_WORKER_ID`. Faust's own consumer
subscribes to nothing, in a group of its own (`<QUANTRAC_WORKER_ID>-app`) so that it never joins the
readings group with another assignor. The app has no table: the worker's per-station state is in
the store (`processors.worker_state`), so a rebalance has no changelog to recover. No web server in
the worker. Faust's logging keeps quantrac's handler (`quantrac.logs.faust_logging_config`).
"""

from __future__ import annotations

import faust

from quantrac.logs import faust_logging_config
from quantrac.settings import get_settings

settings = get_settings()

app = faust.App(
    f"{settings.worker_id}-app",
    broker=settings.kafka_url,
    value_serializer="raw",
    key_serializer="raw",
    topic_partitions=settings.topic_partitions,
    topic_replication_factor=1,
    store="memory://",
    web_enabled=False,
    datadir=str(settings.run_dir / "faust"),
    broker_session_timeout=10.0,
    broker_heartbeat_interval=3.0,
    consumer_metadata_max_age_ms=int(settings.worker_kafka_metadata_max_age_s * 1000),
    producer_metadata_max_age_ms=int(settings.worker_kafka_metadata_max_age_s * 1000),
    logging_config=faust_logging_config(),
)

alerts_topic = app.topic(settings.alerts_topic, value_type=bytes, key_type=bytes,
                         partitions=settings.topic_partitions, internal=False)
deadletter_topic = app.topic(settings.deadletter_topic, value_type=bytes, key_type=bytes,
                             partitions=settings.topic_partitions, internal=False)
"""Conflicts and quarantined records the worker sets aside (the bridge's dead-letter keeper stores them)."""
