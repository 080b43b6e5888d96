"""Detection through the real pipeline: MQTT → bridge → Kafka → worker (windows, rules, detectors) → PostgreSQL.

Each test registers its own station, so tests neither see nor disturb each other's data.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from quantrac.db import save_stations
from quantrac.domain import Station
from quantrac.registry import load_registry
from quantrac.settings import Settings
from quantrac.timebuckets import bucket_start
from tests.utils.builders import make_station, payload
from tests.utils.poll import wait_for
from tests.utils.processes import publish, stored_count

pytestmark = pytest.mark.integration


def alerts_of(db: psycopg.Connection, station_id: str) -> list[dict[str, Any]]:
    with db.cursor(row_factory=dict_row) as cur:
        return cur.execute("SELECT * FROM alerts WHERE station_id = %s ORDER BY rule, parameter", (station_id,)).fetchall()


def seed_copy(settings: Settings, seed_id: str) -> Station:
    """A registry station (its regulation, column and factors) under a fresh id."""
    seed = load_registry(settings.registry_file, settings.limits_dir)[seed_id]
    return seed.model_copy(update={"id": f"T-{uuid.uuid4().hex[:10]}"})


def past_hour(hours_ago: int = 2) -> datetime:
    return bucket_start(datetime.now(timezone.utc) - timedelta(hours=hours_ago), "1h")


def test_an_exceedance_of_the_1h_mean_raises_one_alert_with_basis_1h_and_the_station_limit(
        pipeline: dict, stack: Settings, db: psycopg.Connection) -> None:
    station = seed_copy(stack, "HD-NAMSACH-WW01")  # QCVN 40:2011 col. B COD 150 x Kq 1.0 x Kf 1.1 = 165
    save_stations(db, {station.id: station})
    start = past_hour()
    for i in range(12):  # mean 170 over a complete hour of 5-min readings
        publish(stack, station.id, payload(start + timedelta(minutes=5 * i), COD=150.0 if i % 2 == 0 else 190.0))

    def hourly() -> list[dict[str, Any]]:
        return [a for a in alerts_of(db, station.id) if a["basis"] == "1h"]

    [alert] = wait_for(hourly, timeout=120, what=f"a 1h alert for {station.id}")
    assert (alert["rule"], alert["parameter"], alert["severity"]) == ("exceedance_1h", "COD", "critical")
    assert alert["last_value"] == pytest.approx(170.0) and alert["limit_value"] == pytest.approx(165.0)
    assert "col. B" in alert["limit_source"] and "Kf 1.1" in alert["limit_source"]
    assert alert["first_ts"] == start and alert["count"] == 1
    wait_for(lambda: stored_count(db, station.id) == 12, timeout=90, what="all 12 readings stored")
    assert len(hourly()) == 1


def test_a_calibration_period_raises_no_exceedance(pipeline: dict, stack: Settings, db: psycopg.Connection) -> None:
    station = make_station(cod_limit=100.0)
    save_stations(db, {station.id: station})
    start = past_hour()
    for i in range(12):
        publish(stack, station.id, payload(start + timedelta(minutes=5 * i), COD=(900.0, "01")))
    after = start + timedelta(hours=1, minutes=15)  # closes the calibrated hour (watermark past its end)
    publish(stack, station.id, payload(after, COD=40.0))
    wait_for(lambda: stored_count(db, station.id) == 13, timeout=90, what="the calibration readings and the next one")
    row = db.execute("SELECT received, valid, expected FROM completeness WHERE station_id = %s AND period = 'hour' "
                     "AND bucket = %s", (station.id, start)).fetchone()
    assert row == (12, 0, 36)  # 3 parameters x 12 slots expected, 12 received, none valid
    wait_for(lambda: db.execute("SELECT received FROM completeness WHERE station_id = %s AND bucket = %s AND period = 'hour'",
                                (station.id, bucket_start(after, "1h"))).fetchone(), timeout=90, what="the next hour counted")
    assert [a["rule"] for a in alerts_of(db, station.id) if "exceedance" in a["rule"] or "warning" in a["rule"]] == []


def _series(start: datetime) -> list[tuple[datetime, dict[str, Any]]]:
    """Two hours of 5-min readings: a calm hour with early warnings, then an hour whose mean exceeds, a fast pH swing."""
    out = []
    for i in range(24):
        cod = 85.0 if i < 12 else (130.0 if i % 3 else 95.0)
        ph = 7.0 if i != 15 else 8.9
        out.append((start + timedelta(minutes=5 * i), {"COD": cod, "pH": ph, "Flow": 40.0 + i}))
    return out


def with_ph_rate(station: Station, per_min: float) -> Station:
    ph = station.parameters["pH"].model_copy(update={"max_rate_per_min": per_min})
    return station.model_copy(update={"parameters": {**station.parameters, "pH": ph}})


def _alert_set(db: psycopg.Connection, station_id: str) -> set[tuple]:
    return {(a["parameter"], a["rule"], a["basis"], a["count"], a["last_value"], a["peak_value"], a["limit_value"],
             a["first_ts"], a["last_ts"]) for a in alerts_of(db, station_id)}


def test_replaying_readings_with_their_historical_timestamps_gives_the_alerts_of_live_delivery(
        pipeline: dict, stack: Settings, db: psycopg.Connection) -> None:
    live, replay = (with_ph_rate(make_station(cod_limit=100.0), 0.2) for _ in range(2))
    save_stations(db, {live.id: live, replay.id: replay})
    series = _series(past_hour(3))
    for n, (ts, values) in enumerate(series, start=1):  # live: one message at a time, each stored before the next
        publish(stack, live.id, payload(ts, **values))
        wait_for(lambda n=n: stored_count(db, live.id) == 3 * n, timeout=90, what=f"live reading {n}")
    for ts, values in series:  # replay: the same messages in one burst
        publish(stack, replay.id, payload(ts, **values))
    wait_for(lambda: stored_count(db, replay.id) == 3 * len(series), timeout=120, what="the replayed burst")
    expected = _alert_set(db, live.id)
    assert {("COD", "exceedance_1h", "1h"), ("COD", "early_warning", "instant"), ("COD", "exceedance", "instant"),
            ("pH", "rate_of_change", "instant")} <= {a[:3] for a in expected}
    wait_for(lambda: _alert_set(db, replay.id) == expected, timeout=60, what="the replayed station's alerts to match live delivery")


def test_completeness_per_hour_and_day_is_served_by_the_api(pipeline: dict, stack: Settings, db: psycopg.Connection,
                                                            api: Any) -> None:
    station = make_station(cod_limit=100.0)
    save_stations(db, {station.id: station})
    start = past_hour(3)
    publish(stack, station.id, payload(start, COD=20.0, pH=7.0))
    publish(stack, station.id, payload(start + timedelta(minutes=5), COD=(None, "02"), pH=7.1))
    wait_for(lambda: stored_count(db, station.id) == 4, timeout=90, what="four readings stored")
    params = {"period": "hour", "from": start.isoformat(), "to": (start + timedelta(hours=2)).isoformat()}
    body = api.get(f"/api/v1/stations/{station.id}/completeness", params=params).json()
    assert body["count"] == 2
    first, second = body["data"]
    assert (first["expected"], first["received"], first["valid"], first["late"]) == (36, 4, 3, 0)
    assert first["completeness"] == pytest.approx(3 / 36, abs=1e-4)
    assert (second["received"], second["completeness"]) == (0, 0.0)  # a silent hour is served as such
    assert datetime.fromisoformat(first["start"]).utcoffset() == timedelta(hours=7)
    day = api.get(f"/api/v1/stations/{station.id}/completeness", params={**params, "period": "day"}).json()
    assert day["data"][0]["expected"] == 3 * 288 and day["data"][0]["received"] >= 4
    assert api.get("/api/v1/stations/NOPE/completeness").status_code == 404
    assert api.get(f"/api/v1/stations/{station.id}/completeness",
                   params={"from": params["to"], "to": params["from"]}).status_code == 422
