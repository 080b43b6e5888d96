"""Detection quality, streaming and without look-ahead: (a) the simulator's ground truth, (b) GECCO 2018.

(a) The seeded simulator (`ingest.scenarios`) plays the registry's stations for `--days` with
random incidents. Messages are taken in delivery order (late and out-of-order deliveries
included) and fed one at a time to the worker's pure detection step (`processors.detection`)
and, on a simulated wall clock ticking every `--tick` seconds, to the liveness check
(`processors.liveness`). An alarm is a condition turning active for a station + parameter +
rule, held open until clear for the alert lifecycle's hold time. Per incident kind: recall (an alarm of a rule meant for that kind within the incident,
or `--tolerance` minutes after it), detection delay (delivery time of the alarm − incident
start), precision (of the alarms of those rules: matched to this kind vs matched to nothing)
and F1. Beside it, in the same run, a naive baseline: instantaneous limit only, a static
z-score (|z| > 4 against the first day's mean and standard deviation of each series), and
silence noticed only when the station sends again (a key-based window).

(b) `bench/detection_gecco.py` on the GECCO 2018 training set (point-wise F1 of the EVENT flag,
event recall, alarm precision, delay, false alarms per day), with its own same-run baseline.

Usage::

    python bench/detection.py [--days 7] [--seed 7] [--per-day 2] [--gecco-rows N | --no-gecco]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from alerts.lifecycle import Policy  # noqa: E402
from alerts.rules import Condition, judge_limit, judge_offline  # noqa: E402
from ingest.scenarios import Incident, Message, generate, random_incidents  # noqa: E402
from processors import liveness  # noqa: E402
from processors.detection import DetectionConfig, detect  # noqa: E402
from quantrac.domain import Station  # noqa: E402
from quantrac.registry import load_registry  # noqa: E402
from quantrac.settings import get_settings  # noqa: E402

VALUE_KINDS = {"exceedance", "spike", "drift", "spill"}
TARGETS: dict[str, set[str]] = {
    "exceedance": VALUE_KINDS, "rate_of_change": VALUE_KINDS, "zscore": VALUE_KINDS,
    "anomaly_spike": VALUE_KINDS, "anomaly_drift": VALUE_KINDS, "anomaly_multivariate": VALUE_KINDS | {"stuck"},
    "anomaly_flatline": {"stuck"}, "out_of_range": VALUE_KINDS | {"fault"}, "device_fault": {"fault"},
    "calibration_overrun": {"calibration"}, "station_offline": {"silent", "late", "out_of_order"}, "below_minimum": VALUE_KINDS,
}
"""Incident kinds each rule family is meant to reveal (a window rule `exceedance_1h` is family `exceedance`).

`early_warning` is advice that a value is near its limit, not an incident detector: it is listed per
rule but scored for no kind. A delivery held back beyond the slot + grace (`late`, `out_of_order`)
is a transmission gap the receiving side must report, so `station_offline` counts for it."""
KINDS = ("exceedance", "spike", "drift", "spill", "stuck", "fault", "calibration", "silent", "late", "out_of_order")


def family(rule: str) -> str:
    for suffix in ("_5m", "_1h", "_24h"):
        if rule.endswith(suffix):
            return rule[: -len(suffix)]
    return rule


@dataclass(frozen=True)
class Alarm:
    station: str
    parameter: str
    rule: str
    ts: datetime          # event time the condition is about (window start for means)
    at: datetime          # when it was raised: delivery time of the message, or the liveness tick


class AlarmLog:
    """Turns a stream of conditions into alarms per station + parameter + rule, as the alert lifecycle would.

    An alarm opens on an active condition and ends only once its condition has been clear for the
    lifecycle's hold time (`alerts.lifecycle.Policy.clear_hold`); activity before that continues it.
    """

    def __init__(self, clear_hold: timedelta = Policy().clear_hold) -> None:
        self.clear_hold = clear_hold
        self.last_active: dict[tuple[str, str, str], datetime] = {}
        self.open: set[tuple[str, str, str]] = set()
        self.alarms: list[Alarm] = []

    def feed(self, conditions: Iterable[Condition], at: datetime) -> None:
        for c in conditions:
            key = (c.station_id, c.parameter, c.rule)
            if c.active:
                if key not in self.open:
                    self.alarms.append(Alarm(c.station_id, c.parameter, c.rule, c.ts, at))
                    self.open.add(key)
                self.last_active[key] = at
            elif key in self.open and at - self.last_active[key] >= self.clear_hold:
                self.open.discard(key)


def delivery_order(messages: Iterable[Message]) -> list[Message]:
    return sorted(messages, key=lambda m: (m.deliver_at, m.ts, m.station_id))


def run_quantrac(stations: dict[str, Station], messages: list[Message], tick: timedelta, grace_s: float) -> tuple[list[Alarm], dict[str, Any]]:
    """The worker's detection step and liveness timer, message by message in delivery order."""
    config = DetectionConfig.from_settings(get_settings())
    log = AlarmLog()
    states: dict[str, dict[str, Any]] = {}
    entries: dict[str, dict[str, Any]] = {}
    late = 0
    next_tick = messages[0].deliver_at if messages else datetime.now(timezone.utc)
    started = time.perf_counter()
    readings = 0
    for m in messages:
        while next_tick <= m.deliver_at:
            for station_id, entry, condition in liveness.overdue(entries.items(), stations, next_tick, grace_s):
                entries[station_id] = entry
                log.feed([condition], next_tick)
            next_tick += tick
        entry, recovery = liveness.seen(entries.get(m.station_id), stations[m.station_id], m.ts, m.deliver_at)
        entries[m.station_id] = entry
        if recovery is not None:
            log.feed([recovery], m.deliver_at)
        outcome = detect(states.get(m.station_id), m.readings, stations[m.station_id], config)
        states[m.station_id] = outcome.state
        late += len(outcome.late)
        readings += len(m.readings)
        log.feed(outcome.conditions, m.deliver_at)
    seconds = time.perf_counter() - started
    return log.alarms, {"readings": readings, "late_readings": late, "seconds": round(seconds, 2),
                        "readings_per_s": round(readings / seconds) if seconds else None}


