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
from tests.utils.builders import make_station, payload
from tests.utils.poll import wait_for
from tests.utils.processes import publish, stored_count

T0 = datetime(2026, 11, 29, 3, 0, tzinfo=timezone.utc)
CLOCK_LAG_S = 1800.0
HOLD_S = 900.0


def _seen(entry: dict[str, Any] | None, station: Any, event_ts: datetime, received_at: datetime
          ) -> tuple[dict[str, Any], list[Any]]:
    return liveness.seen(entry, station, event_ts, received_at, CLOCK_LAG_S, HOLD_S)


def test_deadline_is_receipt_plus_interval_plus_grace_with_a_station_override() -> None:
    station = make_station("T-1", expected_interval_s=300)
    assert liveness.deadline(station, T0, default_grace_s=60) == T0 + timedelta(seconds=360)
    own = station.model_copy(update={"offline_grace_s": 5})
    assert liveness.deadline(own, T0, default_grace_s=60) == T0 + timedelta(seconds=305)


def test_overdue_reports_once_and_a_message_clears_it() -> None:
    station = make_station("T-1", expected_interval_s=300)
    entry, recovered = _seen(None, station, T0 - timedelta(seconds=3), T0)
    assert recovered == [] and entry["offline"] is False
    stations = {"T-1": station}
    assert liveness.overdue([("T-1", entry)], stations, T0 + timedelta(seconds=360), 60) == []
    [(sid, marked, condition)] = liveness.overdue([("T-1", entry)], stations, T0 + timedelta(seconds=361), 60)
    assert (sid, marked["offline"], condition.rule, condition.parameter, condition.active) == ("T-1", True, "station_offline", "*", True)
    assert liveness.overdue([("T-1", marked)], stations, T0 + timedelta(hours=5), 60) == []  # not reported twice
    back, [recovery] = _seen(marked, station, T0 + timedelta(hours=5), T0 + timedelta(hours=5))
    assert back["offline"] is False and (recovery.rule, recovery.active) == ("station_offline", False)
    assert liveness.overdue([("NOPE", entry)], stations, T0 + timedelta(days=1), 60) == []  # retired or unknown


def test_an_old_event_time_received_now_is_alive() -> None:
    station = make_station("T-1", expected_interval_s=300)
    entry, _ = _seen(None, station, T0 - timedelta(days=2), T0)
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


@pytest.mark.integration
def test_a_gateway_whose_clock_stopped_is_reported_through_the_pipeline_and_clears_once_set_right(
        pipeline: dict, stack: Settings, db: psycopg.Connection) -> None:
    """Its messages all carry one old time (duplicates, then conflicts): nothing new is stored, the station still
    delivers, and `station_clock` says why. Bound: the station's own 2 s, raised to three 1-s intervals."""
    station = make_station(expected_interval_s=1).model_copy(update={"clock_lag_alert_s": 2})
    save_stations(db, {station.id: station})
    stuck = datetime.now(timezone.utc) - timedelta(seconds=10)

    def clock_alerts() -> list[dict[str, Any]]:
        with db.cursor(row_factory=dict_row) as cur:
            return cur.execute("SELECT * FROM alerts WHERE station_id = %s AND rule = 'station_clock'", (station.id,)).fetchall()

    def stuck_message() -> list[dict[str, Any]]:
        publish(stack, station.id, payload(ts=stuck, COD=20.0))
        return clock_alerts()

    [alert] = wait_for(stuck_message, timeout=90, interval=0.3, what=f"{station.id}'s stopped clock reported")
    assert (alert["parameter"], alert["severity"], alert["status"]) == ("*", "warning", "open")
    assert "not catching up" in alert["message"] and "NTP" in alert["message"] and alert["limit_value"] == 3.0
    assert stored_count(db, station.id) == 1, "one time, one reading: the rest were the same reading again"

    def set_right() -> Any:
        publish(stack, station.id, payload(COD=20.0))
        return db.execute("SELECT clear_since FROM alerts WHERE id = %s", (alert["id"],)).fetchone()[0]

    wait_for(set_right, timeout=90, interval=0.3, what="the alert clearing once the clock is right")
    assert len(clock_alerts()) == 1


