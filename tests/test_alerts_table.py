"""The alert store on the real PostgreSQL: one active alert per key, repeats, auto-resolution, history."""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest

from alerts import alerts_table
from alerts.lifecycle import Policy, TransitionError
from quantrac.settings import Settings
from tests.alerts_support.helpers import NOW, apply, condition, events, new_station

pytestmark = pytest.mark.integration


def test_open_repeat_and_one_active_alert(stack: Settings, db: psycopg.Connection) -> None:
    s = new_station(db, zone="KCN Đại An")
    [first] = apply(stack.pg_dsn, [condition(s.id, 150.0)])
    assert first["transition"] == "opened" and first["opened"] and first["zone"] == "KCN Đại An"
    rows = apply(stack.pg_dsn, [condition(s.id, 190.0, minutes=5), condition(s.id, 120.0, minutes=10)])
    # repeats in one batch are folded into one update (and one event) carrying all of them
    assert [(r["transition"], r["id"], r["count"], r["last_value"], r["peak_value"]) for r in rows] == [
        ("updated", first["id"], 3, 120.0, 190.0)]
    row = db.execute("SELECT count, last_value, peak_value FROM alerts WHERE id = %s", (first["id"],)).fetchone()
    assert row == (3, 120.0, 190.0)
    assert events(db, first["id"]) == [("opened", "system", "open"), ("updated", "system", "open")]
    [again] = apply(stack.pg_dsn, [condition(s.id, 130.0, minutes=15)])
    assert (again["count"], again["last_value"], again["peak_value"]) == (4, 130.0, 190.0)


def test_a_late_repeat_keeps_the_message_of_the_newest_reading(stack: Settings, db: psycopg.Connection) -> None:
    """A reading older than the alert's newest (a gateway's buffer) counts, but its words do not replace the newest's:
    an alert showed "pH: -1" beside its last value 15 (make run, a careless gateway's pH 15, then an older -1)."""
    s = new_station(db)
    [first] = apply(stack.pg_dsn, [condition(s.id, 150.0, minutes=10)])
    apply(stack.pg_dsn, [condition(s.id, 190.0, minutes=0)])
    row = db.execute("SELECT count, last_value, peak_value, message FROM alerts WHERE id = %s", (first["id"],)).fetchone()
    assert row[:3] == (2, 150.0, 190.0) and "150 vs 100" in row[3]
    apply(stack.pg_dsn, [condition(s.id, 170.0, minutes=20), condition(s.id, 200.0, minutes=5)])
    row = db.execute("SELECT count, last_value, peak_value, message FROM alerts WHERE id = %s", (first["id"],)).fetchone()
    assert row[:3] == (4, 170.0, 200.0) and "170 vs 100" in row[3]


def test_repeats_of_several_alerts_in_one_batch_are_each_written_once(stack: Settings, db: psycopg.Connection) -> None:
    stations = [new_station(db) for _ in range(3)]
    opened = apply(stack.pg_dsn, [condition(s.id, 150.0) for s in stations])
    repeats = [condition(s.id, 150.0 + k, minutes=k) for k in range(1, 6) for s in stations]
    rows = apply(stack.pg_dsn, repeats)
    assert sorted((r["id"], r["count"], r["peak_value"]) for r in rows) == sorted((o["id"], 6, 155.0) for o in opened)
    for o in opened:
        assert [kind for kind, *_ in events(db, o["id"])] == ["opened", "updated"]


def test_clear_conditions_resolve_after_hold_with_hysteresis(stack: Settings, db: psycopg.Connection) -> None:
    s = new_station(db)
    [alert] = apply(stack.pg_dsn, [condition(s.id, 150.0)])
    policy = Policy(hysteresis=0.1, clear_hold=timedelta(minutes=10))
    assert apply(stack.pg_dsn, [condition(s.id, 80.0, minutes=1)], policy) == []
    assert apply(stack.pg_dsn, [condition(s.id, 95.0, minutes=5)], policy) == []  # inside the band: not clear
    assert apply(stack.pg_dsn, [condition(s.id, 80.0, minutes=6)], policy) == []
    assert db.execute("SELECT status FROM alerts WHERE id = %s", (alert["id"],)).fetchone() == ("open",)
    [resolved] = apply(stack.pg_dsn, [condition(s.id, 80.0, minutes=16)], policy)
    assert (resolved["id"], resolved["status"], resolved["transition"], resolved["resolved_by"]) == (alert["id"], "resolved", "resolved", "system")
    [reopened] = apply(stack.pg_dsn, [condition(s.id, 300.0, minutes=20)], policy)
    assert reopened["id"] != alert["id"] and reopened["transition"] == "opened"


def test_clear_conditions_without_an_alert_write_nothing(stack: Settings, db: psycopg.Connection) -> None:
    s = new_station(db)
    assert apply(stack.pg_dsn, [condition(s.id, 10.0, minutes=i) for i in range(5)]) == []
    assert db.execute("SELECT count(*) FROM alerts WHERE station_id = %s", (s.id,)).fetchone() == (0,)


def test_people_acknowledge_comment_resolve_with_actor(stack: Settings, db: psycopg.Connection) -> None:
    s = new_station(db)
    [alert] = apply(stack.pg_dsn, [condition(s.id, 150.0)])
    clock = lambda: NOW + timedelta(minutes=3)  # noqa: E731
    row = alerts_table.acknowledge(db, alert["id"], "ana (operator)", "calling the plant", clock)
    assert (row["status"], row["acknowledged_by"], row["acknowledged_at"]) == ("acknowledged", "ana (operator)", clock())
    alerts_table.comment(db, alert["id"], "bob (operator)", "lab sample taken")
    with pytest.raises(TransitionError):
        alerts_table.acknowledge(db, alert["id"], "bob (operator)", None)
    row = alerts_table.resolve(db, alert["id"], "ana (operator)", "aerator fixed")
    assert (row["status"], row["resolved_by"]) == ("resolved", "ana (operator)")
    history = db.execute("SELECT kind, actor, value, note FROM alert_events WHERE alert_id = %s ORDER BY id",
                         (alert["id"],)).fetchall()
    assert history == [("opened", "system", 150.0, s.id and history[0][3]), ("acknowledged", "ana (operator)", 150.0, "calling the plant"),
                       ("commented", "bob (operator)", 150.0, "lab sample taken"), ("resolved", "ana (operator)", 150.0, "aerator fixed")]
    with pytest.raises(alerts_table.AlertNotFound):
        alerts_table.acknowledge(db, 2**60, "ana", None)


def test_live_data_on_an_alert_raised_from_imported_history_opens_a_live_alert(stack: Settings, db: psycopg.Connection) -> None:
    """A historical alert is never notified; when live readings meet the same condition, the duty
    officer must hear of it: the historical alert is closed and a live one opened."""
    from dataclasses import replace

    s = new_station(db)
    [old] = apply(stack.pg_dsn, [replace(condition(s.id, 150.0), historical=True)])
    assert old["historical"] and old["transition"] == "opened"
    [repeat] = apply(stack.pg_dsn, [replace(condition(s.id, 160.0, minutes=1), historical=True)])
    assert repeat["id"] == old["id"] and repeat["transition"] == "updated", "history repeating itself stays historical"

    closed, live = apply(stack.pg_dsn, [condition(s.id, 170.0, minutes=2)])

    assert (closed["id"], closed["status"], closed["transition"]) == (old["id"], "resolved", "resolved")
    assert live["transition"] == "opened" and live["opened"] and not live["historical"] and live["id"] != old["id"]
    assert events(db, old["id"])[-1] == ("resolved", "system", "resolved")
