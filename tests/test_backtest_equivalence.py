"""`quantrac detect` against the worker: the same CSV, imported through the pipeline (`quantrac import` → Kafka →
worker → store, on the session's real services) and backtested, gives the same alarms (time, station, parameter,
rule). One station runs its kind's preset on made-up data with every kind of alarm; one names the drinking-water
preset and is fed the GECCO 2018 held-out part."""

from __future__ import annotations

import csv
import json
import random
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest

from quantrac.db import save_stations
from quantrac.domain import Station
from quantrac.settings import Settings
from tests.test_import import import_cmd
from tests.utils.builders import make_station
from tests.utils.gecco import gecco_station, write_gecco_slice
from tests.utils.poll import wait_for
from tests.utils.processes import stored_count

pytestmark = pytest.mark.integration


def write_incidents_csv(path: Path, start: datetime, rows: int = 1500) -> int:
    """One-minute wide rows of COD, pH and Flow with a spike, an exceedance, a pH ramp, a stuck flow and a 3-h gap."""
    rng = random.Random(18)
    written = 0
    with path.open("w", newline="", encoding="utf-8") as handle:
        w = csv.writer(handle)
        w.writerow(["time", "COD", "pH", "Flow"])
        for i in range(rows):
            if 1100 <= i < 1280:
                continue  # the gap
            cod = 50 + rng.gauss(0, 1.5) + (250 if i == 700 else 0) + (70 if 900 <= i < 940 else 0)
            ph = 7.2 + rng.gauss(0, 0.02) + (min(i - 500, 30) * 0.06 if 500 <= i < 560 else 0)
            flow = 0.0 if 1000 <= i < 1100 else 120 + rng.gauss(0, 3)
            t = (start + timedelta(minutes=i)).isoformat()
            w.writerow([t, f"{cod:.1f}", f"{ph:.2f}", f"{flow:.1f}"])
            written += 3
    return written


def worker_alarms(db: psycopg.Connection, station_id: str) -> list[tuple[str, str, str, str]]:
    rows = db.execute("SELECT first_ts, station_id, parameter, rule FROM alerts WHERE station_id = %s", (station_id,)).fetchall()
    return sorted((ts.astimezone(timezone.utc).isoformat(), sid, p, rule) for ts, sid, p, rule in rows)


def backtest_alarms(station: Station, csv_path: Path, tmp_path: Path) -> list[tuple[str, str, str, str]]:
    entry = tmp_path / f"{station.id}.json"
    entry.write_text(station.model_dump_json(), encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "cli", "detect", str(csv_path), "--station-file", str(entry),
                           "--format", "wide", "--output", "json"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return sorted((datetime.fromisoformat(a["time"]).astimezone(timezone.utc).isoformat(), a["station"], a["parameter"],
                   a["rule"]) for a in json.loads(done.stdout))


def import_and_compare(station: Station, csv_path: Path, readings: int, db: psycopg.Connection,
                       tmp_path: Path) -> list[tuple[str, str, str, str]]:
    save_stations(db, {station.id: station})
    done = subprocess.run(import_cmd(station.id, csv_path), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    # the worker writes a batch's readings and its alerts in one transaction: all stored means all judged
    wait_for(lambda: stored_count(db, station.id) >= readings, timeout=120, interval=0.5, what=f"{station.id}'s import stored")
    pipeline_side = worker_alarms(db, station.id)
    assert pipeline_side == backtest_alarms(station, csv_path, tmp_path)
    return pipeline_side


@pytest.mark.timeout(300)
def test_the_pipeline_and_quantrac_detect_raise_the_same_alarms_on_the_same_csv(
        pipeline: dict, stack: Settings, db: psycopg.Connection, tmp_path: Path) -> None:
    base = make_station(expected_interval_s=60)
    ph = base.parameters["pH"].model_copy(update={"max_rate_per_min": 0.2, "resolution": 0.01})
    station = base.model_copy(update={"history_only": True, "parameters": {**base.parameters, "pH": ph}})
    station = Station.model_validate(station.model_dump())
    path = tmp_path / "incidents.csv"
    readings = write_incidents_csv(path, datetime.now(timezone.utc).replace(second=0, microsecond=0) - timedelta(days=2))
    alarms = import_and_compare(station, path, readings, db, tmp_path)
    rules = {rule for *_, rule in alarms}
    assert {"exceedance", "anomaly_spike", "rate_of_change"} <= rules, alarms


@pytest.mark.timeout(300)
def test_a_station_naming_the_drinking_water_preset_fed_the_gecco_held_out_part_gets_the_same_alarms_both_ways(
        pipeline: dict, stack: Settings, db: psycopg.Connection, tmp_path: Path) -> None:
    from bench.detection import GECCO_SPLIT, gecco_load
    from tests.utils.gecco import gecco_data
    g = gecco_load(gecco_data())
    start = g.part("test").start + 400
    station = gecco_station(f"GECCO-{uuid.uuid4().hex[:8]}")
    path = tmp_path / "gecco.csv"
    readings = write_gecco_slice(path, start, start + 1700)
    try:
        alarms = import_and_compare(station, path, readings, db, tmp_path)
    finally:  # a long own retention would hold other tests' old partitions (and policies) in the shared database
        db.execute("UPDATE stations SET spec = spec - 'retention_days' WHERE id = %s", (station.id,))
        db.execute("DELETE FROM readings WHERE station_id = %s", (station.id,))
    anomalies = [a for a in alarms if a[3].startswith("anomaly_")]
    assert anomalies and all(datetime.fromisoformat(a[0]) >= GECCO_SPLIT for a in anomalies), alarms