def run_baseline(stations: dict[str, Station], messages: list[Message], grace_s: float) -> tuple[list[Alarm], dict[str, Any]]:
    """Naive: instantaneous limit, static z-score from each series' first day, silence seen only at the next message."""
    log = AlarmLog()
    first: dict[tuple[str, str], list[float]] = defaultdict(list)
    ref: dict[tuple[str, str], tuple[float, float]] = {}
    last_receipt: dict[str, datetime] = {}
    started = time.perf_counter()
    for m in messages:
        station = stations[m.station_id]
        previous = last_receipt.get(m.station_id)
        if previous is not None:
            due = liveness.deadline(station, previous, grace_s)
            offline = m.deliver_at > due
            log.feed([judge_offline(station, previous, due, m.deliver_at, offline=offline)], m.deliver_at)
        last_receipt[m.station_id] = max(m.deliver_at, previous or m.deliver_at)
        found: list[Condition] = []
        for r in m.readings:
            if not r.is_valid_measurement:
                continue
            value = float(r.value)  # type: ignore[arg-type]
            found.extend(judge_limit(station, r.parameter, value, r.ts, "instant", early_fraction=None))
            key = (m.station_id, r.parameter)
            if key in ref:
                mean, sd = ref[key]
                z = abs(value - mean) / sd if sd > 0 else 0.0
                found.append(Condition(m.station_id, r.parameter, "zscore", "instant", found[0].severity if found else "warning",  # type: ignore[arg-type]
                                       z, 4.0, "static z-score", r.ts, "", active=z > 4.0))
            elif r.ts - messages[0].ts < timedelta(days=1):
                first[key].append(value)
            else:
                values = first.pop(key, [value])
                ref[key] = (statistics.fmean(values), statistics.pstdev(values) if len(values) > 1 else 0.0)
        log.feed(found, m.deliver_at)
    return log.alarms, {"seconds": round(time.perf_counter() - started, 2)}


def _matches(alarm: Alarm, incident: Incident, tolerance: timedelta) -> bool:
    if alarm.station != incident.station:
        return False
    if incident.parameter is not None and incident.parameter not in alarm.parameter.split(","):
        return False
    if incident.parameter is None and alarm.parameter != "*":
        return False
    reach = timedelta(days=1) if alarm.rule.endswith("_24h") else timedelta(hours=1) if alarm.rule.endswith("_1h") else timedelta(0)
    return incident.start - reach <= alarm.ts <= incident.end + tolerance


