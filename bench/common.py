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
from typing import TYPE_CHECKING, Any, Callable, Iterable

if TYPE_CHECKING:
    from quantrac.settings import Settings

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def machine_info() -> dict[str, Any]:
    meminfo = Path("/proc/meminfo").read_text().split("\n", 1)[0].split()
    cpu_model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), platform.processor())
    return {"cpus": os.cpu_count(), "cpu_model": cpu_model, "mem_gib": round(int(meminfo[1]) / 2**20, 1),
            "python": platform.python_version(), "platform": platform.platform()}


def newest(name: str, keep: Callable[[dict[str, Any]], bool] = lambda result: True) -> dict[str, Any] | None:
    """The newest result of a benchmark (`bench/results/<name>-*.json`) that `keep` accepts, or None."""
    for path in sorted(RESULTS.glob(f"{name}-*.json"), reverse=True):
        result: dict[str, Any] = json.loads(path.read_text())
        if keep(result):
            return result
    return None


def one_worker_run(result: dict[str, Any]) -> bool:
    """A `bench/worker.py` result of one worker process not under py-spy (`--profile` slows it): the headline run."""
    return bool(result["worker"].get("processes", 1) == 1 and "worker_profile_top_frames" not in result)


def tree() -> str | None:
    """The commit of the code that ran (`+dirty` when it has uncommitted changes), so a result from another checkout
    (a before-tree, for a same-day comparison) says which it was; None outside a git checkout."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True).stdout.strip()
    try:
        head = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{head}+dirty" if dirty else head


def write_result(name: str, result: dict[str, Any]) -> Path:
    """Print the result as JSON and keep it under bench/results/."""
    stamped = {"benchmark": name, "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "machine": machine_info(), "tree": tree(), **result}
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


def _slope(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of `ys` against `xs`; None for fewer than 3 points or no spread in `xs`."""
    n = len(xs)
    if n < 3:
        return None
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    spread = sum((x - mean_x) ** 2 for x in xs)
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / spread if spread else None


def lag_slope(samples: list[int]) -> float:
    """Least-squares slope of one-second lag samples (messages/s); 0 for fewer than 3 samples."""
    return _slope([float(x) for x in range(len(samples))], [float(y) for y in samples]) or 0.0


def lag_bounded(samples: list[int], messages_per_s: float) -> bool:
    """The lag of the step's last third peaks no higher than in its middle third (plus 10 % and one
    second of traffic): the worker's offset commits make the lag a saw-tooth, so its ends alone say little."""
    third = len(samples) // 3
    if third == 0:
        return True
    return max(samples[-third:]) <= 1.1 * max(samples[third:2 * third]) + messages_per_s


SUSTAINED_MAX_LAG_GROWTH = 0.1
"""Largest lag slope of a sustained step, as a share of the offered messages/s (a short step's commit saw-tooth
leaves some slope)."""
SUSTAINED_MIN_OFFERED = 0.95
"""Least share of the offered rate the publisher must reach for a step to say anything about that rate."""


def sustained(offered_per_s: float, achieved_per_s: float, lost: int, drain_s: float, lags: list[int],
              messages_per_s: float) -> bool:
    """Whether an end-to-end step sustained its offered rate: the publisher reached it (a machine too slow to publish
    it measured a lower rate), nothing was lost, the backlog was stored within 10 s of the last publish, and the
    consumer lag (after the warm-up, `lags`) stayed bounded and grew under `SUSTAINED_MAX_LAG_GROWTH` of the offered
    messages/s."""
    return (achieved_per_s >= SUSTAINED_MIN_OFFERED * offered_per_s and lost == 0 and drain_s <= 10
            and lag_bounded(lags, messages_per_s) and lag_slope(lags) < SUSTAINED_MAX_LAG_GROWTH * messages_per_s)


def slope_per_hour(minutes: list[float], values: list[float]) -> float | None:
    """Least-squares slope of `values` against `minutes`, per hour; None for fewer than 3 samples."""
    slope = _slope(minutes, values)
    return None if slope is None else round(slope * 60, 2)


def memory_trend(minutes: list[float], rss: list[float]) -> dict[str, float | None]:
    """A component's resident memory over a soak: first, last, largest, their ratio, and the slope over the whole
    run and over its last third. A process that warms up (caches and state filling to their size) and then
    stays flat has a steep whole-run slope and a flat last third; a leak is steep in both."""
    third = len(rss) // 3
    return {"first_mib": rss[0], "last_mib": rss[-1], "max_mib": max(rss),
            "ratio_last_to_first": round(rss[-1] / rss[0], 3) if rss[0] else None,
            "slope_mib_per_hour": slope_per_hour(minutes, rss),
            "last_third_slope_mib_per_hour": slope_per_hour(minutes[-third:], rss[-third:]) if third else None}


