"""Detection quality, streaming and without look-ahead: (a) the simulator's ground truth, (b) GECCO 2018.

(a) The seeded simulator (`ingest.scenarios`) plays the registry's stations for `--days` with
random incidents, and gateway clock faults drawn apart from them (`ingest.scenarios.with_clock_faults`). Messages are taken in delivery order (late and out-of-order deliveries
included) and fed one at a time to the worker's pure detection step (`processors.detection`)
and, on a simulated wall clock ticking every `--tick` seconds, to the liveness check
(`processors.liveness`). An alarm is a condition turning active for a station + parameter +
rule, held open until clear for the alert lifecycle's hold time. Per incident kind: recall (an alarm of a rule meant for that kind within the incident,
or `--tolerance` minutes after it), detection delay (delivery time of the alarm − incident
start), precision (of the alarms of those rules: matched to this kind vs matched to nothing)
and F1. Beside it, in the same run, a naive baseline: instantaneous limit only, a static
z-score (|z| > 4 against the first day's mean and standard deviation of each series), and
silence noticed only when the station sends again (a key-based window).

(b) The GECCO 2018 drinking-water training set (one labelled file, so split by time at
`GECCO_SPLIT`): the channels of `quantrac/data/presets/drinking_water.json`, tuned by
`bench/tune_gecco.py` on the rows before the split, are scored on the rows after it with
`gecco_score` (point-wise F1 of the EVENT flag, the challenge's metric; event recall, alarm
precision, delay, false alarms per day). Same-run baseline: a static z-score over the columns of one
of the preset's channels (or all of them), columns and threshold picked on the training rows.

Usage::

    python bench/detection.py [--days 7] [--seed 7] [--per-day 2] [--gecco-data CSV | --no-gecco] [--quiet-rates R]

(c) The alert budget on normal data (`bench/quiet.py`): every station without incidents at 5 min
to 1 s, anomaly and rate-of-change alarms (all false) per station-week. (d) Synthetic stress series
(`bench/stress.py`): alarms per injected event, false alarms per series-week.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import sys
import tempfile
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
from ingest.scenarios import (  # noqa: E402
    Incident,
    Message,
    generate,
    incident_from_truth,
    random_incidents,
    with_clock_faults,
)
from ingest.simulator import write_ground_truth  # noqa: E402
from processors import liveness  # noqa: E402
from processors.detection import DetectionConfig, detect  # noqa: E402
from processors.detection_state import StationState  # noqa: E402
from processors.detectors.presets import build, load_preset  # noqa: E402
from quantrac.domain import Station  # noqa: E402
from quantrac.registry import load_registry  # noqa: E402
from quantrac.settings import get_settings  # noqa: E402
from quantrac.shared_folder import find_shared, shared_candidates  # noqa: E402

VALUE_KINDS = {"exceedance", "spike", "drift", "spill"}
TARGETS: dict[str, set[str]] = {
    "exceedance": VALUE_KINDS, "rate_of_change": VALUE_KINDS, "zscore": VALUE_KINDS,
    "anomaly_spike": VALUE_KINDS, "anomaly_drift": VALUE_KINDS, "anomaly_multivariate": VALUE_KINDS | {"stuck"},
    "anomaly_flatline": {"stuck"}, "out_of_range": VALUE_KINDS | {"fault"}, "device_fault": {"fault"},
    "calibration_overrun": {"calibration"}, "station_offline": {"silent", "late", "out_of_order"}, "below_minimum": VALUE_KINDS,
    "station_clock": {"clock"},
}
"""Incident kinds each rule family is meant to reveal (a window rule `exceedance_1h` is family `exceedance`).

