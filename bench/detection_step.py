"""The worker's detection step in process: CPU µs per reading of `detect_batch`, beside the same step of a baseline commit.

No services: the stations of `bench/worker.py` (its template, `--stations` of them, every rule and
detector on) each send a message of 8 readings a minute, `--messages` messages a batch as the worker
takes them, judged with the worker's live detectors, its state cache (each state written back as the
table's bytes, as the worker does) and an empty set of open alerts. After `--warm` batches, `--batches`
are timed (CPU time of `detect_batch` and the state write only; readings are made outside the clock),
with the cyclic garbage collector's share beside it.

The same-run baseline is the same measurement on the tree of `--baseline-ref` (default: the commit
this branch started from), extracted with `git archive`; the two trees run in turns, `--rounds` each,
in fresh processes, and the median of each is reported with their ratio.

    python bench/detection_step.py [--stations 200] [--messages 500] [--warm 20] [--batches 20] [--rounds 3]
                                   [--baseline-ref 767aa1a] [--gc-freeze 20000,50,100]
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from datetime import datetime, timedelta, timezone
from io import BytesIO
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def _worker_config(config_type: Any) -> Any:
    """The worker's detection settings as `quantrac worker` reads them (`QUANTRAC_DETECT_*`; their defaults tune the
    spike detector's tail), where the tree can read them; else the dataclass's defaults."""
    from quantrac.settings import Settings

    from_settings = getattr(config_type, "from_settings", None)
    return config_type() if from_settings is None else from_settings(Settings())


class Harness:
    """The worker's detection step over generated messages: `stations_n` stations of `bench/worker.py`, each sending
    a message of 8 readings every `seconds_apart` of event time, judged with the worker's live detectors, its state
    cache (states written back as the table's bytes as the worker writes them: `step`) and an empty set of open
    alerts, under the worker's detection settings. Its modules are imported when it is made, so a harness made after a tree is put first on `sys.path` runs
    that tree's code."""

    def __init__(self, stations_n: int, seconds_apart: float = 60.0, batch_s: float = 0.5, snapshot_s: float = 5.0) -> None:
        from bench.worker import bench_stations, value
        from processors.detection import DetectionConfig, LiveDetectors, detect_batch
        from processors.detection_state import StateCache
        from quantrac.domain import Reading, Status

        self.stations = bench_stations(stations_n)
        self.ids = sorted(self.stations)
        self.seconds_apart = seconds_apart
        self.rng = random.Random(1)
        self.start = datetime(2026, 12, 1, tzinfo=timezone.utc)
        self.config, self.live = _worker_config(DetectionConfig), LiveDetectors()
        self.cache: Any = StateCache()
        """The tree's own state cache, whose methods changed over the trees this harness runs."""
        self.raws: dict[str, bytes] = {}
        self._value, self._detect, self._reading, self._measuring = value, detect_batch, Reading, Status.MEASURING
        try:
            from processors.detection import snapshot_states
            from processors.detection_state import SnapshotPlan
        except ImportError:  # a tree from before state snapshots
            self.plan: Any = None
        else:
            self.plan, self._snapshot = SnapshotPlan(snapshot_s), snapshot_states
        self.batch_s, self.clock = batch_s, 0.0
        self._table_cache = hasattr(StateCache, "is_kept")
        """A tree from before the state moved to the store: its cache compares the Faust table's bytes."""

    def _kept(self, station_id: str) -> Any:
        """The station's state as the worker finds it at a batch: kept, else read from its last written bytes."""
        if self._table_cache:
            return self.cache.state(station_id, self.raws.get(station_id))
        kept = self.cache.kept(station_id)
        if kept is None and station_id in self.raws:
            from processors.detection_state import decode_state
            return decode_state(self.raws[station_id])
        return kept

    def event_s(self, message: int) -> float:
        """Seconds of event time from the start to message number `message`."""
        return (message // len(self.ids)) * self.seconds_apart

    def messages(self, first: int, count: int) -> Any:
        """The readings of messages `first` to `first + count - 1`, in order: as the batch's columns where the tree's
        detection takes them (the worker hands it the decoded columns), else as `Reading`s."""
        readings = self.readings(first, count)
        try:
            from processors.station_rows import split  # noqa: F401  (a tree whose detect_batch takes columns)
            from quantrac.batch_columns import batch_columns
        except ImportError:
            return readings
        return batch_columns(readings)

    def readings(self, first: int, count: int) -> list[Any]:
        """The readings of messages `first` to `first + count - 1`, in order."""
        out = []
        for i in range(first, first + count):
            station = self.stations[self.ids[i % len(self.ids)]]
            ts = self.start + timedelta(seconds=self.event_s(i))
            out += [self._reading(station_id=station.id, parameter=symbol, value=self._value(self.rng, symbol),
                                  unit=spec.unit, ts=ts, status=self._measuring)
                    for symbol, spec in station.parameters.items()]
        return out

    def step(self, readings: Any) -> int:
        """Judge one batch as the worker does; the number of conditions.

        A tree with state snapshots (`SnapshotPlan`) keeps the states alive and writes them as the worker does, with
        batches `batch_s` of the worker's time apart; an older tree writes every state after every batch."""
        ids = {k[0] for k in readings.series_keys} if hasattr(readings, "series_keys") else {r.station_id for r in readings}
        owned = {i: self._kept(i) for i in ids}
        if self.plan is None:
            states, conditions, _ = self._detect(readings, owned, self.stations, self.config, self.live, set(), owned=True)
            for i, s in states.items():
                self.raws[i] = self.cache.written(i, s)
            return len(conditions)
        states, conditions, _ = self._detect(readings, owned, self.stations, self.config, self.live, set(), owned=True,
                                             save_rows=False)
        for i, state in states.items():
            if self._table_cache:
                self.cache.keep(i, state, self.raws.get(i))
            else:
                self.cache.keep(i, state)
        self.clock += self.batch_s
        due = self.plan.due(states, [i for i in states if i not in self.raws], self.clock)
        self.raws.update(self._snapshot(self.cache, self.live, due))
        return len(conditions)


def measure(tree: Path, stations_n: int, messages: int, warm: int, batches: int,
            gc_thresholds: tuple[int, ...] = ()) -> dict[str, Any]:
    """µs per reading of the detection step of the code in `tree` (imported from there)."""
    sys.path.insert(0, str(tree))
    harness = Harness(stations_n)

    def batch(b: int) -> list[Any]:
        return harness.messages(b * messages, messages)

    step = harness.step

    for b in range(warm):
        step(batch(b))
    if gc_thresholds:  # what a worker-level GC setting would give: the warm heap frozen, collections rarer
        gc.collect()
        gc.freeze()
        gc.set_threshold(*gc_thresholds)
    gc_s, gc_began, full = [0.0], [0.0], [0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            gc_began[0] = time.process_time()
        else:
            gc_s[0] += time.process_time() - gc_began[0]
            full[0] += info["generation"] == 2

    cpu = wall = 0.0
    readings = conditions = 0
    for b in range(warm, warm + batches):
        rs = batch(b)
        gc.callbacks.append(on_gc)  # only the collections inside the clock
        c0, w0 = time.process_time(), time.perf_counter()
        conditions += step(rs)
        cpu += time.process_time() - c0
        wall += time.perf_counter() - w0
        gc.callbacks.remove(on_gc)
        readings += len(rs)
    return {"readings": readings, "conditions": conditions, "cpu_us_per_reading": round(cpu / readings * 1e6, 1),
            "gc_cpu_us_per_reading": round(gc_s[0] / readings * 1e6, 1),
            "full_collections": full[0], "wall_us_per_reading": round(wall / readings * 1e6, 1)}


def extract(ref: str, into: Path) -> Path:
    """The tree of commit `ref` under `into`."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stations", type=int, default=200)
    parser.add_argument("--messages", type=int, default=500, help="station messages (8 readings each) a batch")
    parser.add_argument("--warm", type=int, default=20)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline-ref", default="767aa1a")
    parser.add_argument("--gc-freeze", default="", metavar="T0,T1,T2",
                        help="after the warm-up, gc.freeze() and gc.set_threshold(T0, T1, T2) in both trees")
    parser.add_argument("--inner", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = [str(args.stations), str(args.messages), str(args.warm), str(args.batches)]
    thresholds = tuple(int(t) for t in args.gc_freeze.split(",") if t)
    if args.inner:
        print(json.dumps(measure(args.inner, args.stations, args.messages, args.warm, args.batches, thresholds)))
        return
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], check=True, capture_output=True,
                          text=True).stdout.strip()
    runs: dict[str, list[dict[str, Any]]] = {"this": [], "baseline": []}
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"this": REPO, "baseline": extract(args.baseline_ref, Path(tmp))}
        for _ in range(args.rounds):
            for name, tree in trees.items():
                out = subprocess.run([sys.executable, __file__, "--inner", str(tree), "--stations", sizes[0],
                                      "--messages", sizes[1], "--warm", sizes[2], "--batches", sizes[3], "--gc-freeze", args.gc_freeze],
                                     check=True, capture_output=True, text=True, cwd=tree).stdout
                runs[name].append(json.loads(out.strip().splitlines()[-1]))
    median = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in runs.items()}
    sys.path.insert(0, str(REPO))
    from bench.common import write_result

    write_result("detection_step", {
        "method": "in-process detect_batch + state write, CPU time per reading after warm-up; baseline tree run in "
                  "turns in fresh processes; medians of the rounds",
        "stations": args.stations, "readings_per_batch": args.messages * 8, "warm_batches": args.warm,
        "timed_batches": args.batches, "rounds": args.rounds, "gc_freeze_thresholds": thresholds or None, "commit": head, "baseline_ref": args.baseline_ref,
        "this": median["this"], "baseline": median["baseline"], "runs": runs,
        "cpu_ratio_this_to_baseline": round(median["this"]["cpu_us_per_reading"]
                                            / median["baseline"]["cpu_us_per_reading"], 3),
    })


if __name__ == "__main__":
    main()
