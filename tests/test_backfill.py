"""Backfill as an analyst does it (issue 19): an archive older than the live retention kept by the
station's own retention, the import's outcome by reason, a re-import after fixing the registry.

Through the running pipeline (session bridge and worker) with real Kafka and PostgreSQL; the
imports run as the `quantrac import` command."""

from __future__ import annotations

import csv
import subprocess
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg
import pytest

from processors.partitions import apply_retention, refresh_aggregates
from quantrac.domain import Reading
from quantrac.settings import Settings
from tests.test_import import HCM, import_cmd
from tests.test_store_rollups import store_readings as store
from tests.utils.poll import wait_for
from tests.utils.processes import stored_count

pytestmark = pytest.mark.integration

GECCO_LIKE = {  # the GECCO 2018 drinking-water columns: symbol → (unit, range, typical value)
    "Tp": ("°C", (0, 40), 8.5), "Cl": ("mg/L", (0, 5), 0.17), "pH": ("-", (0, 14), 8.3), "Redox": ("mV", (-1000, 1000), 750.0),
    "Leit": ("µS/cm", (0, 5000), 210.0), "Trueb": ("NTU", (0, 100), 0.012), "Cl_2": ("mg/L", (0, 5), 0.12),
    "Fm": ("m3/h", (0, 10000), 1600.0), "Fm_2": ("m3/h", (0, 10000), 700.0)}


def archive_station(retention_days: int | None, parameters: dict[str, Any] = GECCO_LIKE) -> dict[str, Any]:
    """A drinking-water station with the archive's parameters (`pH` keeps its catalogue unit)."""
    return {"id": f"A-{uuid.uuid4().hex[:8]}", "name": "Archive intake", "zone": "Test basin", "facility": "Water works",
            "kind": "drinking_water", "expected_interval_s": 60, "retention_days": retention_days,
            "parameters": {s: {"symbol": s, "unit": u, "range_min": r[0], "range_max": r[1], "detectors": []}
                           for s, (u, r, _) in parameters.items()}}


def write_wide_archive(path: Path, start: datetime, minutes: int, gaps: list[range], blank: dict[str, int],
                       bad_rows: dict[int, str]) -> int:
    """A wide one-minute CSV (local times without offset) with gaps (missing minutes), empty cells
    (parameter → every n-th row), and `bad_rows` (minute → a broken time or cell). Returns the readings in it."""
    readings = 0
    with path.open("w", newline="", encoding="utf-8") as handle:
        w = csv.writer(handle)
        w.writerow(["Time", *GECCO_LIKE, "EVENT"])
        for i in range(minutes):
            if any(i in gap for gap in gaps):
                continue
            local = (start + timedelta(minutes=i)).astimezone(HCM).replace(tzinfo=None).isoformat(sep=" ")
            cells = []
            for k, (symbol, (_, _, typical)) in enumerate(GECCO_LIKE.items()):
                empty = symbol in blank and i % blank[symbol] == 0
                cells.append("" if empty else f"{typical * (1 + 0.001 * ((i + k) % 7)):.4f}")
            if bad_rows.get(i) == "time":
                local = "31/01/2017 10:00"
            elif bad_rows.get(i) == "value":
                cells[3] = "n/a"
            readings += 0 if bad_rows.get(i) == "time" else sum(1 for c in cells if c and c != "n/a")
            w.writerow([local, *cells, "FALSE"])
    return readings


def refreshed(db: psycopg.Connection) -> bool:
    """Refresh TimescaleDB's aggregates as the maintenance pass does (a no-op on PostgreSQL); False while the
    worker's own refresh (at its start) holds them, so the caller polls."""
    try:
        refresh_aggregates(db)
    except psycopg.errors.LockNotAvailable:
        return False
    return True


def last_log(db: psycopg.Connection, sid: str) -> dict[str, Any]:
    row = db.execute("SELECT rows_read, readings_sent, rejected, rows_rejected, rows_retried, outcomes, dry_run "
                     "FROM import_log WHERE station_id = %s ORDER BY id DESC LIMIT 1", (sid,)).fetchone()
    assert row is not None
    return dict(zip(("rows_read", "readings_sent", "rejected", "rows_rejected", "rows_retried", "outcomes", "dry_run"), row, strict=False))