`early_warning` is advice that a value is near its limit, not an incident detector: it is listed per
rule but scored for no kind. A delivery held back beyond the slot + grace (`late`, `out_of_order`)
is a transmission gap the receiving side must report, so `station_offline` counts for it."""
KINDS = ("exceedance", "spike", "drift", "spill", "stuck", "fault", "calibration", "silent", "late", "out_of_order", "clock")


def family(rule: str) -> str:
    for suffix in ("_5m", "_1h", "_24h"):
        if rule.endswith(suffix):
            return rule[: -len(suffix)]
    return rule


CLEAR_HOLD = Policy().clear_hold
"""How long an alarm's condition must be clear before it ends (the lifecycle's default hold)."""


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

    def __init__(self, clear_hold: timedelta = CLEAR_HOLD) -> None:
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
            elif key in self.open and (c.data_stopped or at - self.last_active[key] >= self.clear_hold):
                self.open.discard(key)


def delivery_order(messages: Iterable[Message]) -> list[Message]:
    return sorted(messages, key=lambda m: (m.deliver_at, m.ts, m.station_id))


def run_quantrac(stations: dict[str, Station], messages: list[Message], tick: timedelta, grace_s: float) -> tuple[list[Alarm], dict[str, Any]]:
    """The worker's detection step and liveness timer, message by message in delivery order."""
    settings = get_settings()
    config = DetectionConfig.from_settings(settings)
    log = AlarmLog()
    states: dict[str, StationState] = {}
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
        entry, found = liveness.seen(entries.get(m.station_id), stations[m.station_id], m.ts, m.deliver_at,
                                     settings.clock_lag_alert_s, settings.alert_clear_hold_s)
        entries[m.station_id] = entry
        log.feed(found, m.deliver_at)
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
    matched_kinds: list[set[Any]] = []
    for a in alarms:
        kinds = {i.kind for i in incidents if _matches(a, i, tolerance)} & TARGETS.get(family(a.rule), set())
        matched_kinds.append(kinds)
    per_kind: dict[str, Any] = {}
    for kind in KINDS:
        these = [i for i in incidents if i.kind == kind]
        if not these:
            continue
        targeted = [(a, k) for a, k in zip(alarms, matched_kinds, strict=False) if kind in TARGETS.get(family(a.rule), set())]
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
    for a, k in zip(alarms, matched_kinds, strict=False):
        entry = per_rule[family(a.rule)]
        entry["alarms"] += 1
        entry["matched"] += int(bool(k))
    for entry in per_rule.values():
        entry["precision"] = round(entry["matched"] / entry["alarms"], 3)
    return {"per_kind": per_kind, "per_rule": dict(sorted(per_rule.items())), "alarms": len(alarms)}


def simulator_figures(days: float, seed: int, per_day: float, tick_s: float, tolerance_min: float,
                      warmup_days: float = 1.0) -> dict[str, Any]:
    """Scores over `days` from a Tuesday, after `warmup_days` of normal operation the detectors learn from.

    A worker has history when an incident comes; the warm-up gives it some (the drift detector learns a
    day's profile). Incidents fall only in the scored days, and alarms raised during the warm-up are
    left out, for quantrac and the baseline alike (whose static z-score learns from the warm-up day).
    """
    s = get_settings()
    stations = load_registry(s.registry_file, s.limits_dir)
    start = datetime(2026, 11, 3, tzinfo=timezone.utc)  # a Tuesday, after a Monday of warm-up
    begin = start - timedelta(days=warmup_days)
    duration = timedelta(days=days)
    played = with_clock_faults(random_incidents(stations, start, duration, seed, per_station_per_day=per_day),
                               stations, start, duration, seed, per_day / 4)
    messages = delivery_order(generate(stations, begin, duration + (start - begin), seed, incidents=played))
    with tempfile.TemporaryDirectory() as tmp:  # scored from the ground-truth log, as `quantrac simulate` writes it
        log = Path(tmp) / "ground-truth.jsonl"
        write_ground_truth(log, played, stations)
        incidents = [incident_from_truth(json.loads(line)) for line in log.read_text().splitlines()]
    tolerance = timedelta(minutes=tolerance_min)
    ours, run = run_quantrac(stations, messages, timedelta(seconds=tick_s), s.offline_grace_s)
    naive, naive_run = run_baseline(stations, messages, s.offline_grace_s)
    ours, naive = ([a for a in alarms if a.at >= start] for alarms in (ours, naive))
    return {
        "stations": len(stations), "days": days, "warmup_days": warmup_days, "scored_from": start.isoformat(), "seed": seed,
        "messages": len(messages), "incidents": len(incidents),
        "incident_kinds": {k: sum(1 for i in incidents if i.kind == k) for k in KINDS},
        "tolerance_min": tolerance_min, "liveness_tick_s": tick_s, "offline_grace_s": s.offline_grace_s,
        "quantrac": {**score(ours, incidents, tolerance), "run": run},
        "baseline": {**score(naive, incidents, tolerance), "run": naive_run,
                     "what": "instantaneous limit + static |z|>4 from each series' first day + silence seen at the next message"},
    }


