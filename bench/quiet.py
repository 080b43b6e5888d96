"""Alert budget on normal data: anomaly and rate-of-change alarms per station-week, no incidents injected.

The seeded simulator plays every registry station without incidents at several reporting rates
(the TT10 5-minute cadence down to 1-s MQTT); each station's `expected_interval_s` is set to the
rate it reports at. Messages go through the worker's pure detection step (`processors.detection`)
in delivery order and into the same alarm log as `bench/detection.py` (an alarm is a condition
turning active for a station + parameter + rule, held open until clear for the lifecycle's hold
time). Every anomaly or rate-of-change alarm is false here. Faster rates are played for a shorter
span (the step costs the same per reading) and the count is scaled to a station-week; the span is
reported beside it, and it includes the detectors' warm-up.

Usage::

    python bench/quiet.py [--seed 7] [--rates 300:7d,60:2d,10:12h,1:2h]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.detection import AlarmLog, delivery_order  # noqa: E402
from ingest.scenarios import generate  # noqa: E402
from processors.detection import DetectionConfig, detect  # noqa: E402
from processors.detection_state import StationState  # noqa: E402
from quantrac.domain import Station  # noqa: E402
from quantrac.registry import load_registry  # noqa: E402
from quantrac.settings import get_settings  # noqa: E402

START = datetime(2026, 11, 2, tzinfo=timezone.utc)
WEEK = timedelta(days=7)
DEFAULT_RATES = "300:7d,60:2d,10:12h,1:2h"


def is_budgeted(rule: str) -> bool:
    """The rules the budget counts: anomaly detectors and rate of change (limits are not false on normal data)."""
    return rule.startswith("anomaly_") or rule == "rate_of_change"


def parse_span(text: str) -> timedelta:
    unit = text[-1]
    amount = float(text[:-1])
    return {"d": timedelta(days=amount), "h": timedelta(hours=amount), "m": timedelta(minutes=amount)}[unit]


def at_rate(stations: dict[str, Station], interval_s: int) -> dict[str, Station]:
    return {sid: s.model_copy(update={"expected_interval_s": interval_s}) for sid, s in stations.items()}


def quiet_run(stations: dict[str, Station], interval_s: int, span: timedelta, seed: int) -> dict[str, Any]:
    """False alarms of one rate: counts by rule and per station-week."""
    stations = at_rate(stations, interval_s)
    config = DetectionConfig.from_settings(get_settings())
    messages = delivery_order(generate(stations, START, span, seed, interval=timedelta(seconds=interval_s)))
    log = AlarmLog()
    states: dict[str, StationState] = {}
    started = time.perf_counter()
    readings = 0
    for m in messages:
        outcome = detect(states.get(m.station_id), m.readings, stations[m.station_id], config)
        states[m.station_id] = outcome.state
        readings += len(m.readings)
        log.feed(outcome.conditions, m.deliver_at)
    false = [a for a in log.alarms if is_budgeted(a.rule)]
    station_weeks = len(stations) * (span / WEEK)
    return {"interval_s": interval_s, "span_h": round(span.total_seconds() / 3600, 2), "stations": len(stations),
            "readings": readings, "false_alarms": len(false),
            "per_station_week": round(len(false) / station_weeks, 2) if station_weeks else None,
            "by_rule": dict(Counter(a.rule for a in false).most_common()),
            "seconds": round(time.perf_counter() - started, 1)}


def quiet_figures(rates: str = DEFAULT_RATES, seed: int = 7) -> list[dict[str, Any]]:
    s = get_settings()
    stations = load_registry(s.registry_file, s.limits_dir)
    out = []
    for part in rates.split(","):
        interval, span = part.split(":")
        out.append(quiet_run(stations, int(interval), parse_span(span), seed))
    return out


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rates", default=DEFAULT_RATES, help="interval_s:span pairs, span in d/h/m")
    args = parser.parse_args(argv)
    figures = quiet_figures(args.rates, args.seed)
    print(json.dumps(figures, indent=1))
    return figures


if __name__ == "__main__":
    main()
