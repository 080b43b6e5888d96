"""The detection step's CPU per reading as event time goes by, at the end-to-end bench's cadence.

No services. `--stations` stations of `bench/worker.py` each send a message of 8 readings every
1 / `--per-s` seconds of event time, as `bench/e2e.py` does at 10,000 readings/s (6.25 a second).
`detect_batch` judges them in batches of `--messages` messages, with the worker's live detectors
and state cache. The figure is the CPU time per reading of each minute of event time; the baseline
is the first minutes of the same run, before any rule has history enough to judge.

Why: end to end, 10,000 readings/s held for 60 s, but fell behind after 4-5 minutes of a 10-minute
step. The rate of change is judged only once a series has readings three quarters of its span old
(225 s at a 300-s span, `processors/rate_span.py`). From then on, every reading costs the rate's
levels too, so a 60-s step measures a worker that has not started judging rates yet.

    python bench/detection_warmup.py [--stations 20] [--per-s 6.25] [--minutes 11] [--messages 50]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import write_result  # noqa: E402
from bench.detection_step import Harness  # noqa: E402

BASELINE_MINUTES = 3
"""Minutes 0-2 of event time: no series has readings 225 s old yet."""


def per_minute(stations_n: int, per_s: float, minutes: int, messages: int) -> list[dict[str, Any]]:
    """CPU µs per reading of `detect_batch` and the state write, per minute of event time."""
    harness = Harness(stations_n, seconds_apart=1 / per_s)
    total = int(stations_n * per_s * minutes * 60)
    spent: dict[int, list[float]] = {}
    for first in range(0, total, messages):
        readings = harness.messages(first, min(messages, total - first))
        began = time.process_time()
        harness.step(readings)
        bucket = spent.setdefault(int(harness.event_s(first) // 60), [0.0, 0])
        bucket[0] += time.process_time() - began
        bucket[1] += len(readings)
    return [{"minute": m, "readings": int(n), "cpu_us_per_reading": round(c / n * 1e6, 1)} for m, (c, n) in sorted(spent.items())]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stations", type=int, default=20)
    parser.add_argument("--per-s", type=float, default=6.25, help="messages a second of event time, per station")
    parser.add_argument("--minutes", type=int, default=11)
    parser.add_argument("--messages", type=int, default=50, help="station messages (8 readings each) a batch")
    args = parser.parse_args()
    if args.minutes <= BASELINE_MINUTES + 3:
        parser.error(f"--minutes must be over {BASELINE_MINUTES + 3}: the warm figure is read from minute {BASELINE_MINUTES + 3} on")
    minutes = per_minute(args.stations, args.per_s, args.minutes, args.messages)
    cold = statistics.median(m["cpu_us_per_reading"] for m in minutes[:BASELINE_MINUTES])
    warm = statistics.median(m["cpu_us_per_reading"] for m in minutes[BASELINE_MINUTES + 3:])
    write_result("detection_warmup", {
        "method": "in-process detect_batch + state write, CPU time per reading per minute of event time",
        "stations": args.stations, "messages_per_s_per_station": args.per_s, "messages_per_batch": args.messages,
        "baseline": {"minutes": f"0-{BASELINE_MINUTES - 1}", "cpu_us_per_reading": cold},
        "warm": {"minutes": f"{BASELINE_MINUTES + 3}-{args.minutes - 1}", "cpu_us_per_reading": warm},
        "warm_to_baseline": round(warm / cold, 3), "per_minute": minutes,
    })


if __name__ == "__main__":
    main()