def stored_rates(samples: list[tuple[float, int]], window_min: float = 5.0) -> dict[str, float] | None:
    """Readings stored a second over the run's first and last `window_min` minutes, and their ratio.

    `samples` are (minute since the start, readings stored since the start), in order. The first
    window runs from the start to the first sample at least `window_min` in; the last, from the
    last sample back to the newest sample at least `window_min` before it. A falling ratio is a
    worker that slows as its tables grow (the soak of 2026-11-29: 1,070 → 530 readings/s). None
    when the run is shorter than two windows.
    """
    if not samples or samples[-1][0] < 2 * window_min:
        return None
    first_at, first_stored = next((m, n) for m, n in samples if m >= window_min)
    last_at, last_stored = samples[-1]
    back_at, back_stored = next((m, n) for m, n in reversed(samples) if m <= last_at - window_min)
    first = first_stored / (first_at * 60)
    last = (last_stored - back_stored) / ((last_at - back_at) * 60)
    return {"first_per_s": round(first, 1), "last_per_s": round(last, 1),
            "last_to_first": round(last / first, 3) if first else 0.0}


def soak_figures(samples: list[dict[str, Any]], names: Iterable[str]) -> tuple[dict[str, float] | None, dict[str, Any]]:
    """A soak's stored rate (`stored_rates`) and each named component's memory (`memory_trend`), from its samples."""
    minutes = [s["minute"] for s in samples]
    return (stored_rates([(s["minute"], s["stored"]) for s in samples]),
            {name: memory_trend(minutes, [s["components"][name]["rss_mib"] for s in samples]) for name in names})


def stored_so_far(conn: Any, station_id: str | None = None) -> int:
    """The readings stored (of one station, or of all), as the worker counts them in the transaction that stores them
    (`delivery_counts`): exact, and cheap enough to poll while it drains. Counting `readings` itself scans it (no index
    serves `station_id`; 95 ms at 2.4 M readings), which polled every 0.2 s took a third of a core from what a bench
    measures on a 2-core machine."""
    where = "" if station_id is None else " AND station_id = %s"
    found = conn.execute(f"SELECT coalesce(sum(n), 0) FROM delivery_counts WHERE counter = 'stored'{where}",
                         () if station_id is None else (station_id,)).fetchone()
    return int(found[0])


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
    return subprocess.Popen([sys.executable, "-m", "cli", *args], env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
                            stdout=log_path.open("ab"), stderr=subprocess.STDOUT)


def namespace_env(ns: str) -> dict[str, str]:
    """Settings that give a benchmark its own database, topics and client ids on the shared stack."""
    return {
        "QUANTRAC_PG_DATABASE": f"quantrac_{ns}", "QUANTRAC_READINGS_TOPIC": f"quantrac.{ns}.readings",
        "QUANTRAC_DEADLETTER_TOPIC": f"quantrac.{ns}.readings.deadletter", "QUANTRAC_ALERTS_TOPIC": f"quantrac.{ns}.alerts",
        "QUANTRAC_MQTT_BRIDGE_CLIENT_ID": f"quantrac-bridge-{ns}", "QUANTRAC_WORKER_ID": f"quantrac-worker-{ns}",
    }


def private_settings(name: str, **overrides: Any) -> "Settings":
    """Settings of the benchmarks' PRIVATE stack (.run/private-perf-bench, ports 21400-21403, or from
    QUANTRAC_BENCH_PORT_BASE when several checkouts bench on one machine), with topics, database and
    client ids of their own for this run, so runs never see each other's records."""
    from quantrac.settings import Settings

    run = f"{name}{int(time.time())}"
    base = int(os.environ.get("QUANTRAC_BENCH_PORT_BASE", "21400"))
    return Settings(
        run_dir=REPO / ".run" / "private-perf-bench", mqtt_port=base, kafka_bootstrap=f"127.0.0.1:{base + 1}",
        kafka_controller_port=base + 2, pg_port=base + 3, pg_database=f"quantrac_{name}",
        readings_topic=f"quantrac.{run}.readings", deadletter_topic=f"quantrac.{run}.readings.deadletter",
        alerts_topic=f"quantrac.{run}.alerts", mqtt_bridge_client_id=f"quantrac-bridge-{run}", worker_id=f"quantrac-worker-{run}",
        stack_start_timeout_s=180, **overrides,
    )


