"""The notifier passes an alert event it keeps failing on: three tries, then a quarantine row, then the next events."""

from __future__ import annotations

import psycopg
import pytest

from alerts import notifier
from alerts.notify.message import Notification
from quantrac.failures import Attempts
from quantrac.settings import Settings
from tests.alerts_support.helpers import apply, condition, new_station

pytestmark = pytest.mark.integration


def test_an_event_the_notifier_fails_on_is_quarantined_and_the_next_ones_are_sent(stack: Settings, db: psycopg.Connection) -> None:
    station = new_station(db)
    notifier.read_cursor(db)
    while notifier.poll_once(db, []):  # start after every event so far
        pass
    [poison] = apply(stack.pg_dsn, [condition(station.id, 150.0)])
    [after] = apply(stack.pg_dsn, [condition(station.id, 7.0, parameter="pH", limit=5.0)])
    sent: list[int] = []

    def wants(n: Notification) -> bool:
        if n.alert["id"] == poison["id"]:  # a bug of ours on this one event's content
            raise KeyError("zone")
        return True

    channel = notifier.Channel("test", lambda n: (sent.append(n.alert["id"]) or True, "ok"), wants)
    attempts = Attempts()
    for _ in range(2):  # the first tries fail and hold the cursor: nothing behind the event goes out yet
        with pytest.raises(KeyError):
            notifier.poll_once(db, [channel], attempts=attempts)
        assert sent == []
    assert notifier.poll_once(db, [channel], attempts=attempts) == 2  # third try: set aside, and the next event sent
    assert sent == [after["id"]]
    row = db.execute("SELECT reason, stage, station_id, message, payload_size, payload_sha256, kafka_topic FROM deadletters "
                     "WHERE stage = 'notifier' AND station_id = %s", (station.id,)).fetchone()
    assert row is not None
    reason, stage, station_id, message, size, sha, kafka_topic = row
    assert (reason, stage, station_id, kafka_topic) == ("quarantined", "notifier", station.id, None)
    assert "KeyError" in message and size > 0 and len(sha) == 64
