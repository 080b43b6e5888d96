"""Every Prometheus metric of quantrac, defined once, and the helpers that expose them.

Each process (bridge, worker, API) has its own default registry; the bridge and worker serve it
with `serve()` on their metrics port, the API on `GET /metrics`. Metric names follow the
Prometheus conventions: `_total` is added to counters by the client, durations are in seconds.
Labels stay low-cardinality (reasons, states, partitions), never station ids: a province has
hundreds of stations and per-station series belong in PostgreSQL, not in Prometheus.
"""

from __future__ import annotations

import structlog
from prometheus_client import Counter, Gauge, Histogram, start_http_server

log = structlog.get_logger(__name__)

# --- bridge ------------------------------------------------------------------------------------
BRIDGE_MESSAGES_RECEIVED = Counter(
    "quantrac_bridge_messages_received", "MQTT messages received by the bridge.")
BRIDGE_READINGS_FORWARDED = Counter(
    "quantrac_bridge_readings_forwarded", "Valid readings queued for the Kafka readings topic.")
BRIDGE_MESSAGES_ACKED = Counter(
    "quantrac_bridge_messages_acked", "MQTT messages acknowledged to the broker after Kafka confirmed all their records.")
BRIDGE_KAFKA_RETRIES = Counter(
    "quantrac_bridge_kafka_retries", "Kafka sends that failed and were queued again.")
BRIDGE_OUTBOX = Gauge(
    "quantrac_bridge_outbox_records", "Kafka records waiting in the bridge (grows while Kafka is slow or down).")
BRIDGE_MQTT_CONNECTED = Gauge(
    "quantrac_bridge_mqtt_connected", "1 while the bridge is connected to the MQTT broker.")
DEADLETTERS = Counter(
    "quantrac_deadletters", "Messages or readings sent to the dead-letter topic, by reason code.", ["reason"])
QUARANTINED = Counter(
    "quantrac_quarantined", "Records a loop set aside after its tries failed (a `quarantined` dead letter), by loop.",
    ["stage"])

# --- bridge sessions (API, read from `bridge_sessions` at scrape time) ---------------------------
# Labelled by bridge client id: a deployment has a handful of bridges, not hundreds.
BRIDGE_SILENT_SECONDS = Gauge(
    "quantrac_bridge_silent_seconds", "Seconds since each known bridge session's last heartbeat.", ["client_id"])
BRIDGE_STRANDED = Gauge(
    "quantrac_bridge_stranded", "1 when a known bridge has been silent longer than QUANTRAC_BRIDGE_STRANDED_AFTER_S: "
    "its MQTT session keeps taking a share of the messages; drain it with `quantrac bridge drain <client_id>`.",
    ["client_id"])

# --- worker ------------------------------------------------------------------------------------
WORKER_RECORDS_IN = Counter(
    "quantrac_worker_records_in", "Kafka records of the readings topic taken by the worker.")
WORKER_READINGS_IN = Counter(
    "quantrac_worker_readings_in", "Readings decoded by the worker (before de-duplication).")
WORKER_READINGS_STORED = Counter(
    "quantrac_worker_readings_stored", "New readings written to PostgreSQL (redelivered duplicates excluded).")
WORKER_BATCH_RECORDS = Histogram(
    "quantrac_worker_batch_records", "Kafka records per batch written in one transaction.",
    buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500))
WORKER_WRITE_SECONDS = Histogram(
    "quantrac_worker_write_seconds", "Time to store and evaluate one batch, retries included.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
WORKER_BATCH_RETRIES = Counter(
    "quantrac_worker_batch_retries", "Batch attempts that failed on PostgreSQL and were retried.")
WORKER_CONSUMER_LAG = Gauge(
    "quantrac_worker_consumer_lag", "Records in the partition not yet committed by this worker (high watermark - committed).",
    ["topic", "partition"])
WORKER_ARRIVAL_FRONTIER_AGE = Gauge(
    "quantrac_worker_arrival_frontier_age_seconds", "How far behind the wall clock silence is judged: now minus the "
    "arrival frontier (Kafka time of the last processed record on the slowest partition with a backlog; 0 when caught up).")
ALERT_TRANSITIONS = Counter(
    "quantrac_alert_transitions", "Alert transitions published by the worker.", ["transition"])

# --- alerts and notifications ------------------------------------------------------------------
NOTIFICATION_FAILURES = Counter(
    "quantrac_notification_failures", "Alert notifications that could not be delivered, by channel and reason.",
    ["channel", "reason"])

# --- API ---------------------------------------------------------------------------------------
ALERTS_BY_STATUS = Gauge(
    "quantrac_alerts", "Alerts in the database by status (read at scrape time).", ["status"])

ALERT_STATUSES = ("open", "acknowledged", "resolved")


def consumer_lag(highwater: int | None, committed: int | None) -> int | None:
    """Records behind: `highwater` is the next offset Kafka will write, `committed` the group's committed
    offset (the next one it reads, Kafka's convention). None when unknown."""
    if highwater is None or highwater < 0:
        return None
    return max(0, highwater - (committed if committed is not None else 0))


def serve(port: int, process: str, host: str = "0.0.0.0") -> bool:
    """Expose this process's metrics on `host:port` (0 turns the endpoint off); True when serving."""
    if port <= 0:
        return False
    try:
        start_http_server(port, addr=host)
    except OSError as exc:
        log.error("metrics.port_unavailable", process=process, port=port, error=str(exc),
                  fix=f"set QUANTRAC_{process.upper()}_METRICS_PORT to a free port, or 0 to turn metrics off")
        return False
    log.info("metrics.serving", process=process, url=f"http://{host}:{port}/metrics")
    return True
