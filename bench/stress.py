"""Synthetic stress series: only the injected events are true; alarms per event and false alarms per series-week.

Each series is a day of warm-up and then a scored week of one-minute readings of one parameter through
the worker's detection step (`processors.backtest`, the `quantrac detect` path), with the worker's
default settings and no configured resolution (it is learned). Event minutes below count from the
start of the scored week; the warm-up day holds no event, and its alarms are reported apart, as the
incident run leaves out its warm-up day (a new station's first day, where a detector has not yet
seen how heavy its series' tail is):

- `quantised_ph`: N(7, 0.004) rounded to 0.01; three spikes of +0.5;
- `counts`: Poisson(0.3); three bursts of +12;
- `flow_nights`: a flow at 40 +- 3 m3/h by day and exactly 0 from 22:00 to 06:00; two stuck stretches at
  41.3 for two hours by day;
- `level_shifts`: 60 +- 2 with three lasting shifts of +25;
- `gaps`: 60 +- 2 with three one-day gaps (not events: no alarm may bridge them) and two spikes of +30;
- `heavy_tails`: 60 + 2 t(3); two spikes of +60, about the size of the noise's own weekly extreme;
- `heavy_tail_outliers`: the same noise; two spikes of +150, which it reaches about once in twenty weeks.

An alarm (anomaly or rate of change) counts for an event when it opens within the event or 30 min after
it; any other alarm in the scored week is false.

For the single-reading spikes, `separable` counts the events farther from the series' centre than every
noise reading of their week: what a threshold set with hindsight would catch with no false alarm. On
heavy tails the injected +60 is about the size of the noise's own weekly extreme, so about half the
spikes hide in the noise, and no detector catches those without as many false alarms.

For the heavy-tailed kinds, `oracle_caught_share` is what a detector that knew the noise's law exactly
could catch at the false alarm rate this one had: a fixed threshold that 2 t(3) noise crosses that
often, and the share of spikes (noise included) above it. At +60 it is near 0 for any rate within
the budget of one false alarm a week (it is 0.94 at one a week on average, whose worst weeks have 3).

Each kind is played for `SEEDS` weeks (seeds 7 on): figures are totals of events, the most alarms of
one event, and the mean false alarms per series-week with the worst week.

Usage::

    python bench/stress.py
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from processors.backtest import backtest  # noqa: E402
from processors.detection import DetectionConfig  # noqa: E402
from quantrac.domain import ParameterSpec, Reading, Station, StationKind  # noqa: E402
from quantrac.settings import get_settings  # noqa: E402

T0 = datetime(2026, 11, 2, tzinfo=timezone.utc)
WARMUP = 1440
MINUTES = WARMUP + 7 * 1440
TOLERANCE = timedelta(minutes=30)


@dataclass(frozen=True)
class Series:
    values: np.ndarray          # NaN: no reading (a gap)
    events: list[tuple[int, int]]  # [start, end) minute indices of the injected events
    separable: int | None = None  # spikes farther from the centre than every noise reading of the scored week
    spike: float | None = None  # size of the injected spikes on heavy-tailed noise


def _spikes(x: np.ndarray, at: list[int], size: float) -> list[tuple[int, int]]:
    for i in at:
        x[WARMUP + i] += size
    return [(WARMUP + i, WARMUP + i + 1) for i in at]


def _separable(x: np.ndarray, events: list[tuple[int, int]], centre: float) -> int:
    deviation = np.abs(x - centre)
    noise = np.delete(deviation[WARMUP:], [s - WARMUP for s, _ in events])
    noise_max = float(np.nanmax(noise))
    return sum(1 for s, _ in events if deviation[s] > noise_max)


def quantised_ph(rng: np.random.Generator) -> Series:
    x = 7.0 + rng.normal(0, 0.004, MINUTES)
    events = _spikes(x, [2000, 5000, 8000], 0.5)
    return Series(np.round(x, 2), events)


def counts(rng: np.random.Generator) -> Series:
    x = rng.poisson(0.3, MINUTES).astype(float)
    return Series(x, _spikes(x, [2500, 5500, 8500], 12.0))


def flow_nights(rng: np.random.Generator) -> Series:
    hour = (np.arange(MINUTES) % 1440) / 60
    x = np.where((hour >= 22) | (hour < 6), 0.0, np.round(40 + rng.normal(0, 3, MINUTES), 1))
    events = []
    for day in (3, 5):
        start = WARMUP + day * 1440 + 10 * 60
        x[start:start + 120] = 41.3
        events.append((start, start + 120))
    return Series(x, events)


def level_shifts(rng: np.random.Generator) -> Series:
    x = 60 + rng.normal(0, 2, MINUTES)
    events = []
    for start in (WARMUP + 2500, WARMUP + 5000, WARMUP + 7500):
        x[start:] += 25.0
        events.append((start, start + 1))
    return Series(np.round(x, 1), events)


def gaps(rng: np.random.Generator) -> Series:
    x = 60 + rng.normal(0, 2, MINUTES)
    events = _spikes(x, [3500, 7000], 30.0)
    for start in (WARMUP + 1600, WARMUP + 4300, WARMUP + 8300):
        x[start:start + 1440] = np.nan
    return Series(np.round(x, 1), events)


HEAVY_NOISE_SCALE = 2.0
"""Heavy-tailed noise is ``HEAVY_NOISE_SCALE`` times Student's t with 3 degrees of freedom."""


