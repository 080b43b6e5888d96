"""Fast unit tests of the ingest logic: PUBACK ordering, delivery counts, replay planning, gateway files."""

from __future__ import annotations

import stat
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
from hypothesis import given
from hypothesis import strategies as st

from ingest.bridge import AckQueue, PendingMessage
from ingest.deadletter import plan_replay
from ingest.payload import Limits
from quantrac.delivery_accounting import DeliveryCounts, hour_of, store_counts
from quantrac.domain import Reading, Status
from quantrac.mqtt_accounts import credential_for, gateway_credentials
from quantrac.mqtt_accounts import tester_credential as credential_of_tester
from quantrac.settings import Settings
from stack.mosquitto_accounts import sync
from tests.utils.builders import make_station, payload, topic

NOW = datetime(2026, 11, 29, 14, 5, tzinfo=timezone.utc)


@given(st.lists(st.integers(min_value=0, max_value=3), min_size=1, max_size=30), st.randoms(use_true_random=False))
def test_pubacks_go_out_in_arrival_order_once_each_message_is_confirmed(records_per_message: list[int], rnd) -> None:  # type: ignore[no-untyped-def]
    acked: list[int] = []
    queue = AckQueue(lambda mid, _qos: acked.append(mid))
    messages = [PendingMessage(mid=i, qos=1, remaining=n) for i, n in enumerate(records_per_message)]
    confirmations = [m for m in messages for _ in range(m.remaining)]
    rnd.shuffle(confirmations)
    for m in messages:
        queue.arrived(m)
    for i, m in enumerate(confirmations):
        queue.confirm(m)
        pending = confirmations[i + 1:]
        # acked is exactly the longest prefix of arrivals with nothing left to confirm
        prefix = 0
        while prefix < len(messages) and messages[prefix] not in pending:
            prefix += 1
        assert acked == list(range(prefix))
    assert acked == list(range(len(messages))) and len(queue) == 0


def test_a_message_without_records_is_acked_in_turn() -> None:
    acked: list[int] = []
    queue = AckQueue(lambda mid, _qos: acked.append(mid))
    first = PendingMessage(mid=1, qos=1, remaining=1)
    queue.arrived(first)
    queue.arrived(PendingMessage(mid=2, qos=1, remaining=0))
    assert acked == []
    queue.confirm(first)
    assert acked == [1, 2]


def test_messages_of_a_previous_connection_are_never_acked() -> None:
    acked: list[int] = []
    queue = AckQueue(lambda mid, _qos: acked.append(mid))
    old = PendingMessage(mid=5, qos=1, remaining=1)
    queue.arrived(old)

    assert queue.reset() == 1
    fresh = PendingMessage(mid=5, qos=1, remaining=1)  # the broker may reuse the packet id
    queue.arrived(fresh)
    queue.confirm(old)
    assert acked == []
    queue.confirm(fresh)
    assert acked == [5]


def _reading(station: str, parameter: str, minute: int) -> Reading:
    return Reading(station_id=station, parameter=parameter, value=1.0, unit="mg/L", ts=NOW + timedelta(minutes=minute), status=Status.MEASURING)


def test_store_counts_split_new_from_duplicates_per_station() -> None:
    batch = [_reading("A", "COD", 0), _reading("A", "COD", 1), _reading("A", "COD", 1), _reading("B", "COD", 0)]
    new = [batch[0], batch[1]]

    counts = store_counts(batch, new, NOW)

    hour = hour_of(NOW)
    assert counts == {(hour, "A", "stored", ""): 2, (hour, "A", "duplicate", ""): 1, (hour, "B", "duplicate", ""): 1}


def test_delivery_counts_drain_and_restore() -> None:
    counts = DeliveryCounts()
    counts.add("A", "received", at=NOW)
    counts.add("A", "deadlettered", 2, reason="bad_unit", at=NOW)
    counts.add("A", "late", 0, at=NOW)

    drained = counts.drain()
    assert drained == {(hour_of(NOW), "A", "received", ""): 1, (hour_of(NOW), "A", "deadlettered", "bad_unit"): 2}
    assert counts.drain() == {}
    counts.restore(drained)
    assert counts.drain() == drained
    assert counts.snapshot() == {"received": 1, "deadlettered:bad_unit": 2}


def test_replay_plan_sends_a_message_once_and_keeps_what_is_still_wrong() -> None:
    station = make_station("S1")
    body = payload(NOW - timedelta(minutes=1), COD=10.0, pH=(7.0, "09"))
    rows = [(1, topic("S1"), body, NOW, 1, "bad_status"), (2, topic("S1"), body, NOW, None, "unknown_station"),
            (3, topic("S2"), payload(NOW, COD=1.0), NOW, None, "unknown_station")]

    records, outcome = plan_replay(rows, {"S1": station}, Limits(), "readings")

    assert len(records) == 1 and records[0][:2] == ("readings", b"S1")
    assert [r["parameter"] for r in orjson.loads(records[0][2])["readings"]] == ["COD"]
    assert outcome == {1: "bad_status", 2: None, 3: "unknown_station"}


def test_replay_judges_event_time_against_the_original_receive_time() -> None:
    old_receipt = datetime.now(timezone.utc) - timedelta(days=3)
    rows = [(7, topic("S1"), payload(old_receipt - timedelta(minutes=1), COD=10.0), old_receipt, None, "unknown_station")]

    _records, outcome = plan_replay(rows, {"S1": make_station("S1")}, Limits(max_future=timedelta(minutes=5)), "readings")

    assert outcome == {7: None}


def test_sync_keeps_passwords_and_writes_private_files(tmp_path: Path) -> None:
    settings = Settings(run_dir=tmp_path)
    a, b = make_station("A1"), make_station("B1")
    sync(settings, {a.id: a})
    first = gateway_credentials(settings)["A1"]

    sync(settings, {b.id: b})

    creds = gateway_credentials(settings)
    assert creds["A1"] == first and creds["B1"].station_ids == ("B1",)
    assert credential_for(settings, "B1") == creds["B1"]
    assert credential_for(settings, "UNREGISTERED").username == "quantrac-test-gateway"  # type: ignore[union-attr]
    for name in ("credentials.json", "passwd", "acl"):
        assert stat.S_IMODE((tmp_path / "mosquitto" / name).stat().st_mode) == 0o600
    assert first.password not in (tmp_path / "mosquitto" / "passwd").read_text()
    reloaded = Settings(run_dir=tmp_path)
    assert reloaded.mqtt_username == "quantrac-bridge" and reloaded.mqtt_password is not None


def test_a_sync_that_does_not_ask_for_the_test_account_removes_it(tmp_path: Path) -> None:
    """What `make run` after `make test` in one folder does to the accounts: the test account goes."""
    station = make_station("A1")
    sync(Settings(run_dir=tmp_path, mqtt_test_account=True), {station.id: station})
    assert credential_of_tester(Settings(run_dir=tmp_path)) is not None

    sync(Settings(run_dir=tmp_path, mqtt_test_account=False), {station.id: station})

    assert credential_of_tester(Settings(run_dir=tmp_path)) is None
    assert "quantrac-test-gateway" not in (tmp_path / "mosquitto" / "acl").read_text()
    assert "quantrac-test-gateway" not in (tmp_path / "mosquitto" / "passwd").read_text()
    assert gateway_credentials(Settings(run_dir=tmp_path))["A1"].station_ids == ("A1",)

