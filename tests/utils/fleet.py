"""Bridges and workers run as real subprocesses for one test, and their metrics scraped."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.utils.processes import NAMESPACE, Process


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=3).text
    except httpx.HTTPError:
        return {}
    return {(s.name, frozenset(s.labels.items())): s.value for f in text_string_to_metric_families(text) for s in f.samples}


def owned_partitions(port: int, topic_name: str) -> set[str]:
    """Readings partitions a worker currently owns, from its consumer-lag series."""
    return {dict(labels)["partition"] for (name, labels) in scrape(port)
            if name == "quantrac_worker_consumer_lag" and dict(labels).get("topic") == topic_name}


@dataclass
class Fleet:
    """The bridges and workers of one test, each with its metrics port. The bridges' client ids and
    shared group are new for every run: a session left by an earlier run in the same group would
    take its turn of the messages."""

    log_dir: Path
    ports: dict[str, int]
    """Metrics port of each process, by name: `bridge1`, `worker2`, ... (the command is the name without its digits)."""
    base_env: dict[str, str] = field(default_factory=dict)
    prefix: str = "scale"
    """Log files are `<prefix>-<name>.log` under log_dir."""
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    procs: dict[str, Process] = field(default_factory=dict)

    def start(self, name: str, **extra_env: str) -> Process:
        command = name.rstrip("0123456789")
        env = {**self.base_env, f"QUANTRAC_{command.upper()}_METRICS_PORT": str(self.ports[name]), **extra_env}
        if command == "bridge":
            env |= {"QUANTRAC_MQTT_SHARED_GROUP": f"quantrac-{NAMESPACE}-{self.run_id}",
                    "QUANTRAC_MQTT_BRIDGE_CLIENT_ID": self.client_id(name),
                    "QUANTRAC_MQTT_SESSION_EXPIRY_S": "300"}  # outlives the kill, not the test session by much
        self.procs[name] = Process(f"{self.prefix}-{name}", [command], self.log_dir, env)
        return self.procs[name]

    def client_id(self, name: str) -> str:
        return f"quantrac-{NAMESPACE}-{self.run_id}-{name}"

    def tails(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.tail(12)}" for p in self.procs.values())