# ---- judged on what arrived (issue 18.5, 19.4) -----------------------------------------------------

from hypothesis import given  # noqa: E402
from hypothesis import strategies as st

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
    assert liveness.frontier([liveness.PartitionView(highwater=0)], now) == now  # an empty partition, never committed


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
    entry, _ = _seen(None, station, last_receipt, last_receipt)
    behind = liveness.PartitionView(highwater=10**9, processed_offset=5, processed_ts=reached)
    at = liveness.frontier([behind], now)
    assert liveness.overdue([("T-1", entry)], {"T-1": station}, at, 60) == []  # type: ignore[arg-type]
    # and once caught up, the same silence past its deadline is reported
    if now > liveness.deadline(station, last_receipt, 60):
        assert liveness.overdue([("T-1", entry)], {"T-1": station}, now, 60)


def test_a_history_only_station_and_imported_readings_never_make_a_station_expected() -> None:
    station = make_station("T-1", expected_interval_s=60)
    entry, _ = _seen(None, station, T0, T0)
    history = station.model_copy(update={"history_only": True})
    assert liveness.overdue([("T-1", entry)], {"T-1": history}, T0 + timedelta(days=1), 60) == []
    reading = Reading(station_id="T-1", parameter="COD", value=1.0, unit="mg/L", ts=T0)
    assert last_seen([([reading], T0, "import")]) == {}
    assert last_seen([([reading], T0, "mqtt")]) == {"T-1": (T0, T0)}


@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 5), st.sampled_from(["mqtt", "import"])), min_size=1,
                max_size=30))
def test_last_seen_gives_each_station_its_newest_event_and_receipt_of_live_records(records) -> None:
    """Per station, the newest event time and the newest receive time among its records that are not imports, however
    the records interleave."""
    batch = [([Reading(station_id=f"T-{s}", parameter="COD", value=1.0, unit="mg/L", ts=T0 + timedelta(minutes=m))],
              T0 + timedelta(seconds=7 * m + s), source) for s, m, source in records]
    expected: dict[str, tuple[datetime, datetime]] = {}
    for readings, received, source in batch:
        if source == "import":
            continue
        event, at = expected.get(readings[0].station_id, (readings[0].ts, received))
        expected[readings[0].station_id] = (max(event, readings[0].ts), max(at, received))
    assert last_seen(batch) == expected


# ---- through the pipeline: a paused worker, an import while it is behind --------------------------

import os  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Iterator  # noqa: E402

from quantrac.domain import Station  # noqa: E402


