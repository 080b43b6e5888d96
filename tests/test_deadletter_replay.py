"""Dead letters kept, listed by the API, replayed after the registry is fixed; per-station delivery counts.

Runs against the shared stack with this session's namespace (its own database, topics, bridge and worker).
"""

from __future__ import annotations

import os
import uuid
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

os.environ.setdefault("QUANTRAC_BRIDGE_COUNTS_FLUSH_S", "0.5")  # before the session's bridge starts

from ingest.deadletter import replay  # noqa: E402
from quantrac.db import load_stations, retire_station, save_stations  # noqa: E402
from quantrac.settings import Settings  # noqa: E402
from tests.utils.builders import make_station, payload  # noqa: E402
from tests.utils.poll import wait_for  # noqa: E402
from tests.utils.processes import publish, stored_count  # noqa: E402

pytestmark = pytest.mark.integration


def _deadletters(db: psycopg.Connection, station_id: str) -> list[tuple[str, object]]:
    return db.execute("SELECT reason, replayed_at FROM deadletters WHERE station_id = %s ORDER BY id", (station_id,)).fetchall()


def test_unknown_station_is_dead_lettered_then_replayed_after_registration(
        stack: Settings, pipeline: dict, db: psycopg.Connection, api) -> None:  # type: ignore[type-arg]
    station = make_station(f"T-late-{uuid.uuid4().hex[:8]}")
    ts = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=5)
    publish(stack, station.id, payload(ts, COD=42.0, pH=7.1))

    wait_for(lambda: _deadletters(db, station.id), timeout=90, what="the dead letter in the deadletters table")
    listed = api.get("/api/v1/deadletters", params={"station": station.id, "reason": "unknown_station"}).json()
    assert listed["total"] == 1 and listed["data"][0]["replayed_at"] is None
    assert '"COD"' in listed["data"][0]["payload_text"]
    assert replay(stack, db, load_stations(db), station=station.id).replayed == 0  # still unknown: nothing sent

    save_stations(db, {station.id: station})
    result = replay(stack, db, load_stations(db), station=station.id)

    assert (result.considered, result.replayed, result.readings_sent) == (1, 1, 2)
    wait_for(lambda: stored_count(db, station.id) == 2, timeout=90, what="the replayed readings in PostgreSQL")
    assert [r for r, replayed_at in _deadletters(db, station.id) if replayed_at is not None] == ["unknown_station"]
    assert replay(stack, db, load_stations(db), station=station.id).considered == 0  # idempotent
    shown = api.get("/api/v1/deadletters", params={"station": station.id, "replayed": "true"}).json()
    assert shown["total"] == 1 and shown["data"][0]["replay_result"] == "sent"


def test_a_retired_stations_readings_are_dead_lettered_as_retired(
        stack: Settings, pipeline: dict, db: psycopg.Connection) -> None:  # type: ignore[type-arg]
    station = make_station()
    save_stations(db, {station.id: station})
    assert retire_station(db, station.id, actor="test")
    ts = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=5)
    publish(stack, station.id, payload(ts, COD=42.0))

    wait_for(lambda: _deadletters(db, station.id), timeout=90, what="the retired station's dead letter")
    assert [reason for reason, _ in _deadletters(db, station.id)] == ["station_retired"]
    assert stored_count(db, station.id) == 0


def test_delivery_counts_per_station(stack: Settings, pipeline: dict, db: psycopg.Connection, api) -> None:  # type: ignore[type-arg]
    station = make_station()
    save_stations(db, {station.id: station})
    ts = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=3)
    good_and_bad = payload(ts, COD=12.0, pH=(7.0, "07"))  # pH has an invalid status
    publish(stack, station.id, good_and_bad)
    publish(stack, station.id, good_and_bad)  # redelivery of the same reading: a duplicate, stored once
    publish(stack, station.id, b"{not json")

    def counts() -> dict | None:  # type: ignore[type-arg]
        """Every counter settled: the bridge counts `received` on arrival but `forwarded`, `late` and
        `deadlettered` once Kafka confirms, and flushes them on its own timer, so the worker can have
        stored a reading before the bridge's count of it is written."""
        found = api.get(f"/api/v1/stations/{station.id}/delivery").json()
        done = (found["received"] == 3 and found["forwarded"] + sum(found["deadlettered"].values()) == 5
                and found["stored"] + found["duplicate"] == 2)
        return found if done else None

    found = wait_for(counts, timeout=90, interval=0.5, what="the delivery counts of the station")
    assert found["forwarded"] == 2 and found["late"] == 2
    assert found["deadlettered"] == {"bad_status": 2, "bad_json": 1}
    assert (found["stored"], found["duplicate"]) == (1, 1)
    assert stored_count(db, station.id) == 1
    everyone = api.get("/api/v1/delivery").json()
    assert station.id in {d["station_id"] for d in everyone["data"]}
    assert api.get("/api/v1/stations/NO-SUCH-STATION/delivery").status_code == 404
