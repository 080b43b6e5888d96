"""Silent stations on the wall clock: the pure deadline logic, and a silent station through the real pipeline."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from processors import liveness
from quantrac.db import save_stations
from quantrac.settings import Settings
from tests.conftest import publish, stored_count
from tests.utils.builders import make_station, payload
from tests.utils.poll import wait_for

T0 = datetime(2026, 11, 29, 3, 0, tzinfo=timezone.utc)


def test_deadline_is_receipt_plus_interval_plus_grace_with_a_station_override() -> None:
    station = make_station("T-1", expected_interval_s=300)
    assert liveness.deadline(station, T0, default_grace_s=60) == T0 + timedelta(seconds=360)
    own = station.model_copy(update={"offline_grace_s": 5})
    assert liveness.deadline(own, T0, default_grace_s=60) == T0 + timedelta(seconds=305)


def test_overdue_reports_once_and_a_message_clears_it() -> None:
    station = make_station("T-1", expected_interval_s=300)
    entry, recovered = liveness.seen(None, station, T0 - timedelta(seconds=3), T0)
    assert recovered is None and entry["offline"] is False
    stations = {"T-1": station}
    assert liveness.overdue([("T-1", entry)], stations, T0 + timedelta(seconds=360), 60) == []
    [(sid, marked, condition)] = liveness.overdue([("T-1", entry)], stations, T0 + timedelta(seconds=361), 60)
    assert (sid, marked["offline"], condition.rule, condition.parameter, condition.active) == ("T-1", True, "station_offline", "*", True)
    assert liveness.overdue([("T-1", marked)], stations, T0 + timedelta(hours=5), 60) == []  # not reported twice
    back, recovery = liveness.seen(marked, station, T0 + timedelta(hours=5), T0 + timedelta(hours=5))
    assert back["offline"] is False and recovery is not None and recovery.active is False
    assert liveness.overdue([("NOPE", entry)], stations, T0 + timedelta(days=1), 60) == []  # retired or unknown


def test_an_old_event_time_received_now_is_alive() -> None:
    station = make_station("T-1", expected_interval_s=300)
    entry, _ = liveness.seen(None, station, T0 - timedelta(days=2), T0)
    assert liveness.overdue([("T-1", entry)], {"T-1": station}, T0 + timedelta(seconds=100), 60) == []


@pytest.mark.integration
def test_a_silent_station_is_reported_offline_within_60_s_of_its_deadline(
        pipeline: dict, stack: Settings, db: psycopg.Connection) -> None:
    station = make_station(expected_interval_s=5).model_copy(update={"offline_grace_s": 3})
    save_stations(db, {station.id: station})
    publish(stack, station.id, payload(COD=20.0))
    wait_for(lambda: stored_count(db, station.id) == 1, timeout=90, what="the station's only reading")
    received = db.execute("SELECT now()").fetchone()[0]  # the bridge received it before it was stored
    deadline = received + timedelta(seconds=5 + 3)

    def offline() -> list[dict[str, Any]]:
        with db.cursor(row_factory=dict_row) as cur:
            return cur.execute("SELECT * FROM alerts WHERE station_id = %s AND rule = 'station_offline'", (station.id,)).fetchall()

    [alert] = wait_for(offline, timeout=90, interval=0.5, what=f"{station.id} reported offline")
    assert alert["opened_at"] <= deadline + timedelta(seconds=60)
    assert (alert["parameter"], alert["severity"], alert["basis"]) == ("*", "critical", "instant")
    assert station.id in alert["message"]
    publish(stack, station.id, payload(COD=21.0))  # it is back: the worker records it and reports the recovery
    wait_for(lambda: stored_count(db, station.id) == 2, timeout=90, what="the reading after silence")
    assert len(offline()) == 1
