"""The history API on both store paths, real servers (TimescaleDB: hypertable and continuous aggregates;
native PostgreSQL: day partitions and rollup tables): raw readings with gaps, buckets with missing marks,
`auto`, CSV, compliance, clear errors; and a CSV export of a million rows with bounded memory (on the
default store, TimescaleDB)."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import socket
import subprocess
import sys
import time
from datetime import date, datetime, timedelta, timezone
from typing import Iterator

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient

from quantrac.db import save_stations, series_ids
from quantrac.domain import Reading, Station, Status
from quantrac.settings import Settings
from tests.test_store_rollups import _store
from tests.utils.builders import make_station
from tests.utils.poll import wait_for

pytestmark = pytest.mark.integration

HANOI = timedelta(hours=7)
DAY = date(2026, 11, 18)
DAY_START = datetime(2026, 11, 17, 17, 0, tzinfo=timezone.utc)  # 2026-11-18 00:00 in Hanoi


@pytest.fixture()
def api(store_api: TestClient) -> TestClient:
    """The in-process API over the store path under test: every test below taking it runs on both."""
    return store_api


@pytest.fixture()
def station(store: Settings, store_db: psycopg.Connection) -> Station:
    """A station reporting every 5 minutes over the local day DAY, with a hole from 02:00 to 03:00 local,
    COD over its limit (100) from 10:00 to 12:00 local, and one device-fault reading."""
    s = make_station(cod_limit=100.0, expected_interval_s=300)
    save_stations(store_db, {s.id: s})
    readings = []
    for n in range(288):
        ts = DAY_START + timedelta(minutes=5 * n)
        if DAY_START + timedelta(hours=2) <= ts < DAY_START + timedelta(hours=3):
            continue
        cod = 150.0 if DAY_START + timedelta(hours=10) <= ts < DAY_START + timedelta(hours=12) else 50.0
        status = Status.FAULT if n == 200 else Status.MEASURING
        readings.append(Reading(station_id=s.id, parameter="COD", value=cod, unit="mg/L", ts=ts, status=status))
        readings.append(Reading(station_id=s.id, parameter="pH", value=7.0, unit="-", ts=ts))
    asyncio.run(_store(store.pg_dsn, readings))  # late for TimescaleDB's aggregates, refreshed past this day by other tests
    return s


def get(api: TestClient, station: Station, **params: object) -> dict:
    response = api.get(f"/api/v1/stations/{station.id}/readings", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def test_raw_readings_are_shown_in_hanoi_time_with_their_gaps(api: TestClient, station: Station) -> None:
    body = get(api, station, parameter="COD", bucket="raw", **{"from": DAY_START.isoformat(), "to": (DAY_START + timedelta(hours=6)).isoformat()})
    assert body["bucket"] == "raw" and body["count"] == 72 - 12
    first = datetime.fromisoformat(body["data"][0]["ts"])
    assert first == DAY_START and first.utcoffset() == HANOI
    [gap] = body["gaps"]
    assert gap["parameter"] == "COD"
    assert datetime.fromisoformat(gap["from"]) == DAY_START + timedelta(hours=2, minutes=-5)
    assert datetime.fromisoformat(gap["to"]) == DAY_START + timedelta(hours=3)
    assert datetime.fromisoformat(gap["from"]).utcoffset() == HANOI


def test_hour_buckets_mark_the_missing_hour(api: TestClient, station: Station) -> None:
    body = get(api, station, parameter=["COD", "pH"], bucket="1h",
               **{"from": DAY_START.isoformat(), "to": (DAY_START + timedelta(days=1)).isoformat()})
    assert body["bucket"] == "1h" and body["count"] == 48
    cod = [p for p in body["data"] if p["parameter"] == "COD"]
    assert [p["missing"] for p in cod].count(True) == 1
    hole = next(p for p in cod if p["missing"])
    assert datetime.fromisoformat(hole["bucket"]) == DAY_START + timedelta(hours=2)
    assert (hole["avg"], hole["count"], hole["count_valid"]) == (None, 0, 0)
    assert datetime.fromisoformat(cod[10]["bucket"]).isoformat() == "2026-11-18T10:00:00+07:00"
    assert (cod[10]["avg"], cod[10]["count"]) == (150.0, 12)


def test_day_buckets_are_local_days(api: TestClient, station: Station) -> None:
    body = get(api, station, parameter="COD", bucket="1d",
               **{"from": (DAY_START - timedelta(days=1)).isoformat(), "to": (DAY_START + timedelta(days=2)).isoformat()})
    assert [p["bucket"] for p in body["data"]] == ["2026-11-17T00:00:00+07:00", "2026-11-18T00:00:00+07:00", "2026-11-19T00:00:00+07:00"]
    assert [p["missing"] for p in body["data"]] == [True, False, True]
    assert body["data"][1]["count"] == 276 and body["data"][1]["count_valid"] == 275


@pytest.mark.parametrize(("span", "expected"), [(timedelta(hours=6), "raw"), (timedelta(days=3), "5m"),
                                                 (timedelta(days=30), "1h"), (timedelta(days=120), "1d")])
def test_auto_picks_the_bucket_by_range_length(api: TestClient, station: Station, span: timedelta, expected: str) -> None:
    body = get(api, station, parameter="pH", **{"from": DAY_START.isoformat(), "to": (DAY_START + span).isoformat()})
    assert body["bucket"] == expected


def test_csv_by_format_or_accept_header(api: TestClient, station: Station) -> None:
    params = {"parameter": "COD", "bucket": "raw", "from": DAY_START.isoformat(), "to": (DAY_START + timedelta(hours=1)).isoformat()}
    by_format = api.get(f"/api/v1/stations/{station.id}/readings", params={**params, "format": "csv"})
    by_accept = api.get(f"/api/v1/stations/{station.id}/readings", params=params, headers={"Accept": "text/csv"})
    assert by_format.status_code == by_accept.status_code == 200
    assert by_format.headers["content-type"].startswith("text/csv")
    assert by_format.text == by_accept.text
    rows = list(csv.reader(io.StringIO(by_format.text)))
    assert rows[0] == ["station_id", "parameter", "ts", "value", "unit", "status"]
    assert rows[1] == [station.id, "COD", "2026-11-18T00:00:00+07:00", "50.0", "mg/L", "00"]
    assert len(rows) == 13

    buckets = api.get(f"/api/v1/stations/{station.id}/readings", params={**params, "bucket": "1h", "format": "csv"})
    assert list(csv.reader(io.StringIO(buckets.text)))[1][:4] == ["COD", "2026-11-18T00:00:00+07:00", "50.0", "50.0"]


def test_compliance_counts_hours_over_the_limit_and_completeness(api: TestClient, station: Station) -> None:
    response = api.get(f"/api/v1/stations/{station.id}/compliance", params={"date": DAY.isoformat()})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["timezone"] == "Asia/Ho_Chi_Minh" and body["day_start"] == "2026-11-18T00:00:00+07:00"
    by_parameter = {p["parameter"]: p for p in body["parameters"]}
    cod = by_parameter["COD"]
    assert [h["hour"] for h in cod["hours_over"]] == ["2026-11-18T10:00:00+07:00", "2026-11-18T11:00:00+07:00"]
    assert cod["hours_over_count"] == 2 and cod["hours_over"][0]["limit"] == 100.0
    assert (cod["valid_readings"], cod["expected_readings"]) == (275, 288)
    assert cod["completeness_pct"] == pytest.approx(95.5)
    assert by_parameter["pH"]["hours_over_count"] == 0 and by_parameter["pH"]["completeness_pct"] == pytest.approx(95.8)
    assert by_parameter["Flow"]["completeness_pct"] == 0.0 and by_parameter["Flow"]["daily_mean"] is None


def test_errors_name_the_station_the_parameter_and_the_fix(api: TestClient, station: Station) -> None:
    unknown = api.get("/api/v1/stations/NOPE-1/readings")
    assert unknown.status_code == 404 and "NOPE-1" in unknown.json()["detail"]
    bad = api.get(f"/api/v1/stations/{station.id}/readings", params={"parameter": "BOD5"})
    assert bad.status_code == 422
    assert station.id in bad.json()["detail"] and "'BOD5'" in bad.json()["detail"] and "COD" in bad.json()["detail"]
    backwards = api.get(f"/api/v1/stations/{station.id}/readings",
                        params={"from": DAY_START.isoformat(), "to": (DAY_START - timedelta(hours=1)).isoformat()})
    assert backwards.status_code == 422 and "before" in backwards.json()["detail"]
    assert api.get(f"/api/v1/stations/{station.id}/readings", params={"bucket": "2h"}).status_code == 422
    assert api.get("/api/v1/stations/NOPE-1/compliance", params={"date": "2026-11-18"}).status_code == 404


def test_a_range_to_the_calendar_edge_or_too_long_is_refused_not_failed(api: TestClient, station: Station) -> None:
    """"Everything up to 9999-12-31" answered 500 (its local day overflowed), and 200 years of days 6 MB a parameter."""
    readings = f"/api/v1/stations/{station.id}/readings"
    edge = api.get(readings, params={"parameter": "pH", "from": "2000-01-01T00:00:00+00:00",
                                     "to": "9999-12-31T23:59:59+00:00"})
    assert edge.status_code == 422 and "9998-12-31" in edge.text and edge.json()["detail"][0]["loc"] == ["query", "to"]
    long = api.get(readings, params={"parameter": "pH", "from": "1900-01-01T00:00:00+00:00", "to": "2100-01-01T00:00:00+00:00"})
    assert long.status_code == 422 and "at most 8784 1d buckets" in long.json()["detail"] and "csv" in long.json()["detail"]
    raw = api.get(readings, params={"parameter": "pH", "from": "1900-01-01T00:00:00+00:00", "to": "2100-01-01T00:00:00+00:00",
                                    "bucket": "raw", "limit": 3})
    assert raw.status_code == 200 and raw.json()["count"] == 3  # raw JSON stops at its limit, whatever the range
    hours = api.get(f"/api/v1/stations/{station.id}/completeness", params={"from": "2000-01-01T00:00:00+00:00",
                                                                          "to": "2026-01-01T00:00:00+00:00"})
    assert hours.status_code == 422 and "at most 8784 hour buckets" in hours.json()["detail"]
    for day in ("9999-12-31", "0001-01-01"):
        edge_day = api.get(f"/api/v1/stations/{station.id}/compliance", params={"date": day})
        assert edge_day.status_code == 422 and "1900-01-01 to 9998-12-31" in edge_day.text


# ---- a million rows through the real API process ----------------------------------------------

MILLION = 1_000_000
RSS_GROWTH_LIMIT_KB = 150 * 1024


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _vm_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")


@pytest.fixture(scope="module")
def million_station(stack: Settings) -> Iterator[tuple[Station, datetime, datetime]]:
    """One station with 1,000,000 readings (10 parameters x 100,000 times, 10 s apart), loaded by binary COPY."""
    s = make_station()
    s = s.model_copy(update={"parameters": {**s.parameters, **{f"P{i}": s.parameters["Flow"].model_copy(update={"symbol": f"P{i}"})
                                                                 for i in range(7)}}})
    start = datetime(2026, 10, 1, tzinfo=timezone.utc)
    times = 100_000
    end = start + timedelta(seconds=10 * times)
    with psycopg.connect(stack.pg_dsn, autocommit=True) as conn:
        save_stations(conn, {s.id: s})
        conn.execute("SELECT quantrac_ensure_partitions(%s, %s)", (start.date(), end.date()))
        ids = series_ids(conn, ((s.id, parameter) for parameter in s.parameters))
        with conn.cursor() as cur, cur.copy("COPY readings (series_id, station_id, parameter, ts, value, unit, status) "
                                            "FROM STDIN") as copy:
            for first in range(0, times, 10_000):
                block = []
                for n in range(first, first + 10_000):
                    ts = (start + timedelta(seconds=10 * n)).isoformat()
                    block.extend(f"{ids[s.id, parameter]}\t{s.id}\t{parameter}\t{ts}\t{n * 0.5}\tmg/L\t00\n"
                                 for parameter in s.parameters)
                copy.write("".join(block))
    yield s, start, end
    with psycopg.connect(stack.pg_dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM readings WHERE station_id = %s", (s.id,))


@pytest.fixture(scope="module")
def api_process(stack: Settings) -> Iterator[tuple[subprocess.Popen[bytes], str, str]]:
    """`quantrac api` as a real process on a free port, its log in the run folder."""
    from api.auth import create_key
    with psycopg.connect(stack.pg_dsn, autocommit=True) as conn:
        key, _ = create_key(conn, "test-history-export", "admin", "tests")
    port = _free_port()
    log_path = stack.run_dir / "test-logs" / os.environ.get("QUANTRAC_TEST_NAMESPACE", "test") / "api-history.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "cli", "api"], stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "QUANTRAC_API_PORT": str(port), "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert proc.poll() is None, f"the API exited with {proc.returncode}; see {log_path}"
        try:
            return httpx.get(url + "/api/v1/stations", headers={"X-API-Key": key}, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(healthy, timeout=60, interval=0.2, what="the API subprocess to answer")
        yield proc, url, key
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def test_a_million_row_csv_export_streams_with_bounded_memory(
        million_station: tuple[Station, datetime, datetime], api_process: tuple[subprocess.Popen[bytes], str, str]) -> None:
    station, start, end = million_station
    proc, url, key = api_process
    before = _vm_kb(proc.pid, "VmHWM")
    lines = 0
    size = 0
    tail = b""
    started = time.monotonic()
    with httpx.stream("GET", f"{url}/api/v1/stations/{station.id}/readings",
                      params={"from": start.isoformat(), "to": end.isoformat(), "bucket": "raw"},
                      headers={"Accept": "text/csv", "X-API-Key": key}, timeout=httpx.Timeout(30.0, read=120.0)) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
        for chunk in response.iter_bytes():
            lines += chunk.count(b"\n")
            size += len(chunk)
            tail = (tail + chunk)[-200:]
    elapsed = time.monotonic() - started
    growth = _vm_kb(proc.pid, "VmHWM") - before
    print(f"\nCSV export: {lines - 1} rows, {size / 1e6:.1f} MB in {elapsed:.1f} s; API peak RSS growth {growth / 1024:.1f} MB")
    assert lines == MILLION + 1
    assert size > 50_000_000
    assert tail.endswith(b",49999.5,mg/L,00\r\n")
    assert growth < RSS_GROWTH_LIMIT_KB, f"API peak RSS grew by {growth / 1024:.0f} MB while streaming {size / 1e6:.0f} MB"
