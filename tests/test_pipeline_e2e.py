"""One reading's whole journey on the real services: MQTT → bridge → Kafka → worker → PostgreSQL → API.

Each test registers its own station, so tests neither see nor disturb each other's data.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Iterator

import psycopg
import pytest
from fastapi.testclient import TestClient
from kafka import KafkaConsumer, TopicPartition

from ingest.producer import CONSUMER_OPTIONS
from quantrac.db import describe_store, save_stations
from quantrac.domain import Station
from quantrac.settings import Settings
from quantrac.wire import decode_deadletter
from tests.utils.builders import make_station, payload
from tests.utils.poll import wait_for
from tests.utils.processes import publish, stored_count

pytestmark = pytest.mark.integration


@pytest.fixture()
def station(db: psycopg.Connection) -> Station:
    s = make_station(cod_limit=100.0)
    save_stations(db, {s.id: s})
    return s


@pytest.fixture()
def deadletters(stack: Settings) -> Iterator[KafkaConsumer]:
    """A consumer of the dead-letter topic positioned at its current end."""
    consumer = KafkaConsumer(bootstrap_servers=stack.kafka_bootstrap, **CONSUMER_OPTIONS, enable_auto_commit=False, consumer_timeout_ms=500)
    partitions = [TopicPartition(stack.deadletter_topic, p) for p in consumer.partitions_for_topic(stack.deadletter_topic)]
    consumer.assign(partitions)
    consumer.seek_to_end()
    for tp in partitions:
        consumer.position(tp)
    yield consumer
    consumer.close()


def open_alerts(api: TestClient, station_id: str) -> list[dict]:
    response = api.get("/api/v1/alerts", params={"station": station_id, "status": "open"})
    assert response.status_code == 200, response.text
    return response.json()["data"]


@pytest.fixture()
def store_station(store_db: psycopg.Connection) -> Station:
    s = make_station(cod_limit=100.0)
    save_stations(store_db, {s.id: s})
    return s


def test_exceedance_over_mqtt_becomes_an_open_alert_and_the_reading_is_served(
        store_pipeline: dict, store_station: Station, store: Settings, store_db: psycopg.Connection, store_api: TestClient) -> None:
    """On each store path (TimescaleDB, native PostgreSQL): a bridge and a worker of their own write there."""
    station, api = store_station, store_api
    ts = datetime.now(timezone.utc).replace(microsecond=0)
    publish(store, station.id, payload(ts, COD=250.5, pH=7.1))

    [alert] = wait_for(lambda: open_alerts(api, station.id), timeout=30, what=f"an open alert for {station.id}")
    assert (alert["parameter"], alert["rule"], alert["severity"], alert["status"]) == ("COD", "exceedance", "critical", "open")
    assert (alert["last_value"], alert["limit"], alert["count"]) == (250.5, 100.0, 1)
    assert alert["limit_source"] == "test limit" and alert["basis"] == "instant"
    assert datetime.fromisoformat(alert["opened_at"]).utcoffset() == timedelta(hours=7)

    body = api.get(f"/api/v1/stations/{station.id}/readings",
                   params={"parameter": "COD", "from": (ts - timedelta(minutes=1)).isoformat(), "to": (ts + timedelta(minutes=1)).isoformat()}).json()
    assert [(r["parameter"], r["value"], r["status"]) for r in body["data"]] == [("COD", 250.5, "00")]
    assert datetime.fromisoformat(body["data"][0]["ts"]) == ts
    assert stored_count(store_db, station.id) == 2
    health = api.get("/healthz").json()["store"]
    assert health["kind"] == describe_store(store_db).kind == ("postgresql" if store.pg_timescaledb is False else "timescaledb")
    assert health["timescaledb_version"] == (None if store.pg_timescaledb is False else "2.28.3")


def test_malformed_payload_is_dead_lettered_and_the_next_valid_reading_arrives(
        pipeline: dict, station: Station, stack: Settings, db: psycopg.Connection, deadletters: KafkaConsumer) -> None:
    garbage = b'{"ts": "2026-11-29T21:05:00+07:00", "readings": [ broken'
    publish(stack, station.id, garbage)
    publish(stack, station.id, payload(COD=12.0))

    def dead_letter_for_station() -> dict | None:
        for record in deadletters:
            body = decode_deadletter(record.value)
            if body["station_id"] == station.id:
                return body
        return None

    body = wait_for(dead_letter_for_station, timeout=30, what="the malformed payload in the dead-letter topic")
    assert body["reason"] == "bad_json" and body["payload"] == garbage
    assert body["topic"] == f"quantrac/v1/stations/{station.id}/readings" and body["received_at"]
    wait_for(lambda: stored_count(db, station.id) == 1, timeout=30, what="the valid reading after the malformed one")


def test_redelivered_reading_is_stored_once_and_counted_once(
        pipeline: dict, station: Station, stack: Settings, db: psycopg.Connection, api: TestClient) -> None:
    message = payload(datetime.now(timezone.utc), COD=180.0)
    publish(stack, station.id, message)
    publish(stack, station.id, message)
    publish(stack, station.id, payload(datetime.now(timezone.utc) + timedelta(seconds=1), COD=170.0))

    [alert] = wait_for(lambda: [a for a in open_alerts(api, station.id) if a["count"] >= 2], timeout=30,
                       what="the alert to count the second, distinct reading")
    assert alert["count"] == 2 and alert["last_value"] == 170.0 and alert["peak_value"] == 180.0
    assert stored_count(db, station.id) == 2


def test_a_station_registered_while_running_is_accepted_without_restart(
        pipeline: dict, stack: Settings, db: psycopg.Connection) -> None:
    late = make_station()
    save_stations(db, {late.id: late})
    publish(stack, late.id, payload(Flow=42.0))
    wait_for(lambda: stored_count(db, late.id) == 1, timeout=30, what=f"a reading of newly registered {late.id}")


def test_stations_and_health(stack: Settings, api: TestClient) -> None:
    stations = api.get("/api/v1/stations").json()
    ids = {s["id"] for s in stations["data"]}
    assert {"HD-DAIAN-WW01", "HD-PHALAI-ST01"} <= ids
    health = api.get("/healthz")
    assert health.status_code == 200, health.text
    assert {k: v["ok"] for k, v in health.json()["dependencies"].items()} == {"postgresql": True, "kafka": True, "mqtt": True}
    assert api.get("/api/v1/stations/NOPE/readings").status_code == 404