def test_an_archive_older_than_the_retention_is_stored_and_kept_by_its_stations_own_retention(
        api: Any, pipeline: Any, db: psycopg.Connection, stack: Settings, tmp_path: Path) -> None:
    body = archive_station(retention_days=(datetime.now(timezone.utc) - datetime(2016, 1, 1, tzinfo=timezone.utc)).days)
    sid = body["id"]
    assert api.post("/api/v1/stations", json=body).status_code == 201
    start = datetime(2017, 1, 10, tzinfo=timezone.utc)
    assert (datetime.now(timezone.utc) - start).days > stack.retention_days  # older than the default retention
    path = tmp_path / "archive.csv"
    expected = write_wide_archive(path, start, 1500, gaps=[range(300, 700), range(1000, 1100)],
                                  blank={"Cl": 7, "Trueb": 11}, bad_rows={5: "value", 9: "value", 12: "time"})
    control = archive_station(retention_days=None, parameters={"Cl": GECCO_LIKE["Cl"]})
    assert api.post("/api/v1/stations", json=control).status_code == 201
    try:
        dry = subprocess.run(import_cmd(sid, path, "--dry-run", "--skip-column", "event"), capture_output=True, text=True, timeout=300)
        assert dry.returncode == 0 and f"{expected} readings valid (dry run, nothing sent)" in dry.stdout, dry.stdout + dry.stderr
        assert db.execute("SELECT count(*) FROM import_progress WHERE station_id = %s", (sid,)).fetchone()[0] == 0

        done = subprocess.run(import_cmd(sid, path, "--skip-column", "EVENT"), capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"1000 rows read (0 already confirmed), {expected} readings sent, 3 rejected" in done.stdout, done.stdout
        assert "rejected bad_value: 2; fix:" in done.stdout and "rejected bad_time: 1; fix: write the time as ISO 8601" in done.stdout
        assert "too_old" not in done.stdout
        wait_for(lambda: stored_count(db, sid) >= expected, timeout=300, interval=1.0, what=f"{expected} archive readings stored")
        logged = last_log(db, sid)
        assert (logged["rows_read"], logged["readings_sent"], logged["rejected"], logged["rows_rejected"]) == (1000, expected, 3, 3)
        assert {r: o["count"] for r, o in logged["outcomes"].items()} == {"bad_value": 2, "bad_time": 1}
        assert all(o["examples"] and o["fix"] for o in logged["outcomes"].values())
        assert "Redox" in logged["outcomes"]["bad_value"]["examples"][0]

        # An old reading of a station on the default retention, stored directly, in the same day partitions.
        store(stack, [Reading(station_id=control["id"], parameter="Cl", value=0.2, unit="mg/L", ts=start + timedelta(minutes=3))])
        apply_retention(db, stack.retention_days)  # the worker's retention pass (its maintenance timer runs it hourly)
        wait_for(lambda: refreshed(db), timeout=240, interval=1.0, what="the continuous aggregates refreshed (TimescaleDB)")
        assert stored_count(db, control["id"]) == 0  # the pass ran, and the default retention applies to others
        count, first, last = db.execute("SELECT count(*), min(ts), max(ts) FROM readings WHERE station_id = %s", (sid,)).fetchone()
        assert count == expected and first == start and last == start + timedelta(minutes=1499)
        hours = db.execute("SELECT sum(count) FROM readings_1h WHERE station_id = %s", (sid,)).fetchone()[0]
        assert hours == expected  # the rollups of the archive survive too
        gap = db.execute("SELECT count(*) FROM readings WHERE station_id = %s AND ts >= %s AND ts < %s",
                         (sid, start + timedelta(minutes=300), start + timedelta(minutes=700))).fetchone()[0]
        assert gap == 0
    finally:  # a long own retention would hold other tests' old partitions in the shared database, and
        # its 2017 rows would be left to the next retention pass (or TimescaleDB job) of a later session
        db.execute("UPDATE stations SET spec = spec - 'retention_days' WHERE id = %s", (sid,))
        db.execute("DELETE FROM readings WHERE station_id = ANY(%s) AND ts < %s", ([sid, control["id"]], start + timedelta(days=2)))


def test_a_file_refused_whole_is_sent_again_after_the_registry_is_fixed(
        api: Any, pipeline: Any, db: psycopg.Connection, tmp_path: Path) -> None:
    body = archive_station(retention_days=None, parameters={"Cl": GECCO_LIKE["Cl"]})
    sid = body["id"]
    assert api.post("/api/v1/stations", json=body).status_code == 201
    path = tmp_path / "turbidity.csv"
    end = datetime.now(timezone.utc) - timedelta(days=3)
    with path.open("w", newline="", encoding="utf-8") as handle:
        w = csv.writer(handle)
        w.writerow(["time", "Trueb"])
        for i in range(300):
            w.writerow([(end - timedelta(minutes=i)).isoformat(), f"{0.01 + i % 5 * 0.001:.3f}"])

    refused = subprocess.run(import_cmd(body["id"], path), capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "300 rows read (0 already confirmed), 0 readings sent, 300 rejected" in refused.stdout
    assert "rejected unknown_parameter: 300; fix: add the parameter to the station" in refused.stdout
    assert "nothing could be sent" in refused.stdout
    logged = last_log(db, sid)
    assert logged["outcomes"]["unknown_parameter"]["count"] == 300 and logged["rows_rejected"] == 300
    assert "Trueb" in logged["outcomes"]["unknown_parameter"]["examples"][0]

    body["parameters"]["Trueb"] = {"symbol": "Trueb", "unit": "NTU", "range_min": 0, "range_max": 100}
    assert api.put(f"/api/v1/stations/{sid}", json=body).status_code == 200

    fixed = subprocess.run(import_cmd(sid, path), capture_output=True, text=True, timeout=120)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "300 rows read (0 already confirmed, 300 rejected earlier read again), 300 readings sent, 0 rejected" in fixed.stdout
    wait_for(lambda: stored_count(db, sid) == 300, timeout=120, interval=0.5, what="every row of the fixed import stored")
    assert db.execute("SELECT count(*) FROM import_rejected_units WHERE station_id = %s", (sid,)).fetchone()[0] == 0

    again = subprocess.run(import_cmd(sid, path), capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "0 rows read (300 already confirmed)" in again.stdout, again.stdout
    assert stored_count(db, sid) == 300
    changed = path.with_name("turbidity-2.csv")
    changed.write_text(path.read_text(encoding="utf-8") + f"{(end + timedelta(minutes=1)).isoformat()},0.02\n", encoding="utf-8")
    more = subprocess.run(import_cmd(sid, changed), capture_output=True, text=True, timeout=120)
    assert more.returncode == 0 and "301 rows read (0 already confirmed)" in more.stdout, more.stdout  # a changed file is new
    wait_for(lambda: stored_count(db, sid) == 301, timeout=120, interval=0.5, what="the changed file's new row")
    assert last_log(db, sid)["outcomes"] == {}