def settings_env(s: "Settings") -> dict[str, str]:
    """The environment that points a `quantrac ...` subprocess at these settings."""
    return {"QUANTRAC_RUN_DIR": str(s.run_dir), "QUANTRAC_MQTT_PORT": str(s.mqtt_port), "QUANTRAC_KAFKA_BOOTSTRAP": s.kafka_bootstrap,
            "QUANTRAC_KAFKA_CONTROLLER_PORT": str(s.kafka_controller_port), "QUANTRAC_PG_PORT": str(s.pg_port),
            "QUANTRAC_PG_DATABASE": s.pg_database, "QUANTRAC_READINGS_TOPIC": s.readings_topic,
            "QUANTRAC_DEADLETTER_TOPIC": s.deadletter_topic, "QUANTRAC_ALERTS_TOPIC": s.alerts_topic,
            "QUANTRAC_MQTT_BRIDGE_CLIENT_ID": s.mqtt_bridge_client_id, "QUANTRAC_WORKER_ID": s.worker_id,
            "QUANTRAC_LOG_LEVEL": "WARNING", "QUANTRAC_BRIDGE_METRICS_PORT": "0", "QUANTRAC_WORKER_METRICS_PORT": "0"}


def mqtt_logins(settings: "Settings") -> dict[str, tuple[str, str]]:
    """MQTT logins for a benchmark on a broker without anonymous access: `publisher`, the test
    account (may publish for any station; created if missing), and `reader`, the bridge's account
    (may read the readings topics). The settings object may predate the accounts (a fresh stack)."""
    from quantrac.mqtt_accounts import bridge_login, tester_credential
    from stack.mosquitto_accounts import sync

    tester = tester_credential(settings)
    if tester is None:
        sync(settings, {}, test_account=True)
        tester = tester_credential(settings)
    assert tester is not None
    username, password = bridge_login(settings)
    assert username is not None and password is not None, "no bridge account: run quantrac stack up first"
    return {"publisher": (tester.username, tester.password), "reader": (username, password)}


def prepare_private_stack(s: "Settings", keep: bool) -> None:
    """A fresh private stack, or the running one with `keep`; the broker's jars are copied from the shared run dir."""
    import shutil

    from quantrac.kafka_topics import ensure_topics
    from stack import services as stack

    if not keep:
        stack.down(s)
        for child in s.run_dir.glob("*"):
            if child.name != "kafka-libs":
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    shared_libs = REPO / ".run" / "kafka-libs"
    if not (s.run_dir / "kafka-libs").exists() and (shared_libs / ".pom-sha256").is_file():
        s.run_dir.mkdir(parents=True, exist_ok=True)
        shutil.copytree(shared_libs, s.run_dir / "kafka-libs")
    stack.up(s)
    ensure_topics(s)


def start_profile(pid: int, out: Path, rate: int = 50) -> subprocess.Popen[bytes]:
    """py-spy sampling every thread of `pid` `rate` times a second, idle ones included, as collapsed stacks (stop with SIGINT)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([str(Path(sys.executable).with_name("py-spy")), "record", "--idle", "--threads", "--rate", str(rate),
                             "--format", "raw", "--output", str(out), "--pid", str(pid)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_profile(spy: subprocess.Popen[bytes] | None, out: Path) -> dict[str, list[dict[str, object]]]:
    if spy is None:
        return {}
    spy.send_signal(2)  # SIGINT: py-spy writes its file and exits
    spy.wait(30)
    return top_frames(out)


IDLE_FRAMES = ("Condition.wait", "select (", "Event.wait", "sleep", "_sock_recv", "client.py:1663", "concurrent/futures/thread.py")
PROJECT_DIRS = ("ingest/", "processors/", "quantrac/", "alerts/", "api/")


def top_frames(collapsed: Path, limit: int = 12) -> dict[str, list[dict[str, object]]]:
    """Where the busy samples of py-spy's raw output went: the innermost frames (`leaf`, self time) and
    the project's own frames (`project`, inclusive). Shares are of busy samples: a sample whose leaf
    is a wait (select, Condition.wait, ...) counts as idle."""
    if not collapsed.is_file():
        return {}
    leaf: dict[str, int] = {}
    project: dict[str, int] = {}
    busy = 0
    for line in collapsed.read_text().splitlines():
        stack_text, _, count = line.rpartition(" ")
        frames, n = stack_text.split(";"), int(count)
        if any(marker in frames[-1] for marker in IDLE_FRAMES):
            continue
        busy += n
        leaf[frames[-1]] = leaf.get(frames[-1], 0) + n
        for frame in set(frames[1:]):
            if any(f"({d}" in frame for d in PROJECT_DIRS):
                project[frame] = project.get(frame, 0) + n

    def ranked(counts: dict[str, int]) -> list[dict[str, object]]:
        return [{"frame": f, "share_of_busy": round(n / max(busy, 1), 3)} for f, n in sorted(counts.items(), key=lambda kv: -kv[1])[:limit]]

    return {"leaf": ranked(leaf), "project": ranked(project)}