class Senders:
    """Stations that keep publishing over MQTT (through the session bridge), one message each per `every_s`."""

    def __init__(self, settings: Settings, station_ids: list[str], every_s: float = 0.25) -> None:
        self.settings, self.every_s = settings, every_s
        self.active = set(station_ids)
        self.sent = {sid: 0 for sid in station_ids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            try:
                for sid in sorted(self.active):
                    publish(self.settings, sid, payload(COD=20.0 + n % 5, pH=7.0))
                    self.sent[sid] += 1
            except BaseException as exc:  # reported by the test, not lost in the thread
                self.error = exc
                return
            n += 1
            self._stop.wait(self.every_s)  # the stations' pace, not a wait for a condition

    def __enter__(self) -> "Senders":
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(30)


@contextmanager
def paused(worker: Any) -> Iterator[float]:
    """The session worker stopped (SIGSTOP) for the block: its consumer falls behind while Kafka fills."""
    os.kill(worker.proc.pid, signal.SIGSTOP)
    try:
        yield time.monotonic()
    finally:
        os.kill(worker.proc.pid, signal.SIGCONT)


def offline_alerts(db: psycopg.Connection, station_ids: list[str]) -> list[tuple[str, datetime]]:
    return db.execute("SELECT station_id, opened_at FROM alerts WHERE rule = 'station_offline' AND station_id = ANY(%s)",
                      (station_ids,)).fetchall()


def quick(station_id: str | None = None) -> Station:
    """A station due every second with a 2-s grace: silent past 3 s means offline."""
    return make_station(station_id, expected_interval_s=1).model_copy(update={"offline_grace_s": 2})


def load_records(stack: Settings, station: Station, records: int) -> int:
    """`records` live messages of one station (3 readings each, one per second back in time) straight into Kafka, as
    the bridge forwards them: the backlog a paused worker must catch up with. Returns the readings."""
    from ingest.producer import make_producer, send_confirmed
    from quantrac.domain import Reading
    from quantrac.wire import encode_readings
    now = datetime.now(timezone.utc)
    producer = make_producer(stack, "liveness-load")
    try:
        batch = []
        for i in range(records):
            ts = now - timedelta(seconds=i + 1)
            readings = [Reading(station_id=station.id, parameter=p, value=v, unit=u, ts=ts)
                        for p, v, u in (("COD", 20.0, "mg/L"), ("pH", 7.0, "-"), ("Flow", 10.0, "m3/h"))]
            batch.append((stack.readings_topic, station.id.encode(), encode_readings(station.id, readings, now, "mqtt")))
        send_confirmed(producer, batch, timeout_s=120)
    finally:
        producer.close(10)
    return records * 3


@pytest.mark.integration
@pytest.mark.timeout(400)
def test_a_worker_paused_longer_than_the_grace_under_load_reports_no_station_that_kept_sending(
        pipeline: dict, stack: Settings, db: psycopg.Connection) -> None:
    senders, silent, late_silent = [quick() for _ in range(3)], quick(), quick()
    load = make_station(expected_interval_s=3600)
    save_stations(db, {s.id: s for s in (*senders, silent, late_silent, load)})
    ids = [s.id for s in senders]
    with Senders(stack, [*ids, silent.id, late_silent.id]) as live:
        wait_for(lambda: all(stored_count(db, s) >= 2 for s in [*ids, silent.id, late_silent.id]), timeout=90,
                 what="the stations' first readings stored")
        live.active.discard(silent.id)  # truly silent from now on: it must be reported, or nothing is judged at all
        with paused(pipeline["worker"]) as since:
            loaded = load_records(stack, load, 40_000)
            mark = dict(live.sent)
            # paused well past every sender's slot plus grace (3 s) while they keep sending
            wait_for(lambda: time.monotonic() - since > 12 and all(live.sent[s] - mark[s] >= 8 for s in ids),
                     timeout=120, interval=0.2, what="the senders to keep publishing while the worker is paused")
        assert live.error is None, live.error
        wait_for(lambda: stored_count(db, load.id) >= loaded, timeout=240, interval=1.0, what="the backlog stored")
        # caught up: now a station that stops is judged on the wall clock and reported
        live.active.discard(late_silent.id)
        wait_for(lambda: {s for s, _ in offline_alerts(db, [silent.id, late_silent.id])} == {silent.id, late_silent.id},
                 timeout=120, interval=0.5, what="both silent controls reported offline")
        assert offline_alerts(db, ids) == []
        assert all(stored_count(db, s) >= live.sent[s] - 8 for s in ids)  # their messages went through meanwhile
    assert live.error is None, live.error
    with db.transaction():  # the senders stop with the test: they are history now
        for s in senders:
            save_stations(db, {s.id: s.model_copy(update={"history_only": True})})


@pytest.mark.integration
@pytest.mark.timeout(400)
def test_an_import_while_the_worker_is_behind_never_reports_the_import_only_station_offline(
        api: Any, pipeline: dict, stack: Settings, db: psycopg.Connection, tmp_path: Path) -> None:
    from tests.test_import import import_cmd, write_long_csv
    from tests.test_stations_admin import river_station

    body = {**river_station(), "expected_interval_s": 1, "offline_grace_s": 1}
    archive = body["id"]
    assert api.post("/api/v1/stations", json=body).status_code == 201
    control = quick()
    save_stations(db, {control.id: control})
    path = tmp_path / "backlog.csv"
    expected, _ = write_long_csv(path, 30_000, datetime.now(timezone.utc) - timedelta(hours=1))
    with Senders(stack, [control.id]) as live:
        wait_for(lambda: stored_count(db, control.id) >= 2, timeout=90, what="the control's first readings stored")
        with paused(pipeline["worker"]) as since:
            done = subprocess.run(import_cmd(archive, path), capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, done.stdout + done.stderr
            imported_at = time.monotonic()
            wait_for(lambda: time.monotonic() - max(since, imported_at) > 4, timeout=60, interval=0.2,
                     what="the worker to stay behind past the import-only station's slot plus grace")
        wait_for(lambda: stored_count(db, archive) >= expected, timeout=240, interval=1.0, what="the import stored")
        assert offline_alerts(db, [archive]) == []  # during the import's backlog
        live.active.discard(control.id)  # a check after the import was stored, past its receipt plus grace
        wait_for(lambda: offline_alerts(db, [control.id]), timeout=120, interval=0.5, what="the control reported offline")
    assert offline_alerts(db, [archive]) == []  # and after it
    assert live.error is None, live.error


@given(st.text(min_size=1, max_size=40), st.integers(min_value=1, max_value=64))
def test_a_stations_partition_is_the_one_the_bridges_producer_picks(station_id: str, partitions: int) -> None:
    """The worker reads back the liveness entries of its partitions' stations; the bridge keys records by station id."""
    from kafka.partitioner.default import DefaultPartitioner

    from processors.worker_state import partition_of

    every = list(range(partitions))
    assert partition_of(station_id, partitions) == DefaultPartitioner()(station_id.encode(), every, every)


@pytest.mark.integration
@pytest.mark.parametrize("restart", [False, True], ids=["one worker", "a worker restarted once the station is back"])
def test_a_station_back_from_silence_has_its_offline_alert_resolved_once_it_has_delivered_for_the_hold(
        stack: Settings, restart: bool) -> None:
    """Its own worker, with a clear hold of 3 s: the station falls silent, is reported offline, comes back and keeps
    delivering; the alert resolves by itself (it used to stay open, holding back the station's notifications). A
    worker started meanwhile knows what is left to clear from the open alert (the store keeps no `back_since`)."""
    from ingest.producer import make_producer, send_confirmed
    from quantrac.wire import encode_readings
    from tests.utils.processes import NAMESPACE, Process, own_pipeline

    own, env = own_pipeline(stack, "offline_hold")
    station = quick()
    env = {**env, "QUANTRAC_ALERT_CLEAR_HOLD_S": "3", "QUANTRAC_LIVENESS_CHECK_S": "0.5"}
    with psycopg.connect(own.pg_dsn, autocommit=True) as conn:
        save_stations(conn, {station.id: station})
        workers = [Process("worker-offline-hold", ["worker"], stack.run_dir / "test-logs" / NAMESPACE, env)]
        producer = make_producer(own, "offline-hold")

        def send() -> None:
            assert workers[-1].alive(), workers[-1].tail()
            now = datetime.now(timezone.utc)
            reading = Reading(station_id=station.id, parameter="COD", value=20.0, unit="mg/L", ts=now)
            send_confirmed(producer, [(own.readings_topic, station.id.encode(),
                                       encode_readings(station.id, [reading], now, "mqtt"))], timeout_s=60)

        def alert() -> dict[str, Any] | None:
            with conn.cursor(row_factory=dict_row) as cur:
                return cur.execute("SELECT * FROM alerts WHERE station_id = %s AND rule = 'station_offline'",
                                   (station.id,)).fetchone()

        try:
            send()
            wait_for(lambda: stored_count(conn, station.id) == 1, timeout=90, what="the station's first reading")
            opened = wait_for(alert, timeout=60, interval=0.3, what=f"{station.id} reported offline")
            assert opened["status"] == "open"
            back = datetime.now(timezone.utc)
            if restart:
                send()
                wait_for(lambda: stored_count(conn, station.id) == 2, timeout=60, what="the reading it came back with")
                workers[-1].stop()
                workers.append(Process("worker-offline-hold-2", ["worker"], stack.run_dir / "test-logs" / NAMESPACE, env))

            def delivering_until_resolved() -> dict[str, Any] | None:
                send()
                row = alert()
                return row if row is not None and row["status"] == "resolved" else None

            resolved = wait_for(delivering_until_resolved, timeout=90, interval=0.5, what="the offline alert resolved")
            assert resolved["id"] == opened["id"] and resolved["resolved_by"] == "system"
            assert resolved["resolved_at"] >= back + timedelta(seconds=3), "resolved only once clear for the hold"
        finally:
            producer.close(10)
            for worker in workers:
                worker.stop()
