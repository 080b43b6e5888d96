"""`quantrac detect`: a CSV backtested through the worker's rules and detectors, without Kafka or PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from bench.detection import AlarmLog
from ingest.import_sources import read_csv
from processors.backtest import backtest, backtest_csv, readings_of
from processors.detection import DetectionConfig, detect
from quantrac.registry import load_registry
from quantrac.settings import Settings

T0 = datetime(2025, 3, 1, tzinfo=timezone.utc)  # older than the live retention: a backtest has no age limit
SETTINGS = Settings()
STATION = load_registry(SETTINGS.registry_file, SETTINGS.limits_dir)["HD-PHUCDIEN-WW01"]


def write_wide(path: Path, days: int = 2, spike_at: int | None = 400, gap_after: int | None = None) -> Path:
    rng = np.random.default_rng(0)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["time", "COD", "TSS", "pH"])
        for i in range(days * 288):
            ts = T0 + timedelta(minutes=5 * i) + (timedelta(days=8) if gap_after is not None and i > gap_after else timedelta(0))
            cod = 40 + rng.normal(0, 1.5) + (45 if i == spike_at else 0)
            w.writerow([ts.isoformat(), f"{cod:.1f}", f"{30 + rng.normal(0, 1):.1f}", f"{7 + rng.normal(0, 0.03):.2f}"])
    return path


def test_the_cli_writes_the_alarms_of_a_wide_csv_as_csv_and_json(tmp_path: Path) -> None:
    data = write_wide(tmp_path / "history.csv")
    run = [sys.executable, "-m", "cli", "detect", str(data), "--station", STATION.id]
    as_csv = subprocess.run(run, capture_output=True, text=True, check=True).stdout
    rows = list(csv.DictReader(io.StringIO(as_csv)))
    spikes = [r for r in rows if r["rule"] == "anomaly_spike"]
    assert [(r["parameter"], r["time"]) for r in spikes] == [("COD", (T0 + timedelta(minutes=5 * 400)).isoformat())]
    assert 80 < float(spikes[0]["value"]) < 90 and float(spikes[0]["score"]) > 8  # the reading's value, its score apart
    as_json = json.loads(subprocess.run(run + ["--output", "json"], capture_output=True, text=True, check=True).stdout)
    assert [(a["time"], a["rule"], a["parameter"]) for a in as_json] == [(r["time"], r["rule"], r["parameter"]) for r in rows]


def test_the_cli_refuses_an_unknown_station_and_says_what_to_do(tmp_path: Path) -> None:
    data = write_wide(tmp_path / "history.csv", days=1)
    done = subprocess.run([sys.executable, "-m", "cli", "detect", str(data), "--station", "NOPE"],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "--station-file" in done.stderr


def test_the_cli_runs_the_stations_preset_or_the_one_named(tmp_path: Path) -> None:
    data = write_wide(tmp_path / "history.csv")
    run = [sys.executable, "-m", "cli", "detect", str(data), "--station", STATION.id, "--output", "json"]
    named = json.loads(subprocess.run(run + ["--preset", "drinking_water"], capture_output=True, text=True, check=True).stdout)
    assert not [a for a in named if a["rule"].startswith("anomaly_")]  # GECCO's channels name no parameter of this station
    done = subprocess.run(run + ["--preset", "tap_water"], capture_output=True, text=True)
    assert done.returncode == 2 and f"station {STATION.id}: detector_preset 'tap_water' is not a preset" in done.stderr


def test_the_backtest_opens_the_alarms_the_worker_step_opens(tmp_path: Path) -> None:
    """The same readings through `detect` message by message, into the bench's alarm log, give the same alarms."""
    data = write_wide(tmp_path / "history.csv", days=3, gap_after=500)
    config = DetectionConfig.from_settings(SETTINGS)
    ours = backtest_csv(data, STATION, config, "wide", timezone.utc)
    log, state = AlarmLog(), None
    for readings in readings_of(read_csv(data, "wide", timezone.utc), STATION):
        out = detect(state, readings, STATION, config)
        state = out.state
        log.feed(out.conditions, readings[0].ts)
    assert [(a.time, a.parameter, a.rule) for a in ours] == [(a.ts.isoformat(), a.parameter, a.rule) for a in log.alarms]
    assert any(a.rule == "anomaly_spike" for a in ours)


def test_an_empty_stream_has_no_alarm() -> None:
    assert backtest([], STATION, DetectionConfig()) == []