def score(alarms: list[Alarm], incidents: list[Incident], tolerance: timedelta) -> dict[str, Any]:
    """Recall, delay, precision and F1 per incident kind; alarms and precision per rule family."""
    matched_kinds: list[set[str]] = []
    for a in alarms:
        kinds = {i.kind for i in incidents if _matches(a, i, tolerance)} & TARGETS.get(family(a.rule), set())
        matched_kinds.append(kinds)
    per_kind: dict[str, Any] = {}
    for kind in KINDS:
        these = [i for i in incidents if i.kind == kind]
        if not these:
            continue
        targeted = [(a, k) for a, k in zip(alarms, matched_kinds) if kind in TARGETS.get(family(a.rule), set())]
        delays = []
        for incident in these:
            hits = [a.at for a, _ in targeted if _matches(a, incident, tolerance)]
            if hits:
                delays.append(max(0.0, (min(hits) - incident.start).total_seconds() / 60))
        recall = len(delays) / len(these)
        tp = sum(1 for _, k in targeted if kind in k)
        fp = sum(1 for _, k in targeted if not k)
        precision = tp / (tp + fp) if tp + fp else None
        f1 = 2 * precision * recall / (precision + recall) if precision and recall else 0.0
        per_kind[kind] = {"incidents": len(these), "detected": len(delays), "recall": round(recall, 3),
                          "precision": None if precision is None else round(precision, 3), "f1": round(f1, 3),
                          "delay_min_median": round(statistics.median(delays), 1) if delays else None,
                          "delay_min_p90": round(float(np.percentile(delays, 90)), 1) if delays else None}
    per_rule: dict[str, Any] = defaultdict(lambda: {"alarms": 0, "matched": 0})
    for a, k in zip(alarms, matched_kinds):
        entry = per_rule[family(a.rule)]
        entry["alarms"] += 1
        entry["matched"] += int(bool(k))
    for entry in per_rule.values():
        entry["precision"] = round(entry["matched"] / entry["alarms"], 3)
    return {"per_kind": per_kind, "per_rule": dict(sorted(per_rule.items())), "alarms": len(alarms)}


def simulator_figures(days: float, seed: int, per_day: float, tick_s: float, tolerance_min: float) -> dict[str, Any]:
    s = get_settings()
    stations = load_registry(s.registry_file, s.limits_dir)
    start = datetime(2026, 11, 2, tzinfo=timezone.utc)  # a Monday
    duration = timedelta(days=days)
    incidents = random_incidents(stations, start, duration, seed, per_station_per_day=per_day)
    messages = delivery_order(generate(stations, start, duration, seed, incidents=incidents))
    tolerance = timedelta(minutes=tolerance_min)
    ours, run = run_quantrac(stations, messages, timedelta(seconds=tick_s), s.offline_grace_s)
    naive, naive_run = run_baseline(stations, messages, s.offline_grace_s)
    return {
        "stations": len(stations), "days": days, "seed": seed, "messages": len(messages), "incidents": len(incidents),
        "incident_kinds": {k: sum(1 for i in incidents if i.kind == k) for k in KINDS},
        "tolerance_min": tolerance_min, "liveness_tick_s": tick_s, "offline_grace_s": s.offline_grace_s,
        "quantrac": {**score(ours, incidents, tolerance), "run": run},
        "baseline": {**score(naive, incidents, tolerance), "run": naive_run,
                     "what": "instantaneous limit + static |z|>4 from each series' first day + silence seen at the next message"},
    }


def gecco_figures(rows: int | None) -> dict[str, Any]:
    sys.path.insert(0, str(REPO / "bench"))
    import detection_gecco  # type: ignore[import-not-found]

    argv = ["--rows", str(rows)] if rows else []
    with contextlib.redirect_stdout(io.StringIO()):
        result: dict[str, Any] = detection_gecco.main(argv)
    result.pop("config", None)
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--per-day", type=float, default=2.0, help="incidents per station per day")
    parser.add_argument("--tick", type=float, default=10.0, help="liveness timer interval (simulated seconds)")
    parser.add_argument("--tolerance", type=float, default=30.0, help="minutes after an incident an alarm still counts")
    parser.add_argument("--gecco-rows", type=int, help="only the first N GECCO rows")
    parser.add_argument("--no-gecco", action="store_true")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    result: dict[str, Any] = {"simulator": simulator_figures(args.days, args.seed, args.per_day, args.tick, args.tolerance)}
    if not args.no_gecco:
        result["gecco2018"] = gecco_figures(args.gecco_rows)
    result["seconds"] = round(time.perf_counter() - started, 1)
    from bench.common import write_result
    write_result("detection", json.loads(json.dumps(result, default=str)))
    return result


if __name__ == "__main__":
    main()
