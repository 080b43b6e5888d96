"""quantrac.client against the API running as a real process: DataFrames of readings, buckets, alerts and
completeness; the Parquet export and alerts beside history."""

from __future__ import annotations

import asyncio
import io
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pandas as pd
import pytest

from processors.pipeline import BatchProcessor
from quantrac.client import Client
from quantrac.domain import Reading, Station
from quantrac.settings import Settings
from tests.test_history_api import api_process  # noqa: F401 (fixture: `quantrac api` as a subprocess)
from tests.test_stations_admin import river_station

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def imported(api: Any, stack: Settings) -> tuple[Station, datetime, datetime, list[Reading]]:
    """A custom-parameter station with 3 hours of minute readings (one ClO2 exceedance), stored by the worker's
    pipeline code as an import would be (so its alert is historical)."""
    body = river_station()
    assert api.post("/api/v1/stations", json=body).status_code == 201
    station = Station.model_validate(body)
    start = (datetime.now(timezone.utc) - timedelta(hours=5)).replace(minute=0, second=0, microsecond=0)
    readings = []
    for i in range(180):
        ts = start + timedelta(minutes=i)
        readings.append(Reading(station_id=station.id, parameter="ClO2", value=1.6 if i == 100 else 0.5 + (i % 5) / 100,
                                unit="mg/L", ts=ts))
        readings.append(Reading(station_id=station.id, parameter="ORP", value=300.0 + i, unit="mV", ts=ts))

    async def store() -> None:
        processor = BatchProcessor(stack.pg_dsn, {station.id: station})
        try:
            await processor.process(records=[(readings, datetime.now(timezone.utc), "import")])
        finally:
            await processor.close()

    asyncio.run(store())
    return station, start, start + timedelta(hours=3), readings


def test_readings_come_back_as_dataframes_in_local_time(imported: Any, api_process: Any) -> None:  # noqa: F811
    station, start, end, readings = imported
    _, url, key = api_process
    with Client(url, key, page_size=97) as client:
        raw = client.readings(station.id, None, start, end)
        hourly = client.readings(station.id, ["ClO2"], start, end, bucket="1h")
        alerts = client.alerts(station.id, start - timedelta(days=1), datetime.now(timezone.utc) + timedelta(minutes=1))
        completeness = client.completeness(station.id, start, end)
    assert str(raw.index.tz) == "Asia/Ho_Chi_Minh" and len(raw) == len(readings)
    expected = pd.DataFrame([{"ts": r.ts, "parameter": r.parameter, "value": r.value} for r in readings])
    expected = expected.set_index("ts").sort_index(kind="stable")
    merged = raw.reset_index().merge(expected.reset_index().assign(ts=lambda f: f.ts.dt.tz_convert("Asia/Ho_Chi_Minh")),
                                     on=["ts", "parameter"], suffixes=("", "_sent"))
    assert len(merged) == len(readings) and (merged.value == merged.value_sent).all()
    means = expected[expected.parameter == "ClO2"].value.resample("1h").mean()
    assert list(hourly.avg.round(9)) == list(means.round(9)) and str(hourly.index.tz) == "Asia/Ho_Chi_Minh"
    exceed = alerts[alerts.rule == "exceedance"]
    assert len(exceed) == 1 and bool(exceed.historical.iloc[0])
    assert exceed.peak_value.iloc[0] == 1.6
    assert len(completeness) == 3 and str(completeness.index.tz) == "Asia/Ho_Chi_Minh"


def test_parquet_export_and_alerts_beside_history(imported: Any, api_process: Any) -> None:  # noqa: F811
    station, start, end, readings = imported
    _, url, key = api_process
    params = {"from": start.isoformat(), "to": end.isoformat()}
    got = httpx.get(f"{url}/api/v1/stations/{station.id}/readings", params={**params, "format": "parquet"},
                    headers={"X-API-Key": key}, timeout=60)
    assert got.status_code == 200 and got.headers["content-type"].startswith("application/vnd.apache.parquet")
    frame = pd.read_parquet(io.BytesIO(got.content))
    assert len(frame) == len(readings) and str(frame.ts.dt.tz) == "Asia/Ho_Chi_Minh"
    assert frame.value.sum() == pytest.approx(sum(r.value for r in readings))
    with_alerts = httpx.get(f"{url}/api/v1/stations/{station.id}/readings",
                            params={**params, "bucket": "1h", "include": "alerts"}, headers={"X-API-Key": key}, timeout=60).json()
    marks = [a for a in with_alerts["alerts"] if a["rule"] == "exceedance"]
    assert len(marks) == 1 and marks[0]["historical"] is True and marks[0]["first_ts"].endswith("+07:00")
    outside = httpx.get(f"{url}/api/v1/stations/{station.id}/readings",
                        params={"from": (start - timedelta(hours=2)).isoformat(), "to": start.isoformat(), "include": "alerts"},
                        headers={"X-API-Key": key}, timeout=60).json()
    assert outside["alerts"] == []


def test_the_example_script_plots_a_month_and_counts_exceedance_hours(imported: Any, api_process: Any, tmp_path: Any) -> None:  # noqa: F811
    import subprocess
    import sys

    station, start, _end, _readings = imported
    _, url, key = api_process
    month = start.astimezone(ZoneInfo("Asia/Ho_Chi_Minh")).strftime("%Y-%m")
    out = tmp_path / "month.png"
    done = subprocess.run([sys.executable, "docs/analyst_example.py", "--url", url, "--key", key, "--station", station.id,
                           "--parameter", "ClO2", "--month", month, "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "1 alerts, 0 exceedance hours" in done.stdout
