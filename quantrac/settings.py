"""One settings object, read from `QUANTRAC_*` environment variables.

Build it with `get_settings()` (cached) rather than at import time, so tests and
subprocesses can set the environment first.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """Every tunable of quantrac; the environment variable is `QUANTRAC_` + the field name in capitals."""

    model_config = SettingsConfigDict(env_prefix="QUANTRAC_", extra="ignore")

    run_dir: Path = Field(REPO_ROOT / ".run", description="Service data, logs and generated credentials (git-ignored).")
    registry_file: Path = Field(REPO_ROOT / "quantrac" / "data" / "stations.yaml", description="Station registry seed.")
    limits_dir: Path = Field(REPO_ROOT / "alerts" / "limits", description="Regulatory limit tables (QCVN), one YAML per regulation.")

    mqtt_host: str = Field("127.0.0.1", description="Mosquitto host.")
    mqtt_port: int = Field(1883, description="Mosquitto port.")
    mqtt_username: str | None = Field(None, description="MQTT account of the bridge (none: anonymous).")
    mqtt_password: SecretStr | None = Field(None, description="Its password (never logged).")
    mqtt_bridge_client_id: str = Field("quantrac-bridge", description="Fixed client id: the broker keeps this persistent session.")
    mqtt_session_expiry_s: int = Field(7 * 24 * 3600, description="How long the broker keeps the bridge's session while it is away.")

    kafka_bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers, comma-separated.")
    kafka_controller_port: int = Field(9093, description="KRaft controller port of the local broker.")
    kafka_heap: str = Field("512m", description="Java heap of the local broker.")

    stack_start_timeout_s: float = Field(60.0, description="How long `stack up` waits for each service to answer on its port.")
    stack_stop_timeout_s: float = Field(30.0, description="How long `stack down` waits after SIGTERM before it sends SIGKILL.")

    pg_host: str = Field("127.0.0.1", description="PostgreSQL host.")
    pg_port: int = Field(5433, description="PostgreSQL port.")
    pg_user: str = Field("quantrac", description="PostgreSQL role.")
    pg_password: SecretStr | None = Field(None, description="Its password (the local stack trusts loopback).")
    pg_database: str = Field("quantrac", description="Database name.")

    api_host: str = Field("127.0.0.1", description="Address the API listens on.")
    api_port: int = Field(8000, description="API port.")

    readings_topic: str = Field("quantrac.readings", description="Validated readings, keyed by station id.")
    deadletter_topic: str = Field("quantrac.readings.deadletter", description="Rejected messages, whole, with their reason.")
    alerts_topic: str = Field("quantrac.alerts", description="Alert transitions.")
    topic_partitions: int = Field(6, description="Partitions of every quantrac topic; the worker scales up to this many processes.")

    max_payload_bytes: int = Field(64 * 1024, description="Larger MQTT payloads are dead-lettered as oversize.")
    max_future_s: int = Field(300, description="Readings stamped further ahead of the receive time are rejected.")
    retention_days: int = Field(730, description="Readings older than this are rejected at ingest and dropped from the store.")
    registry_refresh_s: float = Field(30.0, description="How often the bridge and worker reload the station registry.")
    registry_miss_reload_s: float = Field(1.0, description="Least time between reloads caused by an unknown station id.")
    worker_id: str = Field("quantrac-worker", description="Faust app id, also the Kafka consumer group.")
    worker_batch_size: int = Field(500, description="Most Kafka messages written to PostgreSQL in one transaction.")
    worker_batch_latency_s: float = Field(0.5, description="Longest a message waits for its batch to fill.")

    display_timezone: str = Field("Asia/Ho_Chi_Minh", description="Time zone of times shown by the API (storage is UTC).")
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR.")
    log_format: str = Field("console", description="console (key=value) or json (one object a line).")

    @property
    def pg_dsn(self) -> str:
        """libpq connection string for the quantrac database."""
        parts = [f"host={self.pg_host}", f"port={self.pg_port}", f"user={self.pg_user}", f"dbname={self.pg_database}"]
        if self.pg_password is not None:
            parts.append(f"password={self.pg_password.get_secret_value()}")
        return " ".join(parts)

    @property
    def kafka_url(self) -> str:
        """Broker URL in the form faust expects."""
        return "kafka://" + ",".join(self.kafka_bootstrap.split(","))


def settings_table() -> str:
    """The settings as a Markdown table (environment variable, default, meaning) for the README."""
    rows = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.default
        if isinstance(default, Path):
            default = default.relative_to(REPO_ROOT) if default.is_relative_to(REPO_ROOT) else default
        shown = "" if default is None else f"`{default}`"
        rows.append(f"| `QUANTRAC_{name.upper()}` | {shown} | {field.description or ''} |")
    return "\n".join(rows)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
