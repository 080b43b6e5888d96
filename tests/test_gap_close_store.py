"""Alerts don't bridge gaps, on the real PostgreSQL: an anomaly alert open before a long gap is closed at the gap."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import psycopg
import pytest

from alerts.lifecycle import Policy
from processors.detection import DetectionConfig, detect
from quantrac.domain import Reading
from quantrac.settings import Settings
from tests.alerts_support.helpers import NOW, apply, new_station

pytestmark = pytest.mark.integration


def test_an_anomaly_alert_open_before_a_long_gap_is_closed_at_the_gap_not_after_it(stack: Settings, db: psycopg.Connection) -> None:
    station = new_station(db)
    config = DetectionConfig.from_settings(Settings())
    policy = Policy()
    rng = np.random.default_rng(0)
    start = NOW - timedelta(days=12)
    normal = [(start + timedelta(minutes=5 * i), round(60 + float(rng.normal(0, 2)), 1)) for i in range(2 * 288)]
    stuck = [(normal[-1][0] + timedelta(minutes=5 * (i + 1)), 61.3) for i in range(20)]  # the analyser sticks
    gap_start = stuck[-1][0]
    resumed = [(gap_start + timedelta(days=8, minutes=5 * i), round(60 + float(rng.normal(0, 2)), 1)) for i in range(6)]
    state = None
    for ts, value in normal + stuck + resumed:
        out = detect(state, [Reading(station_id=station.id, parameter="Flow", value=value, unit="m3/h", ts=ts)], station, config)
        state = out.state
        apply(stack.pg_dsn, out.conditions, policy)
        if ts == gap_start:  # before the gap: the stuck stretch is one open alert
            assert db.execute("SELECT status FROM alerts WHERE station_id = %s AND rule = 'anomaly_flatline'",
                              (station.id,)).fetchall() == [("open",)]
    rows = db.execute("SELECT id, status, clear_since, last_ts FROM alerts WHERE station_id = %s AND rule = 'anomaly_flatline'",
                      (station.id,)).fetchall()
    assert len(rows) == 1
    alert_id, status, clear_since, last_ts = rows[0]
    assert status == "resolved" and clear_since == gap_start and last_ts <= gap_start
    [note] = db.execute("SELECT note FROM alert_events WHERE alert_id = %s AND kind = 'resolved'", (alert_id,)).fetchone()
    assert "data stopped" in note and "for 11520 min" in note  # the 8-day gap
