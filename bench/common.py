"""What every benchmark shares: machine information, result files, process sampling.

Benchmarks print one JSON object and also write it to `bench/results/<name>-<UTC time>.json`;
`bench/report.py` turns the newest results into the README's performance table.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def machine_info() -> dict[str, Any]:
    meminfo = Path("/proc/meminfo").read_text().split("\n", 1)[0].split()
    cpu_model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), platform.processor())
    return {"cpus": os.cpu_count(), "cpu_model": cpu_model, "mem_gib": round(int(meminfo[1]) / 2**20, 1),
            "python": platform.python_version(), "platform": platform.platform()}


def write_result(name: str, result: dict[str, Any]) -> Path:
    """Print the result as JSON and keep it under bench/results/."""
    stamped = {"benchmark": name, "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "machine": machine_info(), **result}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(stamped, indent=2) + "\n")
    print(json.dumps(stamped, indent=2))
    return path


def percentiles(values: list[float], points: tuple[int, ...] = (50, 95, 99)) -> dict[str, float | None]:
    if not values:
        return {f"p{p}": None for p in points}
    ordered = sorted(values)
    return {f"p{p}": round(ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))], 4) for p in points}


def process_tree(pid: int) -> list[int]:
    """`pid` and all of its descendants (PostgreSQL does its work in child backends)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            todo.extend(int(child) for child in task.read_text().split())
    return found


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class ProcessSample:
    """CPU (as a share of one core) and resident memory of a process and its descendants."""

    pid: int
    cpu_start: dict[int, float] = field(default_factory=dict)
    wall_start: float = field(default_factory=time.monotonic)

    def _read(self, reader: Any) -> dict[int, float]:
        values = {}
        for pid in process_tree(self.pid):
            try:
                values[pid] = reader(pid)
            except (FileNotFoundError, ProcessLookupError):
                continue
        return values

    def start(self) -> "ProcessSample":
        self.cpu_start, self.wall_start = self._read(_cpu_seconds), time.monotonic()
        return self

    def usage(self) -> dict[str, float]:
        """CPU since start() (processes born since then count from zero) and RSS now."""
        wall = max(time.monotonic() - self.wall_start, 1e-9)
        cpu_now = self._read(_cpu_seconds)
        cpu = sum(value - self.cpu_start.get(pid, 0.0) for pid, value in cpu_now.items())
        return {"cpu_cores": round(cpu / wall, 3), "rss_mib": round(sum(self._read(_rss_mib).values()), 1)}


def quantrac_process(args: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """A `quantrac ...` subprocess with its output in `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([sys.executable, "-m", "quantrac.cli", *args], env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
                            stdout=log_path.open("ab"), stderr=subprocess.STDOUT)


def namespace_env(ns: str) -> dict[str, str]:
    """Settings that give a benchmark its own database, topics and client ids on the shared stack."""
    return {
        "QUANTRAC_PG_DATABASE": f"quantrac_{ns}", "QUANTRAC_READINGS_TOPIC": f"quantrac.{ns}.readings",
        "QUANTRAC_DEADLETTER_TOPIC": f"quantrac.{ns}.readings.deadletter", "QUANTRAC_ALERTS_TOPIC": f"quantrac.{ns}.alerts",
        "QUANTRAC_MQTT_BRIDGE_CLIENT_ID": f"quantrac-bridge-{ns}", "QUANTRAC_WORKER_ID": f"quantrac-worker-{ns}",
    }
