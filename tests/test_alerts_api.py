"""Alert, silence and summary endpoints on the real database: filters, paging, actions with their actor."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Callable

import psycopg
import pytest
from fastapi.testclient import TestClient

from quantrac.domain import Reading
from quantrac.settings import Settings
from tests.alerts_support.helpers import NOW, apply, condition, new_station, store_readings

pytestmark = pytest.mark.integration


def test_filter_by_zone_station_severity_and_page(stack: Settings, db: psycopg.Connection, api: TestClient) -> None:
    zone = f"KCN Page {datetime.now().timestamp()}"
    a, b = new_station(db, zone=zone), new_station(db, zone=zone)
    apply(stack.pg_dsn, [condition(a.id, 150.0), condition(a.id, 3.0, rule="below_minimum", parameter="pH", limit=5.5),
                         condition(b.id, 120.0), condition(b.id, 99.0, rule="drift", active=True, severity=condition(b.id, 1).severity.WARNING)])
    everything = api.get("/api/v1/alerts", params={"zone": zone}).json()
    assert everything["count"] == 4 and {x["zone"] for x in everything["data"]} == {zone}
    assert [x["station_id"] for x in api.get("/api/v1/alerts", params={"station": a.id}).json()["data"]] == [a.id, a.id]
    warnings = api.get("/api/v1/alerts", params={"zone": zone, "severity": "warning"}).json()["data"]
    assert [(x["station_id"], x["rule"]) for x in warnings] == [(b.id, "drift")]
    assert api.get("/api/v1/alerts", params={"zone": zone, "parameter": "pH", "rule": "below_minimum"}).json()["count"] == 1
    pages, cursor = [], None
    while True:
        page = api.get("/api/v1/alerts", params={"zone": zone, "limit": 3, **({"cursor": cursor} if cursor else {})}).json()
        pages.append([x["id"] for x in page["data"]])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [len(p) for p in pages] == [3, 1]
    assert sum(pages, []) == [x["id"] for x in everything["data"]]
    later = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
    assert api.get("/api/v1/alerts", params={"zone": zone, "from": later}).json()["count"] == 0
    assert api.get("/api/v1/alerts", params={"zone": zone, "status": ["acknowledged", "resolved"]}).json()["count"] == 0


def test_ack_comment_resolve_record_the_actor(stack: Settings, db: psycopg.Connection,
                                              api_as: Callable[[str | None], TestClient]) -> None:
    s = new_station(db)
    [alert] = apply(stack.pg_dsn, [condition(s.id, 150.0)])
    operator = api_as("operator")
    acked = operator.post(f"/api/v1/alerts/{alert['id']}/ack", json={"note": "calling the plant"})
    assert acked.status_code == 200 and acked.json()["acknowledged_by"] == "test-operator (operator)"
    assert acked.json()["acknowledged_at"].endswith("+07:00")
    again = operator.post(f"/api/v1/alerts/{alert['id']}/ack", json={})
    assert again.status_code == 409 and "already acknowledged" in again.json()["detail"]
    assert operator.post(f"/api/v1/alerts/{alert['id']}/comments", json={"text": "lab sample"}).status_code == 201
    assert operator.post(f"/api/v1/alerts/{alert['id']}/comments", json={"text": ""}).status_code == 422
    assert operator.post(f"/api/v1/alerts/{alert['id']}/resolve").json()["status"] == "resolved"
    detail = operator.get(f"/api/v1/alerts/{alert['id']}").json()
    assert [(e["kind"], e["actor"]) for e in detail["events"]] == [
        ("opened", "system"), ("acknowledged", "test-operator (operator)"), ("commented", "test-operator (operator)"),
        ("resolved", "test-operator (operator)")]
    assert detail["events"][1]["note"] == "calling the plant" and detail["events"][1]["value"] == 150.0
    assert operator.post("/api/v1/alerts/999999999/ack").status_code == 404
    export = api_as("analyst").get("/api/v1/alerts/export.csv")
    assert export.status_code == 200 and export.headers["content-type"].startswith("text/csv")
    assert f"{alert['id']},{s.id},COD" in export.text


def test_silence_crud_with_actor(db: psycopg.Connection, api_as: Callable[[str | None], TestClient]) -> None:
    s = new_station(db)
    operator = api_as("operator")
    ends = (datetime.now(timezone.utc) + timedelta(hours=2)).isoformat()
    created = operator.post("/api/v1/silences", json={"station_id": s.id, "parameter": "COD", "ends_at": ends,
                                                      "reason": "calibration", "note": "quarterly"})
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["active"] and body["created_by"] == "test-operator (operator)" and body["reason"] == "calibration: quarterly"
    listed = operator.get("/api/v1/silences", params={"station": s.id, "active": True}).json()
    assert [x["id"] for x in listed["data"]] == [body["id"]]
    past = (datetime.now(timezone.utc) - timedelta(hours=1)).isoformat()
    bad = operator.post("/api/v1/silences", json={"station_id": s.id, "ends_at": past, "reason": "maintenance"})
    assert bad.status_code == 422 and s.id in bad.text
    assert operator.post("/api/v1/silences", json={"station_id": "NOPE", "ends_at": ends, "reason": "other"}).status_code == 404
    deleted = operator.delete(f"/api/v1/silences/{body['id']}").json()
    assert not deleted["active"] and deleted["deleted_by"] == "test-operator (operator)"
    assert operator.delete(f"/api/v1/silences/{body['id']}").status_code == 404
    assert operator.get("/api/v1/silences", params={"station": s.id, "active": True}).json()["count"] == 0


def test_a_silence_to_the_calendar_edge_is_refused_and_one_stored_there_still_lists(
        db: psycopg.Connection, api_as: Callable[[str | None], TestClient]) -> None:
    """A silence "for ever" (ends_at 9999-12-31) answered 500 when made, and every later listing of silences too: its
    end could not be shown at +07:00."""
    s = new_station(db)
    operator = api_as("operator")
    forever = operator.post("/api/v1/silences", json={"station_id": s.id, "ends_at": "9999-12-31T23:59:59+00:00",
                                                      "reason": "maintenance"})
    assert forever.status_code == 422 and "9998-12-31" in forever.text
    db.execute("INSERT INTO silences (station_id, starts_at, ends_at, reason, created_by) "
               "VALUES (%s, now(), '9999-12-31 23:59:59+00', 'maintenance', 'before the bound')", (s.id,))
    db.commit()
    listed = operator.get("/api/v1/silences", params={"station": s.id})
    assert listed.status_code == 200, listed.text
    assert [x["ends_at"] for x in listed.json()["data"]] == ["9999-12-31T23:59:59Z"]


def test_station_summary_groups_by_zone(stack: Settings, db: psycopg.Connection, api: TestClient) -> None:
    zone = f"KCN Summary {datetime.now().timestamp()}"
    a, b, stuck, gone = (new_station(db, zone=zone) for _ in range(4))
    now = datetime.now(timezone.utc)
    hours_ago = now - timedelta(hours=3)
    store_readings(stack.pg_dsn, [Reading(station_id=station_id, parameter="COD", value=50.0, unit="mg/L", ts=ts)
                                  for station_id, ts in ((a.id, now), (stuck.id, hours_ago), (gone.id, hours_ago))])
    with db.transaction():  # as the worker records deliveries: `stuck` still delivers, its clock is 3 h behind
        db.execute("INSERT INTO station_liveness (station_id, event_ts, received_at) VALUES (%s, %s, %s), (%s, %s, %s)",
                   (stuck.id, hours_ago, now, gone.id, hours_ago, hours_ago))
    apply(stack.pg_dsn, [condition(a.id, 150.0), condition(b.id, 1.0, rule="station_offline", parameter="*", active=True)])
    with db.transaction():  # `a` refused twice today and once two days ago; `b`'s alert notification quarantined
        for n, (station_id, stage, at) in enumerate([(a.id, "bridge", now - timedelta(minutes=5)),
                                                      (a.id, "worker", now - timedelta(hours=20)),
                                                      (a.id, "bridge", now - timedelta(days=2)),
                                                      (b.id, "notifier", now - timedelta(minutes=5))]):
            db.execute("INSERT INTO deadletters (topic_partition, topic_offset, kafka_topic, source, stage, topic, reason, "
                       "message, received_at, station_id, payload) VALUES (0, %s, %s, 'mqtt', %s, 't', 'bad_json', 'm', %s, "
                       "%s, '\\x00')", (n, f"summary-test-{station_id}", stage, at, station_id))
    summary = api.get("/api/v1/summary/stations", params={"zone": zone}).json()
    [z] = summary["zones"]
    states = {st["id"]: (st["state"], st["open_alerts"]) for st in z["stations"]}
    assert states == {a.id: ("online", 1), b.id: ("offline", 1), stuck.id: ("online", 0), gone.id: ("offline", 0)}
    assert {st["id"]: st["deadletters_24h"] for st in z["stations"]} == {a.id: 2, b.id: 0, stuck.id: 0, gone.id: 0}
    assert (z["online"], z["offline"], z["open_alerts"]) == (2, 2, 2)
    received = {st["id"]: st["last_received_at"] for st in z["stations"]}
    assert received[a.id] is None and datetime.fromisoformat(received[stuck.id]) == now
    assert received[stuck.id].endswith("+07:00")  # shown in Asia/Ho_Chi_Minh


def test_suppressed_lists_what_a_silence_or_an_offline_station_holds_back(
        stack: Settings, db: psycopg.Connection, api_as: Callable[[str | None], TestClient]) -> None:
    quiet, offline, plain = new_station(db), new_station(db), new_station(db)
    operator = api_as("operator")
    ends = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
    assert operator.post("/api/v1/silences", json={"station_id": quiet.id, "parameter": "COD", "ends_at": ends,
                                                   "reason": "maintenance"}).status_code == 201
    silenced = apply(stack.pg_dsn, [condition(quiet.id, 150.0), condition(quiet.id, 3.0, rule="below_minimum", parameter="pH",
                                                                            limit=5.5)])
    [down] = apply(stack.pg_dsn, [condition(offline.id, 400.0, rule="station_offline", parameter="*", limit=360.0)])
    [held] = apply(stack.pg_dsn, [condition(offline.id, 150.0)])
    apply(stack.pg_dsn, [condition(plain.id, 150.0)])
    body = operator.get("/api/v1/alerts/suppressed").json()
    mine = {a["alert_id"]: a for a in body["data"] if a["station_id"] in {quiet.id, offline.id, plain.id}}
    cod = next(a for a in silenced if a["parameter"] == "COD")
    assert set(mine) == {cod["id"], held["id"]}  # the pH alert is outside the COD silence; the offline alert itself is not held
    assert mine[cod["id"]]["why"] == "silenced" and "(maintenance)" in mine[cod["id"]]["detail"]
    assert (mine[held["id"]]["why"], mine[held["id"]]["detail"]) == ("inhibited", f"station offline (alert {down['id']})")
    assert body["silenced"] + body["inhibited"] == len(body["data"]) and body["silenced"] >= 1 and body["inhibited"] >= 1


def test_an_alert_clearing_shows_since_when_and_loses_it_when_the_condition_returns(
        stack: Settings, db: psycopg.Connection, api: TestClient) -> None:
    s = new_station(db)
    [alert] = apply(stack.pg_dsn, [condition(s.id, 150.0)])
    assert api.get(f"/api/v1/alerts/{alert['id']}").json()["alert"]["clear_since"] is None
    apply(stack.pg_dsn, [condition(s.id, 60.0, minutes=2)])  # clear, within the 10-min hold: still open
    clearing = api.get(f"/api/v1/alerts/{alert['id']}").json()["alert"]
    assert clearing["status"] == "open" and clearing["clear_since"].endswith("+07:00")
    assert datetime.fromisoformat(clearing["clear_since"]) == NOW + timedelta(minutes=2)
    [listed] = [a for a in api.get("/api/v1/alerts", params={"station": s.id}).json()["data"] if a["id"] == alert["id"]]
    assert listed["clear_since"] == clearing["clear_since"]
    apply(stack.pg_dsn, [condition(s.id, 160.0, minutes=4)])  # back over the limit
    assert api.get(f"/api/v1/alerts/{alert['id']}").json()["alert"]["clear_since"] is None


def test_an_alert_clearing_is_an_event_on_its_history_once_per_batch_for_the_net_change(
        stack: Settings, db: psycopg.Connection, api: TestClient) -> None:
    """The `clearing` events reach the live stream (it reads alert_events), so the dashboard learns of a hold
    without reloading; a batch that flickers about the hysteresis band adds one event for its net change."""
    s = new_station(db)
    [alert] = apply(stack.pg_dsn, [condition(s.id, 150.0)])

    def kinds() -> list[tuple[str, str | None]]:
        return [(e["kind"], e["note"]) for e in api.get(f"/api/v1/alerts/{alert['id']}").json()["events"]]

    apply(stack.pg_dsn, [condition(s.id, 60.0, minutes=2), condition(s.id, 95.0, minutes=3),  # 95: inside the band
                         condition(s.id, 60.0, minutes=4)])
    [*_, (kind, note)] = kinds()
    assert kind == "clearing" and (NOW + timedelta(minutes=4)).isoformat() in note and "resolves at" in note
    assert [k for k, _ in kinds()].count("clearing") == 1
    apply(stack.pg_dsn, [condition(s.id, 62.0, minutes=5)])  # still clearing: nothing new to say
    assert [k for k, _ in kinds()].count("clearing") == 1
    apply(stack.pg_dsn, [condition(s.id, 95.0, minutes=6)])
    [*_, (kind, note)] = kinds()
    assert kind == "clearing" and "hold restarts" in note
    apply(stack.pg_dsn, [condition(s.id, 60.0, minutes=7), condition(s.id, 150.0, minutes=8)])  # clear, then back
    assert [k for k, _ in kinds()][-1] == "updated" and [k for k, _ in kinds()].count("clearing") == 2
    apply(stack.pg_dsn, [condition(s.id, 60.0, minutes=9), condition(s.id, 60.0, minutes=20)])
    assert [k for k, _ in kinds()][-1] == "resolved" and [k for k, _ in kinds()].count("clearing") == 2
    with pytest.raises(psycopg.errors.CheckViolation), db.transaction():  # the widened check still refuses others
        db.execute("INSERT INTO alert_events (alert_id, kind, actor, status) VALUES (%s, 'cleared', 'test', 'open')",
                   (alert["id"],))


def test_completeness_says_when_a_station_reports_more_often_than_registered(
        stack: Settings, db: psycopg.Connection, api: TestClient) -> None:
    """A gateway sending every 2 s on a 300-s registration (as `make run`'s simulator does) reads as thousands of
    percent complete; the hour says what to fix. A station within twice its allowance says nothing."""
    fast, normal = new_station(db), new_station(db)
    hour = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    expected = len(fast.parameters) * 3600 // fast.expected_interval_s
    with db.transaction():
        for station, received in ((fast, expected * 150), (normal, expected * 2)):
            db.execute("INSERT INTO completeness (station_id, period, bucket, expected, received, valid, late) "
                       "VALUES (%s, 'hour', %s, %s, %s, %s, 0)", (station.id, hour, expected, received, received))
    params = {"from": hour.isoformat(), "to": (hour + timedelta(hours=1)).isoformat()}
    [busy] = api.get(f"/api/v1/stations/{fast.id}/completeness", params=params).json()["data"]
    assert busy["completeness"] == 150.0 and busy["interval_note"] is not None
    assert f"registry interval ({fast.expected_interval_s} s)" in busy["interval_note"]
    assert f"about every {fast.expected_interval_s / 150:.3g} s" in busy["interval_note"]
    [plain] = api.get(f"/api/v1/stations/{normal.id}/completeness", params=params).json()["data"]
    assert plain["completeness"] == 2.0 and plain["interval_note"] is None
