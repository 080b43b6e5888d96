"""`GET /api/v1/alerts/stream` on a real server: every transition arrives, a reconnect with
Last-Event-ID resumes exactly after the last event seen, and a stream opened from the alert list's
`last_event_id` misses nothing that happened between the two."""

from __future__ import annotations

import time
from typing import Any

import httpx
import orjson
import psycopg
import pytest

from alerts import alerts_table
from quantrac.settings import Settings
from tests.alerts_support.helpers import apply, condition, new_station
from tests.alerts_support.live import LiveApi, live_api  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration


def read_events(url: str, key: str, *, until: Any, last_event_id: int | None = None, after: int | None = None,
                timeout: float = 20.0) -> list[dict[str, Any]]:
    """SSE events (id, event, data) until `until(events)` holds; fails after `timeout` seconds."""
    headers = {"X-API-Key": key}
    if last_event_id is not None:
        headers["Last-Event-ID"] = str(last_event_id)
    params = {} if after is None else {"after": after}
    events: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    deadline = time.monotonic() + timeout
    with httpx.stream("GET", f"{url}/api/v1/alerts/stream", headers=headers, params=params, timeout=timeout) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s; events so far: {events}")
            if not line:
                if "data" in current:
                    events.append({**current, "data": orjson.loads(current["data"])})
                    if until(events):
                        return events
                current = {}
            elif not line.startswith(":"):
                field, _, value = line.partition(":")
                current[field] = value.lstrip(" ")
    raise AssertionError(f"stream ended; events: {events}")


def test_stream_needs_a_key(live_api: LiveApi) -> None:  # noqa: F811
    assert httpx.get(f"{live_api.url}/api/v1/alerts/stream", timeout=5).status_code == 401


def test_transitions_stream_and_resume_with_last_event_id(stack: Settings, db: psycopg.Connection,
                                                          live_api: LiveApi) -> None:  # noqa: F811
    station = new_station(db)
    [alert] = apply(stack.pg_dsn, [condition(station.id, 150.0)])
    newest = db.execute("SELECT max(id) FROM alert_events WHERE alert_id = %s", (alert["id"],)).fetchone()[0]
    mine = lambda evs: [e for e in evs if e["data"]["alert"]["id"] == alert["id"]]  # noqa: E731

    first = read_events(live_api.url, live_api.operator_key, last_event_id=newest - 1, until=lambda evs: mine(evs))
    [opened] = mine(first)
    assert opened["event"] == "alert" and int(opened["id"]) == newest
    assert opened["data"]["kind"] == "opened" and opened["data"]["alert"]["station_id"] == station.id

    alerts_table.acknowledge(db, alert["id"], "ana (operator)", "seen")
    alerts_table.comment(db, alert["id"], "ana (operator)", "lab sample")
    alerts_table.resolve(db, alert["id"], "ana (operator)", None)
    resumed = read_events(live_api.url, live_api.operator_key, last_event_id=int(opened["id"]),
                          until=lambda evs: len(mine(evs)) >= 3)
    kinds = [(e["data"]["kind"], e["data"]["actor"]) for e in mine(resumed)]
    assert kinds == [("acknowledged", "ana (operator)"), ("commented", "ana (operator)"), ("resolved", "ana (operator)")]
    ids = [int(e["id"]) for e in resumed]
    assert ids == sorted(ids) and ids[0] > int(opened["id"])
    expected = [r[0] for r in db.execute("SELECT id FROM alert_events WHERE id > %s AND id <= %s ORDER BY id",
                                         (int(opened["id"]), ids[-1]))]
    assert ids == expected, "a resumed stream must deliver every event after Last-Event-ID, none twice"


def test_a_transition_between_the_list_and_the_stream_is_delivered(stack: Settings, db: psycopg.Connection,
                                                                   live_api: LiveApi) -> None:  # noqa: F811
    """The dashboard's start: list the open alerts, then open the stream from the list's `last_event_id`
    (as EventSource does, with `?after=`). What happens in between comes through the stream."""
    station = new_station(db)
    [alert] = apply(stack.pg_dsn, [condition(station.id, 150.0)])
    headers = {"X-API-Key": live_api.operator_key}
    page = httpx.get(f"{live_api.url}/api/v1/alerts", params={"status": "open", "station": station.id},
                     headers=headers, timeout=10).json()
    assert [a["id"] for a in page["data"]] == [alert["id"]]
    listed_at = page["last_event_id"]
    assert listed_at >= db.execute("SELECT max(id) FROM alert_events WHERE alert_id = %s", (alert["id"],)).fetchone()[0]

    alerts_table.acknowledge(db, alert["id"], "ana (operator)", "between the list and the stream")
    [later] = apply(stack.pg_dsn, [condition(station.id, 160.0, parameter="TSS")])

    mine = lambda evs: [e for e in evs if e["data"]["alert"]["station_id"] == station.id]  # noqa: E731
    events = read_events(live_api.url, live_api.operator_key, after=listed_at, until=lambda evs: len(mine(evs)) >= 2)
    assert [(e["data"]["kind"], e["data"]["alert"]["id"]) for e in mine(events)] == [
        ("acknowledged", alert["id"]), ("opened", later["id"])]
    assert all(int(e["id"]) > listed_at for e in events)
    # Without the list's id the stream starts at "now" and the acknowledgement would be lost.
    assert listed_at < int(mine(events)[0]["id"])



def test_an_anomaly_alert_keeps_the_readings_value_and_its_score_apart_in_the_list_and_the_stream(
        stack: Settings, db: psycopg.Connection, api: Any, live_api: LiveApi) -> None:  # noqa: F811
    station = new_station(db)
    before = api.get("/api/v1/alerts", params={"limit": 1}).json()["last_event_id"]
    [alert] = apply(stack.pg_dsn, [condition(station.id, 204.1, rule="anomaly_spike", limit=6.0, score=15.28)])
    mine = lambda evs: [e for e in evs if e["data"]["alert"]["id"] == alert["id"]]  # noqa: E731
    [opened] = mine(read_events(live_api.url, live_api.operator_key, after=before, until=lambda evs: mine(evs)))
    assert (opened["data"]["alert"]["last_value"], opened["data"]["alert"]["score"]) == (204.1, 15.28)
    apply(stack.pg_dsn, [condition(station.id, 190.5, rule="anomaly_spike", limit=6.0, score=9.5, minutes=1)])
    [updated] = mine(read_events(live_api.url, live_api.operator_key, after=int(opened["id"]), until=lambda evs: mine(evs)))
    assert (updated["data"]["alert"]["last_value"], updated["data"]["alert"]["score"]) == (190.5, 9.5)
    [listed] = api.get("/api/v1/alerts", params={"station": station.id}).json()["data"]
    assert (listed["last_value"], listed["peak_value"], listed["score"], listed["limit"]) == (190.5, 204.1, 9.5, 6.0)