_GECCO_IN_SHARED = Path("data/gecco2018/gecco2018_train.csv")
_GECCO_CACHE = Path.home() / ".cache" / "quantrac" / "gecco2018" / "gecco2018_train.csv"


def find_gecco_data() -> Path:
    """Where the GECCO 2018 training CSV is: QUANTRAC_GECCO_DATA, else the shared folder beside the
    repository, one of its parents or the checkout it was cloned from (`quantrac.shared_folder`), else the copy a
    previous run kept in ~/.cache/quantrac (as the TimescaleDB build is kept, so a fresh clone
    elsewhere finds it). The data set is not in this repository: it is GPL-3.0, from the data
    strategy's shared folder. Returns the first candidate when none exists, for the error message."""
    if os.environ.get("QUANTRAC_GECCO_DATA"):
        return Path(os.environ["QUANTRAC_GECCO_DATA"])
    shared = find_shared(_GECCO_IN_SHARED)
    if shared is None:
        return _GECCO_CACHE if _GECCO_CACHE.is_file() else shared_candidates(_GECCO_IN_SHARED)[0]
    if not _GECCO_CACHE.is_file() or _GECCO_CACHE.stat().st_size != shared.stat().st_size:
        _GECCO_CACHE.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shared, _GECCO_CACHE)
    return shared


GECCO_DATA = find_gecco_data()
"""The labelled data set (`find_gecco_data`)."""
GECCO_COLUMNS = ("Tp", "Cl", "pH", "Redox", "Leit", "Trueb", "Cl_2", "Fm", "Fm_2")
GECCO_SPLIT = datetime(2016, 9, 21, tzinfo=timezone.utc)
"""Tuning uses the rows before this instant (29 of the 51 events), figures are reported on the rows from it (22 events)."""
GECCO_RESOLUTION = {"Tp": 0.1, "Cl": 0.01, "pH": 0.01, "Redox": 1.0, "Leit": 1.0, "Trueb": 0.001, "Cl_2": 0.001,
                    "Fm": 1.0, "Fm_2": 1.0}
"""Smallest step of each sensor in the data: the detectors' scale floor and the baseline's."""
Z_GRID = (3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 15.0, 20.0)
MINUTES_PER_DAY = 1440


@dataclass(frozen=True)
class Gecco:
    times: list[datetime]
    data: np.ndarray      # (rows, 9), NaN = missing
    y: np.ndarray         # EVENT labels
    split: int            # first held-out row

    def part(self, which: str) -> slice:
        return slice(0, self.split) if which == "train" else slice(self.split, len(self.y))


def gecco_load(path: Path = GECCO_DATA) -> Gecco:
    """The GECCO 2018 training CSV: times, values and labels, and the first row at or after `GECCO_SPLIT`."""
    times: list[datetime] = []
    values: list[list[float]] = []
    labels: list[bool] = []
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            times.append(datetime.fromisoformat(row["Time"].replace("Z", "+00:00")))
            values.append([float(row[c]) if row[c] else np.nan for c in GECCO_COLUMNS])
            labels.append(row["EVENT"] == "TRUE")
    split = next(i for i, t in enumerate(times) if t >= GECCO_SPLIT)
    return Gecco(times, np.array(values, dtype=np.float64), np.array(labels, dtype=bool), split)


