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


# ---- judged on what arrived (issue 18.5, 19.4) -----------------------------------------------------

from hypothesis import given, strategies as st  # noqa: E402

from processors.pipeline import last_seen  # noqa: E402
from quantrac.domain import Reading  # noqa: E402


def test_a_caught_up_partition_is_known_up_to_now_and_a_lagging_one_up_to_its_last_record() -> None:
    now = T0 + timedelta(hours=1)
    caught_up = liveness.PartitionView(highwater=100, processed_offset=99, processed_ts=T0)
    behind = liveness.PartitionView(highwater=500, processed_offset=99, processed_ts=T0)
    idle_since_start = liveness.PartitionView(highwater=40, committed=40)
    unknown = liveness.PartitionView(highwater=40, committed=10)  # a backlog, nothing processed yet
    assert liveness.frontier([caught_up, idle_since_start], now) == now
    assert liveness.frontier([caught_up, behind], now) == T0
    assert liveness.frontier([caught_up, unknown], now) is None
    assert liveness.frontier([liveness.PartitionView(highwater=None)], now) is None
    assert liveness.frontier([], now) is None  # no partition owned (rebalancing): nobody is judged


@given(pause_s=st.integers(0, 24 * 3600), interval=st.integers(1, 3600), grace=st.integers(0, 600),
       processed_s=st.integers(0, 24 * 3600))
def test_a_station_that_kept_sending_is_never_overdue_while_the_worker_is_behind(
        pause_s: int, interval: int, grace: int, processed_s: int) -> None:
    """The worker stopped `pause_s` ago and has since processed `processed_s` of arrivals; the station sent every interval."""
    station = make_station("T-1", expected_interval_s=interval).model_copy(update={"offline_grace_s": grace})
    stopped = T0
    now = stopped + timedelta(seconds=pause_s)
    reached = stopped + timedelta(seconds=min(processed_s, pause_s))
    # The last message of the station the worker processed arrived at most one interval before `reached`.
    last_receipt = reached - timedelta(seconds=interval) if processed_s else stopped
    entry, _ = liveness.seen(None, station, last_receipt, last_receipt)
    behind = liveness.PartitionView(highwater=10**9, processed_offset=5, processed_ts=reached)
    at = liveness.frontier([behind], now)
    assert liveness.overdue([("T-1", entry)], {"T-1": station}, at, 60) == []  # type: ignore[arg-type]
    # and once caught up, the same silence past its deadline is reported
    if now > liveness.deadline(station, last_receipt, 60):
        assert liveness.overdue([("T-1", entry)], {"T-1": station}, now, 60)


def test_a_history_only_station_and_imported_readings_never_make_a_station_expected() -> None:
    station = make_station("T-1", expected_interval_s=60)
    entry, _ = liveness.seen(None, station, T0, T0)
    history = station.model_copy(update={"history_only": True})
    assert liveness.overdue([("T-1", entry)], {"T-1": history}, T0 + timedelta(days=1), 60) == []
    reading = Reading(station_id="T-1", parameter="COD", value=1.0, unit="mg/L", ts=T0)
    assert last_seen([([reading], T0, "import")]) == {}
    assert last_seen([([reading], T0, "mqtt")]) == {"T-1": (T0, T0)}