def _heavy(rng: np.random.Generator, size: float) -> Series:
    x = 60 + HEAVY_NOISE_SCALE * rng.standard_t(3, MINUTES)
    events = _spikes(x, [3000, 7000], size)
    x = np.round(x, 2)
    return Series(x, events, _separable(x, events, 60.0), size)


def heavy_tails(rng: np.random.Generator) -> Series:
    return _heavy(rng, 60.0)


def heavy_tail_outliers(rng: np.random.Generator) -> Series:
    return _heavy(rng, 150.0)


def oracle_caught_share(spike: float, false_per_week: float, draws: int = 4_000_000) -> float:
    """The share of +`spike` spikes on heavy-tailed noise that a fixed threshold, crossed by the noise
    `false_per_week` times a week of one-minute readings, would catch (Monte Carlo from a fixed seed)."""
    rng = np.random.default_rng(0)
    noise = np.abs(HEAVY_NOISE_SCALE * rng.standard_t(3, draws))
    bar = float(np.quantile(noise, 1.0 - max(false_per_week, 0.5 / 7) / (7 * 1440)))
    return round(float(np.mean(spike + HEAVY_NOISE_SCALE * rng.standard_t(3, draws // 4) > bar)), 3)


KINDS: dict[str, Callable[[np.random.Generator], Series]] = {
    f.__name__: f for f in (quantised_ph, counts, flow_nights, level_shifts, gaps, heavy_tails, heavy_tail_outliers)}


def score_series(name: str, series: Series, config: DetectionConfig) -> dict[str, Any]:
    spec = ParameterSpec(symbol="X", unit="u", max_rate_per_min=None)
    station = Station(id=f"STRESS-{name}", name=name, zone="Z", facility="F", kind=StationKind.WASTEWATER,
                      expected_interval_s=60, parameters={"X": spec})
    messages = [[Reading(station_id=station.id, parameter="X", value=float(v), unit="u", ts=T0 + timedelta(minutes=i))]
                for i, v in enumerate(series.values) if np.isfinite(v)]
    alarms = [a for a in backtest(messages, station, config) if a.rule.startswith("anomaly_") or a.rule == "rate_of_change"]
    per_event = [0] * len(series.events)
    false = warmup = 0
    for a in alarms:
        minute = (datetime.fromisoformat(a.time) - T0) / timedelta(minutes=1)
        hit = [k for k, (s, e) in enumerate(series.events) if s <= minute < e + TOLERANCE / timedelta(minutes=1)]
        if hit:
            per_event[hit[0]] += 1
        elif minute < WARMUP:
            warmup += 1
        else:
            false += 1
    return {"events": len(series.events), "caught": sum(1 for n in per_event if n), "most_alarms_per_event": max(per_event, default=0),
            "false_alarms_per_week": false, "warmup_day_alarms": warmup, "separable": series.separable, "spike": series.spike,
            "alarms_by_rule": {r: sum(1 for a in alarms if a.rule == r) for r in sorted({a.rule for a in alarms})}}


SEEDS = 16
"""Weeks played per kind of series, each from its own seed: one week's false alarms of a heavy-tailed
series depend on a few extreme draws, so a single seed says little (at seed 7 alone, heavy tails caught
2/2 events with 2 false alarms; over seeds 7-14 it caught 6/16 with 4 a week, before the worker read its
tail at one score in a hundred). Sixteen weeks make a worst week of 1 a claim about the detector, not
about eight lucky draws."""


def stress_figures(seed: int = 7, weeks: int = SEEDS) -> dict[str, Any]:
    """Per kind of series, over `weeks` seeded weeks from `seed` on: events caught of all injected, the most
    alarms any one event raised, and false alarms per series-week (mean, and the worst week)."""
    config = DetectionConfig.from_settings(get_settings())
    out: dict[str, Any] = {}
    for name, make in KINDS.items():
        runs = [score_series(name, make(np.random.default_rng(seed + k)), config) for k in range(weeks)]
        false = [r["false_alarms_per_week"] for r in runs]
        out[name] = {"weeks": weeks, "events": sum(r["events"] for r in runs), "caught": sum(r["caught"] for r in runs),
                     "most_alarms_per_event": max(r["most_alarms_per_event"] for r in runs),
                     "false_alarms_per_week": round(float(np.mean(false)), 2), "worst_week_false_alarms": max(false),
                     "warmup_day_alarms": round(float(np.mean([r["warmup_day_alarms"] for r in runs])), 2)}
        if runs[0]["separable"] is not None:
            out[name]["separable"] = sum(r["separable"] for r in runs)
        if runs[0]["spike"] is not None:
            out[name]["oracle_caught_share"] = oracle_caught_share(runs[0]["spike"], float(np.mean(false)))
    return out


if __name__ == "__main__":
    print(json.dumps(stress_figures(), indent=1))