def gecco_flags(channel: dict[str, Any], g: Gecco, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Stream one channel over rows [start, stop), one row at a time: each flag uses only the rows up to its own."""
    det = build(channel)
    stop = len(g.y) if stop is None else stop
    idx = [GECCO_COLUMNS.index(c) for c in channel["columns"]]
    flags = np.zeros(len(g.y), dtype=bool)
    times = g.times
    if det.input_kind == "vector":
        block = g.data[:, idx]
        for i in range(start, stop):
            flags[i] = det.update(block[i], times[i]).is_anomaly
    else:
        col = g.data[:, idx[0]].tolist()
        update = det.update
        for i in range(start, stop):
            x = col[i]
            if x == x:
                flags[i] = update(x, times[i]).is_anomaly
    return flags


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs of True as half-open (start, end) index pairs."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], mask.astype(np.int8), [0]))))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=False))


def gecco_metrics(y: np.ndarray, flags: np.ndarray) -> dict[str, Any]:
    """The challenge's point-wise precision/recall/F1 of the EVENT flag, and event-wise figures (one row = one minute).

    An event is a maximal run of TRUE; an alarm a maximal run of flags. Event recall: events with a
    flag inside; alarm precision: alarms overlapping an event; delay: minutes from an event's start
    to its first flag; false alarms per day of event-free time.
    """
    tp = int(np.sum(flags & y))
    fp = int(np.sum(flags & ~y))
    fn = int(np.sum(~flags & y))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    events = runs(y)
    alarms = runs(flags)
    delays = [int(hit[0]) for s, e in events if (hit := np.flatnonzero(flags[s:e])).size]
    true_alarms = sum(bool(y[s:e].any()) for s, e in alarms)
    event_free_days = float(np.sum(~y)) / MINUTES_PER_DAY
    return {
        "precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4),
        "event_recall": round(len(delays) / len(events), 4) if events else None,
        "events_caught": f"{len(delays)}/{len(events)}",
        "alarm_precision": round(true_alarms / len(alarms), 4) if alarms else None,
        "alarms": len(alarms),
        "mean_delay_min": round(float(np.mean(delays)), 2) if delays else None,
        "false_alarms_per_day": round((len(alarms) - true_alarms) / event_free_days, 3) if event_free_days else None,
        "flagged_rows": int(flags.sum()),
    }


def gecco_zscore(g: Gecco, columns: list[str], z: float, reference_rows: int = MINUTES_PER_DAY) -> np.ndarray:
    """Naive baseline: |x - mean| / std > z on any column, mean and std frozen from the file's first day."""
    idx = [GECCO_COLUMNS.index(c) for c in columns]
    ref = g.data[:reference_rows, idx]
    std = np.nanstd(ref, axis=0) + np.array([GECCO_RESOLUTION[c] for c in columns])
    score = np.abs(g.data[:, idx] - np.nanmean(ref, axis=0)) / std
    score = np.where(np.isnan(score), 0.0, score).max(axis=1)
    score[:reference_rows] = 0.0
    return score > z


def gecco_score(channels: list[dict[str, Any]], g: Gecco, part: str, warmup_rows: int = MINUTES_PER_DAY) -> dict[str, Any]:
    """THE scoring of detector channels on GECCO: figures of the union of their flags on `part` ("train" or "test").

    The detectors stream from `warmup_rows` before the part (as a worker running before it would
    have), never past its end. The tuner (`bench/tune_gecco.py`) and this benchmark both use it.
    """
    rows = g.part(part)
    start = max(0, rows.start - warmup_rows)
    combined = np.zeros(len(g.y), dtype=bool)
    per_channel: dict[str, Any] = {}
    for channel in channels:
        flags = gecco_flags(channel, g, start, rows.stop)
        combined |= flags
        per_channel[f"{channel['detector']}:{'+'.join(channel['columns'])}"] = gecco_metrics(g.y[rows], flags[rows])
    return {**gecco_metrics(g.y[rows], combined[rows]), "per_channel": per_channel}


def gecco_figures(path: Path, preset: str = "drinking_water") -> dict[str, Any]:
    """The preset's channels and the z-score baseline on the held-out part; both tuned on the training part only."""
    started = time.perf_counter()
    g = gecco_load(path)
    channels = load_preset(preset)["channels"]
    ours = gecco_score(channels, g, "test")
    train, test = g.part("train"), g.part("test")
    sets = {tuple(sorted(ch["columns"], key=GECCO_COLUMNS.index)) for ch in channels}
    sets.add(tuple(sorted({c for ch in channels for c in ch["columns"]}, key=GECCO_COLUMNS.index)))
    train_f1 = {(cols, z): gecco_metrics(g.y[train], gecco_zscore(g, list(cols), z)[train])["f1"]
                for cols in sorted(sets) for z in Z_GRID}
    best, z = max(train_f1, key=lambda k: (train_f1[k], -len(k[0]), k))
    columns = list(best)
    return {
        "data": path.name, "rows": len(g.y), "split_at": GECCO_SPLIT.isoformat(),
        "train": {"rows": train.stop, "events": len(runs(g.y[train]))},
        "test": {"rows": len(g.y) - test.start, "events": len(runs(g.y[test])), "from": g.times[test.start].isoformat()},
        "preset": f"quantrac/data/presets/{preset}.json",
        "detectors": ours,
        "baseline": {"what": "static |z| > threshold on the columns of one of the preset's channels (or all of them), "
                             "mean/std of the first day; columns and threshold picked on the training part",
                     "z_threshold": z, "columns": columns,
                     **gecco_metrics(g.y[test], gecco_zscore(g, columns, z)[test]),
                     "train_f1_by_columns_and_z": {f"{'+'.join(c)} z{z_}": v for (c, z_), v in train_f1.items()}},
        "seconds": round(time.perf_counter() - started, 1),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--per-day", type=float, default=2.0, help="incidents per station per day")
    parser.add_argument("--tick", type=float, default=10.0, help="liveness timer interval (simulated seconds)")
    parser.add_argument("--tolerance", type=float, default=30.0, help="minutes after an incident an alarm still counts")
    parser.add_argument("--warmup-days", type=float, default=1.0, help="days of normal operation before the scored days")
    parser.add_argument("--gecco-data", type=Path, default=GECCO_DATA, help="the GECCO 2018 training CSV")
    parser.add_argument("--no-gecco", action="store_true")
    parser.add_argument("--quiet-rates", default="300:7d,60:2d,10:12h,1:2h",
                        help="alert budget on normal data: interval_s:span pairs (bench/quiet.py); empty to skip")
    args = parser.parse_args(argv)
    if not args.no_gecco and not args.gecco_data.is_file():
        parser.error(f"the GECCO 2018 training CSV is not at {args.gecco_data}; it comes with the shared folder beside the "
                     "repository (shared/data/gecco2018/): pass --gecco-data PATH or set QUANTRAC_GECCO_DATA, or "
                     "--no-gecco to score the simulator only")
    started = time.perf_counter()
    result: dict[str, Any] = {"simulator": simulator_figures(args.days, args.seed, args.per_day, args.tick, args.tolerance, args.warmup_days)}
    if not args.no_gecco:
        result["gecco2018"] = gecco_figures(args.gecco_data)
    if args.quiet_rates:
        from bench.quiet import quiet_figures
        result["quiet"] = quiet_figures(args.quiet_rates, args.seed)
    from bench.stress import stress_figures
    result["stress"] = stress_figures(args.seed)
    result["seconds"] = round(time.perf_counter() - started, 1)
    from bench.common import write_result
    write_result("detection", json.loads(json.dumps(result, default=str)))
    return result


if __name__ == "__main__":
    main()
