"""One settings object, read from `QUANTRAC_*` environment variables.

Build it with `get_settings()` (cached) rather than at import time, so tests and
subprocesses can set the environment first.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent

KAFKA_SAFE_PAYLOAD_BYTES = 640 * 1024
"""The largest dead-letter payload cap that keeps a dead letter (base64, about 4/3 of it, plus its text
fields) well inside Kafka's default maximum request of 1 MiB (producer `max_request_size`, broker
`message.max.bytes`)."""


class Settings(BaseSettings):
    """Every tunable of quantrac; the environment variable is `QUANTRAC_` + the field name in capitals."""

    model_config = SettingsConfigDict(env_prefix="QUANTRAC_", extra="ignore")

    run_dir: Path = Field(REPO_ROOT / ".run", description="Service data, logs and generated credentials (git-ignored).")
    registry_file: Path = Field(REPO_ROOT / "quantrac" / "data" / "stations.yaml", description="Station registry seed.")
    limits_dir: Path = Field(REPO_ROOT / "alerts" / "limits", description="Regulatory limit tables (QCVN), one YAML per regulation.")

    mqtt_host: str = Field("127.0.0.1", description="Mosquitto host.")
    mqtt_port: int = Field(1883, description="Mosquitto port.")
    mqtt_username: str | None = Field(None, description="MQTT account of the bridge (none: the one `stack up` / `gateways sync` generated in run_dir/mosquitto/credentials.json).")
    mqtt_password: SecretStr | None = Field(None, description="Its password (never logged).")
    mqtt_test_account: bool = Field(False, description="`stack up` / `gateways sync` also create `quantrac-test-gateway`, which may publish for every station (tests, installers; never in production); false removes it, so `make run` after `make test` drops it.")
    mqtt_bridge_client_id: str = Field("quantrac-bridge", description="This bridge's fixed name. Its persistent MQTT session's client id is the name keyed by the bridge account's password (`quantrac.mqtt_accounts.bridge_session_id`), so no gateway can take the session over.")
    mqtt_session_expiry_s: int = Field(7 * 24 * 3600, description="How long the broker keeps the bridge's session while it is away.")
    mqtt_tls_ca_file: Path | None = Field(None, description="CA certificate of the broker's TLS listener; when set, clients connect with TLS.")
    mosquitto_tls_port: int | None = Field(None, description="Extra TLS listener of the local Mosquitto, certificate from a CA generated under run_dir.")
    bridge_max_inflight: int = Field(1000, description="Most unacknowledged MQTT messages the bridge holds (its MQTT 5 receive maximum).")
    bridge_record_max_bytes: int = Field(256 * 1024, ge=0, description="The bridge joins the readings of one station's messages that wait for Kafka together into one record of at most this size (and at most half of kafka_max_request_bytes); 0: one record per message.")
    bridge_counts_flush_s: float = Field(30.0, description="How often the bridge adds its per-station delivery counts to PostgreSQL.")
    delivery_late_after_s: int = Field(3600, description="Readings received this long after their event time are counted as late in delivery accounting (and still stored).")
    mqtt_shared_group: str = Field("", description="MQTT shared-subscription group of the bridges (`$share/<group>/...`); empty: one bridge takes every message.")
    bridge_on_stop: Literal["keep", "drain"] = Field("keep", description="What a bridge does with its MQTT session on SIGTERM: `keep` it for a restart under the same client id (StatefulSet, compose, `make run`), or `drain` it (unsubscribe, forward what it holds) and end it, for client ids that never come back (scale-down, a Deployment). A bridge keeps its session anyway when no other bridge of its group is alive.")
    bridge_stop_timeout_s: float = Field(20.0, gt=0, description="On SIGTERM, longest a bridge waits for its in-flight messages to reach Kafka (keep) or for its session to drain (drain); keep it under the orchestrator's grace period.")
    bridge_heartbeat_s: float = Field(10.0, gt=0, description="How often a bridge records that it is alive (table `bridge_sessions`).")
    bridge_stranded_after_s: float = Field(120.0, gt=0, description="A known bridge silent this long counts as stranded (`quantrac_bridge_stranded{client_id}`, alert QuantracBridgeStranded): its session may hold messages; drain it with `quantrac bridge drain <client id>`.")

    kafka_bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers, comma-separated.")
    kafka_controller_port: int = Field(9093, description="KRaft controller port of the local broker.")
    kafka_heap: str = Field("512m", description="Java heap of the local broker.")
    kafka_max_request_bytes: int = Field(1024 * 1024, gt=0, description="Largest request quantrac's kafka-python producers send (their `max_request_size`); keep it at or below the broker's `message.max.bytes`. A record above it is refused, tried again, then quarantined.")

    stack_start_timeout_s: float = Field(60.0, description="How long `stack up` waits for each service to answer on its port.")
    stack_stop_timeout_s: float = Field(30.0, description="How long `stack down` waits after SIGTERM before it sends SIGKILL.")
    stack_watch_s: float = Field(5.0, gt=0, description="How often `quantrac run` (`make run`) checks the services it started; one whose process is gone is started again (`stack.service_died`, `stack.service_restarted` in its log).")

    pg_host: str = Field("127.0.0.1", description="PostgreSQL host.")
    pg_port: int = Field(5433, description="PostgreSQL port.")
    pg_user: str = Field("quantrac", description="PostgreSQL role.")
    pg_password: SecretStr | None = Field(None, description="Its password (the local stack trusts loopback).")
    pg_database: str = Field("quantrac", description="Database name.")
    pg_timescaledb: bool = Field(True, description="The local PostgreSQL preloads TimescaleDB when the extension is installed (false: plain PostgreSQL, the native store path).")
    pg_native_port: int | None = Field(None, description="Port of the second local PostgreSQL, without TimescaleDB, that the tests and the store bench start for the native store path (none: pg_port + 1).")
    timescaledb_source: Path | None = Field(REPO_ROOT.parent / "shared" / "vendor" / "timescaledb" / "timescaledb-2.28.3.tar.gz",
                                            description="Source tarball `make deps` builds TimescaleDB from when the extension is not installed (none or missing: plain PostgreSQL).")
    timescaledb_cache: Path = Field(Path.home() / ".cache" / "quantrac" / "timescaledb",
                                    description="Build cache of TimescaleDB outside the clone (one folder per release and PostgreSQL version), so a machine builds it once.")
    db_migrate_on_start: bool = Field(False, description="Apply pending database migrations when the bridge, worker, API or notifier starts (several at once take turns on an advisory lock).")

    api_host: str = Field("127.0.0.1", description="Address the API listens on.")
    api_port: int = Field(8000, description="API port.")

    readings_topic: str = Field("quantrac.readings", description="Validated readings, keyed by station id.")
    deadletter_topic: str = Field("quantrac.readings.deadletter", description="Rejected messages, whole, with their reason.")
    alerts_topic: str = Field("quantrac.alerts", description="Alert transitions.")

    alert_clear_hysteresis: float = Field(0.05, ge=0, lt=1, description="A value counts as clear only once inside the limit by this fraction (limit × (1 − h)).")
    alert_clear_hold_s: float = Field(900.0, ge=0, description="How long (event time) a condition must stay clear before its alert resolves by itself.")
    escalation_warning_after_s: float = Field(3600.0, gt=0, description="An open warning not acknowledged within this escalates.")
    escalation_critical_after_s: float = Field(900.0, gt=0, description="An open critical alert not acknowledged within this escalates.")
    reminder_first_s: float = Field(900.0, gt=0, description="First reminder of an escalated, unacknowledged alert comes this long after escalation.")
    reminder_backoff: float = Field(2.0, ge=1, description="Each further reminder waits this many times longer than the previous one.")
    reminder_max_s: float = Field(4 * 3600.0, gt=0, description="Longest wait between two reminders.")
    notify_webhook_url: str | None = Field(None, description="Webhook receiving alert notifications (none: off).")
    notify_escalation_webhook_url: str | None = Field(None, description="Webhook of the escalation channel (none: the main webhook).")
    notify_webhook_secret: SecretStr | None = Field(None, description="HMAC-SHA256 key signing webhook bodies (X-Quantrac-Signature).")
    notify_webhook_attempts: int = Field(5, ge=1, description="Attempts per webhook delivery before it is logged as failed.")
    notify_webhook_backoff_s: float = Field(0.5, ge=0, description="First wait between webhook attempts; doubles each time.")
    notify_webhook_timeout_s: float = Field(5.0, gt=0, description="Timeout of one webhook request.")
    notify_mqtt_topic: str = Field("quantrac/v1/alerts/{zone}", description="MQTT topic of alert notifications; {zone} is the industrial zone.")
    notify_mqtt_enabled: bool = Field(True, description="Publish alert notifications over MQTT.")
    smtp_host: str | None = Field(None, description="SMTP server for alert e-mails (none: no e-mail).")
    smtp_port: int = Field(25, description="SMTP port.")
    smtp_starttls: bool = Field(False, description="Use STARTTLS with the SMTP server.")
    smtp_username: str | None = Field(None, description="SMTP account (none: no login).")
    smtp_password: SecretStr | None = Field(None, description="Its password (never logged).")
    smtp_from: str = Field("quantrac@localhost", description="Sender of alert e-mails.")
    smtp_to: str = Field("", description="Recipients of alert e-mails, comma-separated.")
    notifier_poll_s: float = Field(1.0, gt=0, description="How often the notifier looks for new alert events.")
    notifier_tick_s: float = Field(30.0, gt=0, description="How often the notifier checks escalations and reminders.")
    sse_poll_s: float = Field(0.5, gt=0, description="How often the alert stream looks for new alert events.")
    sse_gap_grace_s: float = Field(10.0, ge=0, description="How long the alert stream waits at a hole in the event ids (a transaction still committing) before it steps over it (a rolled-back one).")
    topic_partitions: int = Field(6, description="Partitions of every quantrac topic; the worker scales up to this many processes.")

    max_payload_bytes: int = Field(64 * 1024, description="Larger MQTT payloads are dead-lettered as oversize.")
    deadletter_payload_cap_bytes: int = Field(256 * 1024, ge=0, le=KAFKA_SAFE_PAYLOAD_BYTES, description="Bytes of a rejected payload a dead letter keeps (the head; its size and SHA-256 are always kept, `truncated` says it was cut). Base64 makes a dead letter about 4/3 of this, inside Kafka's 1 MiB maximum request.")
    deadletter_max_per_message: int = Field(20, ge=1, description="Rejected readings of one message dead-lettered one by one; the rest become one `too_many_rejections` dead letter with counts by reason.")
    mqtt_message_size_limit: int = Field(16 * 1024 * 1024, ge=0, description="Mosquitto's `message_size_limit` for the local broker: it refuses larger PUBLISHes (MQTT 5 gateways get a PUBACK with reason code 149; 3.1.1 gateways a plain PUBACK, and the message is dropped). Up to it, the bridge dead-letters what it cannot take.")
    log_repeat_interval_s: float = Field(10.0, gt=0, description="A failure that repeats (the same event and cause) is logged once per this interval, with a count of the repeats.")
    max_future_s: int = Field(300, description="Readings stamped further ahead of the receive time are rejected.")
    retention_days: int = Field(730, description="Readings older than this are rejected at ingest and dropped from the store.")
    partitions_ahead_days: int = Field(7, description="Day partitions of readings the worker keeps created ahead (native PostgreSQL).")
    maintenance_interval_s: float = Field(3600.0, description="How often the worker creates partitions ahead, applies retention and refreshes aggregates.")
    registry_refresh_s: float = Field(30.0, description="How often the bridge and worker reload the station registry.")
    registry_miss_reload_s: float = Field(1.0, description="Least time between reloads caused by an unknown station id.")
    tt10_poll_s: float = Field(1.0, description="How often `tt10 watch` scans its drop folder.")
    tt10_settle_s: float = Field(2.0, description="A TT10 file is read once its size and time have not changed for this long.")
    tt10_station_codes: dict[str, str] = Field({}, description="TT10 <Station> code → station id, as JSON (a code not listed is the station id itself).")
    tt10_province_code: str = Field("HP", description="<Province> code of exported TT10 file names when the readings did not come from a file.")
    worker_id: str = Field("quantrac-worker", description="Faust app id, also the Kafka consumer group.")
    worker_batch_size: int = Field(10000, description="Most Kafka messages written to PostgreSQL in one transaction. A "
                                   "station's share of a batch's work is partly fixed (its rule state walked, its "
                                   "detectors' rows gathered once), so a backlog drains faster in larger batches: 5000 "
                                   "stored about 1.3 times as many readings a second as 2000, and 10000 about 1.1 times "
                                   "as many as 5000 (docs/performance.md). Under a light load a batch holds what came "
                                   "within QUANTRAC_WORKER_BATCH_LATENCY_S.")
    worker_batch_latency_s: float = Field(0.5, description="Longest a message waits for its batch to fill.")
    worker_fetch_partition_bytes: int = Field(8 * 1024 * 1024, gt=0, description="Most bytes the worker fetches from "
                                              "one readings partition at a time. A fetch should bring a whole batch: "
                                              "at Kafka's 1 MiB a backlog came about 3,500 records at a time, and the "
                                              "worker waited up to 0.2 s for each next fetch (docs/performance.md).")
    worker_state_snapshot_s: float = Field(5.0, gt=0, description="How often the worker writes its stations' detection "
                                           "state to the store (table detection_snapshots). After a restart or a "
                                           "rebalance, a station's state is read back and the readings stored since are "
                                           "judged again for it: at most about this many seconds of them.")
    worker_gc_thresholds: tuple[int, ...] = Field((20000, 50, 100), description="Python's garbage collector in the worker: after start-up the heap is frozen (`gc.freeze()`, never scanned again) and collections use these thresholds (generations 0, 1, 2; Python's default is 700, 10, 10). The worker keeps every series' detector state alive, so with the defaults full collections rescanned it every few batches (docs/performance.md). A JSON list of three; [] leaves the collector as Python sets it.")
    worker_kafka_metadata_max_age_s: float = Field(30.0, gt=0, description="How often the worker's Kafka consumer and producer refresh their metadata even without a leadership change (Kafka's default: 300 s). A client that saw a new topic before its partitions had leaders keeps that view until then (faust-streaming PR 279).")
    detect_lateness_s: int = Field(600, description="Readings up to this much older than a station's newest event time still update their windows; older ones are stored and counted as late.")
    detect_window_min_coverage: float = Field(0.5, description="Share of a window's expected readings that must be valid (status 00) before its mean is judged against the limit.")
    detect_early_warning_fraction: float = Field(0.8, description="Early warning (severity warning) when a value or mean exceeds this fraction of its limit.")
    detect_fault_after_n: int = Field(3, description="Consecutive status 02 readings of a parameter that make a `device_fault` alert.")
    detect_fault_after_s: int = Field(1800, description="Status 02 lasting this long (event time) makes a `device_fault` alert, whatever the count.")
    detect_calibration_max_s: int = Field(3600, description="Continuous calibration (status 01) longer than this raises `calibration_overrun` [U].")
    detect_calibration_daily_s: int = Field(7200, description="Calibration allowance per local day; more status 01 time in a day raises `calibration_overrun` [U].")
    detect_rate_span_s: int = Field(300, gt=0, description="Span a rate of change is judged over: robust levels about this far apart (or the station's interval when longer); a parameter's `rate_span_s` overrides it.")
    detect_gap_intervals: float = Field(6, gt=0, description="A series silent for this many of its station's intervals (and at least QUANTRAC_DETECT_GAP_MIN_S) has a gap: its anomaly and rate alerts close at the last reading before it and its detectors relearn.")
    detect_gap_min_s: int = Field(900, ge=0, description="Shortest silence taken as a gap in a series, whatever the station's interval (see QUANTRAC_DETECT_GAP_INTERVALS).")
    detect_relearn_gap_s: int = Field(21600, ge=0, description="After a gap at least this long (event time) a series' detectors relearn before judging; shorter gaps only close its open anomaly alerts (the spike detector has its own, QUANTRAC_DETECT_SPIKE_RELEARN_GAP_S).")
    detect_spike_relearn_gap_s: int = Field(7200, ge=0, description="After a gap at least this long the spike detector relearns its level (it keeps its step, known levels and tail): the level it compares with is the series' last before the gap, and a parameter with a daily cycle has moved on by then. The other detectors keep QUANTRAC_DETECT_RELEARN_GAP_S (docs/detection.md, Gaps).")
    detect_detectors: str = Field("spike,drift,flatline,multivariate", description="Anomaly detectors the worker may run, comma-separated (names of processors.detectors.DETECTORS); a station's preset or channel naming another is left out. Which run where is the station's preset (docs/detection.md, Presets).")
    detect_refractory_s: float = Field(1800.0, ge=0, description="One alarm per incident: after a series' anomaly alert resolved, an anomaly within this long (event time) of its last flag is the same incident, not a new alert (docs/detection.md).")
    detect_detector_params: str = Field('{"spike": {"threshold": 8.0, "relearn_after": 6, "center_window": 5, "tail_ref": 5.5, "tail_fit": 0.01, "tail_blend": true, "reseed_after": 6}, "drift": {"k": 1.0, "h": 14.0, "relearn_after": 3, "learn_clip": 4.0}, "flatline": {"n_intervals": 12}}',
                                        description="Hyperparameters (JSON object by detector name) of the preset channels that give none, as the kind presets' generic channels do; unnamed ones keep their defaults.")
    offline_grace_s: int = Field(60, description="Default grace after a station's missed slot before it is reported offline (a station's `offline_grace_s` overrides it).")
    clock_lag_alert_s: int = Field(1800, gt=0, description="Lag of a station's readings' times behind their arrival above which its clock is watched; if they do not catch up within as long again, `station_clock` is raised (a station's `clock_lag_alert_s` overrides it; never under three of its expected intervals).")
    liveness_check_s: float = Field(10.0, description="How often (wall clock) the worker checks for silent stations.")
    metrics_host: str = Field("127.0.0.1", description="Address the bridge's and worker's Prometheus endpoints listen on (0.0.0.0 in containers).")
    bridge_metrics_port: int = Field(0, description="Port of the bridge's Prometheus `/metrics` (0: off).")
    worker_metrics_port: int = Field(0, description="Port of the worker's Prometheus `/metrics` (0: off).")
    api_metrics_key_file: Path | None = Field(None, description="File holding a key that may read only the API's `/metrics` (Prometheus' bearer credentials_file); read at each scrape.")

    display_timezone: str = Field("Asia/Ho_Chi_Minh", description="Time zone of times shown by the API (storage is UTC).")
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR.")
    log_format: str = Field("console", description="console (key=value) or json (one object a line).")

    @model_validator(mode="after")
    def _generated_mqtt_account(self) -> "Settings":
        """Without QUANTRAC_MQTT_USERNAME, use the bridge account that `quantrac gateways sync` generated under run_dir."""
        if self.mqtt_username is None:
            path = mqtt_credentials_file(self.run_dir)
            if path.is_file():
                bridge = json.loads(path.read_text())["bridge"]
                self.mqtt_username, self.mqtt_password = bridge["username"], SecretStr(bridge["password"])
        return self

    @property
    def pg_dsn(self) -> str:
        """libpq connection string for the quantrac database."""
        parts = [f"host={self.pg_host}", f"port={self.pg_port}", f"user={self.pg_user}", f"dbname={self.pg_database}"]
        if self.pg_password is not None:
            parts.append(f"password={self.pg_password.get_secret_value()}")
        return " ".join(parts)

    @property
    def native_pg_port(self) -> int:
        """Port of the local native-PostgreSQL server (tests, store bench)."""
        return self.pg_native_port if self.pg_native_port is not None else self.pg_port + 1

    @property
    def kafka_url(self) -> str:
        """Broker URL in the form faust expects."""
        return "kafka://" + ",".join(self.kafka_bootstrap.split(","))


def mqtt_credentials_file(run_dir: Path) -> Path:
    """Where `quantrac gateways sync` keeps the generated MQTT accounts (mode 600, never in the repo)."""
    return run_dir / "mosquitto" / "credentials.json"


def _portable(path: Path) -> str:
    """A default path as the README shows it, the same on every machine: relative to the repository,
    `../` for the folder beside it, `~/` for the home directory."""
    if path.is_relative_to(REPO_ROOT):
        return str(path.relative_to(REPO_ROOT))
    if path.is_relative_to(REPO_ROOT.parent):
        return str(Path("..") / path.relative_to(REPO_ROOT.parent))
    if path.is_relative_to(Path.home()):
        return str(Path("~") / path.relative_to(Path.home()))
    return str(path)


def settings_table() -> str:
    """The settings as a Markdown table (environment variable, default, meaning) for the README."""
    rows = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.default
        if isinstance(default, Path):
            default = _portable(default)
        shown = "" if default is None else f"`{default}`"
        rows.append(f"| `QUANTRAC_{name.upper()}` | {shown} | {field.description or ''} |")
    return "\n".join(rows)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
