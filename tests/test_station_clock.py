"""A gateway clock behind or stuck raises `station_clock`; a backlog being resent, a normal delivery's jitter or a
station that stamps hourly means never does; both station-wide alerts resolve through the lifecycle's clear hold.

Deliveries go through `processors.liveness.seen` as the worker makes them, and the conditions through the alert
lifecycle (`alerts.lifecycle`), so what is asserted is the alert a duty officer would see."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from alerts import lifecycle
from alerts.rules import Condition
from bench.detection import delivery_order, run_quantrac, score
from ingest.scenarios import Incident, generate
from processors import liveness, station_clock
from quantrac.domain import Station
from quantrac.registry import load_registry
from quantrac.settings import get_settings
from tests.utils.builders import make_station

T0 = datetime(2026, 11, 29, 3, 0, tzinfo=timezone.utc)
BOUND_S = 1800.0
HOLD_S = 900.0
POLICY = lifecycle.Policy(clear_hold=timedelta(seconds=HOLD_S))


@dataclass
class Feed:
    """One station's deliveries through liveness and the alert lifecycle, keyed by rule."""

    station: Station
    entry: dict[str, Any] | None = None
    alerts: dict[str, lifecycle.AlertState] = field(default_factory=dict)
    opened: list[tuple[str, datetime, Condition]] = field(default_factory=list)
    resolved: list[tuple[str, datetime]] = field(default_factory=list)

    def deliver(self, event_ts: datetime, received_at: datetime) -> list[Condition]:
        self.entry, found = liveness.seen(self.entry, self.station, event_ts, received_at, BOUND_S, HOLD_S)
        for c in found:
            self._apply(c, received_at)
        return found

    def silent_until(self, now: datetime) -> None:
        assert self.entry is not None
        for _, entry, c in liveness.overdue([(self.station.id, self.entry)], {self.station.id: self.station}, now, 60):
            self.entry = entry
            self._apply(c, now)

    def _apply(self, c: Condition, now: datetime) -> None:
        state = self.alerts.get(c.rule)
        if state is None or state.status == "resolved":
            if c.active:
                self.alerts[c.rule], _ = lifecycle.open_alert(c, now)
                self.opened.append((c.rule, now, c))
            return
        if c.active:
            self.alerts[c.rule], _ = lifecycle.repeat(state, c, now)
            return
        self.alerts[c.rule], event = lifecycle.observe_clear(state, c, POLICY, now)
        if event is not None:
            self.resolved.append((c.rule, now))

    def status(self, rule: str) -> str | None:
        state = self.alerts.get(rule)
        return None if state is None else state.status


def _every(interval_s: int, start: datetime, count: int) -> list[datetime]:
    return [start + timedelta(seconds=interval_s * i) for i in range(count)]


def test_a_stuck_clock_raises_station_clock_with_the_fix_and_it_resolves_once_the_clock_is_set_right() -> None:
    feed = Feed(make_station("T-CLK", expected_interval_s=300))
    receipts = _every(300, T0, 40)
    for at in receipts[:20]:  # the clock stopped at T0: every message carries T0
        feed.deliver(T0, at)
    [(rule, opened_at, condition)] = feed.opened
    assert rule == "station_clock" and condition.parameter == "*" and condition.active
    # the lag passed the bound at T0+2100 s, then a bound's worth of deliveries showed no progress
    assert opened_at == T0 + timedelta(seconds=2100 + 1800)
    assert "T-CLK" in condition.message and "did not advance" in condition.message and "NTP" in condition.message
    assert "time zone" not in condition.message
    assert condition.value == (opened_at - T0).total_seconds() and condition.limit == BOUND_S
    assert feed.alerts["station_clock"].count == 2, "raised again a bound later, with the lag then"
    for at in receipts[20:]:  # set right: each message carries its own time
        feed.deliver(at - timedelta(seconds=5), at)
    assert feed.resolved == [("station_clock", receipts[20] + timedelta(seconds=HOLD_S))]
    assert feed.entry is not None and "clock" not in feed.entry


def test_a_clock_hours_behind_is_reported_and_a_stations_own_bound_counts() -> None:
    behind = timedelta(hours=2)
    feed = Feed(make_station("T-BEHIND", expected_interval_s=300))
    for at in _every(300, T0, 20):
        feed.deliver(at - behind, at)
    assert [(r, at) for r, at, _ in feed.opened] == [("station_clock", T0 + timedelta(seconds=1800))]
    assert "120 min behind" in feed.opened[0][2].message and "time zone" in feed.opened[0][2].message
    lenient = Feed(make_station("T-OWN", expected_interval_s=300).model_copy(update={"clock_lag_alert_s": 3 * 3600}))
    for at in _every(300, T0, 60):
        lenient.deliver(at - behind, at)
    assert lenient.opened == []


def test_a_clock_set_back_whole_hours_mid_stream_is_called_a_time_zone_error_and_one_that_stops_is_not() -> None:
    """A gateway that starts sending UTC marked +07:00 after two good hours leaves the station's newest time where it
    was, as a stopped clock does; its messages' own times running on with their arrival tell the two apart."""
    receipts = _every(300, T0, 36)
    set_back = Feed(make_station("T-SETBACK", expected_interval_s=300))
    stopped = Feed(make_station("T-STOPPED", expected_interval_s=300))
    for k, at in enumerate(receipts):
        set_back.deliver(at - timedelta(seconds=5) - (timedelta(hours=7) if k >= 24 else timedelta(0)), at)
        stopped.deliver(receipts[23] - timedelta(seconds=5) if k >= 24 else at - timedelta(seconds=5), at)
    [(_, _, zone)] = set_back.opened
    assert "did not advance" in zone.message and "stamped a whole 7 h behind" in zone.message
    assert "set back" in zone.message and "time zone" in zone.message and "NTP" not in zone.message
    [(_, _, stuck)] = stopped.opened
    assert "did not advance" in stuck.message and "NTP" in stuck.message and "time zone" not in stuck.message


def test_a_clock_behind_by_no_whole_hour_is_not_called_a_time_zone_error() -> None:
    feed = Feed(make_station("T-DRIFT", expected_interval_s=300))
    for at in _every(300, T0, 20):
        feed.deliver(at - timedelta(minutes=95), at)
    [(_, _, condition)] = feed.opened
    assert "95 min behind" in condition.message and "NTP" in condition.message and "time zone" not in condition.message


def test_the_bound_is_never_under_three_expected_intervals() -> None:
    hourly = make_station("T-HOURLY", expected_interval_s=3600)
    assert station_clock.bound_s(hourly, BOUND_S) == 3 * 3600
    feed = Feed(hourly)
    for at in _every(3600, T0, 48):  # hourly means stamped at the hour's start, delivered at its end
        feed.deliver(at - timedelta(hours=1), at)
    assert feed.opened == []


@settings(max_examples=200, deadline=None)
@given(outage_s=st.integers(60, 3 * 86400), speedup=st.floats(2.0, 1000.0), interval_s=st.sampled_from([60, 300, 900]),
       jitter=st.lists(st.integers(0, 240), min_size=1, max_size=50))
def test_a_backlog_resent_faster_than_real_time_and_jittered_deliveries_never_raise_it(
        outage_s: int, speedup: float, interval_s: int, jitter: list[int]) -> None:
    """The station was cut off for `outage_s`, then resends its buffer `speedup` times faster than it was measured,
    then delivers live with a delay of up to 4 min."""
    feed = Feed(make_station("T-BACKLOG", expected_interval_s=interval_s))
    feed.deliver(T0, T0 + timedelta(seconds=1))
    back = T0 + timedelta(seconds=outage_s)
    buffered = _every(interval_s, T0 + timedelta(seconds=interval_s), outage_s // interval_s)
    for i, ts in enumerate(buffered):
        feed.deliver(ts, back + timedelta(seconds=i * interval_s / speedup))
    resumed = back + timedelta(seconds=len(buffered) * interval_s / speedup)
    for i, at in enumerate(_every(interval_s, resumed, 3 * 86400 // interval_s)):
        feed.deliver(at, at + timedelta(seconds=jitter[i % len(jitter)]))
    assert [r for r, _, _ in feed.opened if r == "station_clock"] == []


def test_a_station_back_from_silence_has_its_offline_alert_resolved_after_the_clear_hold() -> None:
    feed = Feed(make_station("T-BACK", expected_interval_s=300))
    feed.deliver(T0, T0)
    feed.silent_until(T0 + timedelta(hours=1))
    assert feed.status("station_offline") == "open"
    back = T0 + timedelta(hours=2)
    for at in _every(300, back, 6):
        feed.deliver(at, at)
    assert feed.resolved == [("station_offline", back + timedelta(seconds=HOLD_S))]
    assert feed.entry is not None and "back_since" not in feed.entry
    assert feed.deliver(back + timedelta(hours=1), back + timedelta(hours=1)) == []  # nothing more to say


def test_a_station_that_drops_out_again_within_the_hold_keeps_its_offline_alert_open() -> None:
    feed = Feed(make_station("T-FLAP", expected_interval_s=300))
    feed.deliver(T0, T0)
    feed.silent_until(T0 + timedelta(hours=1))
    back = T0 + timedelta(hours=2)
    feed.deliver(back, back)
    feed.silent_until(back + timedelta(minutes=10))  # gone again before the hold has passed
    assert feed.status("station_offline") == "open" and feed.resolved == []
    assert len(feed.opened) == 1, "the same alert, not a second one"
    again = back + timedelta(hours=1)
    for at in _every(300, again, 4):
        feed.deliver(at, at)
    assert feed.resolved == [("station_offline", again + timedelta(seconds=HOLD_S))]


def test_entries_read_back_after_a_restart_still_clear_the_open_alerts_they_do_not_keep() -> None:
    """The store keeps an entry's times and offline flag only: the open alerts say what is left to clear."""
    station = make_station("T-RESTART", expected_interval_s=300)
    stored = {"T-RESTART": {"event_ts": T0.isoformat(), "received_at": T0.isoformat(), "offline": False}}
    open_keys = {("T-RESTART", "*", "station_offline"), ("T-RESTART", "*", "station_clock")}
    restart = T0 + timedelta(minutes=10)
    [entry] = liveness.resume(stored, open_keys, restart).values()
    assert entry["back_since"] == restart.isoformat() and entry["clock"] == {"alerted": True}
    feed = Feed(station, entry=entry)
    feed.alerts = {rule: lifecycle.AlertState(rule=rule, status="open", count=1, last_ts=T0 - timedelta(hours=1),
                                              last_value=1.0, peak_value=1.0, limit=0.0)
                   for rule in ("station_offline", "station_clock")}
    for at in _every(300, restart, 5):
        feed.deliver(at - timedelta(seconds=5), at)
    assert sorted(rule for rule, _ in feed.resolved) == ["station_clock", "station_offline"]
    assert liveness.resume(stored, set(), restart) == stored, "nothing open, nothing added"


def test_the_simulators_clock_faults_are_caught_by_the_detection_benchs_harness_and_nothing_else_fires() -> None:
    """The detection bench scores `station_clock` on the simulator's `clock` incidents: a clock stopped for 3 h and one
    7 h behind for 5 h, among 3 days of one station's normal data, give one alarm each, raised within the incident
    (a stopped time passes the 30-min bound after 30 min and is watched for 30 min more), and no other alarm."""
    s = get_settings()
    station_id = "HD-DAIAN-WW01"
    stations = {station_id: load_registry(s.registry_file, s.limits_dir)[station_id]}
    start, h = datetime(2026, 11, 3, tzinfo=timezone.utc), timedelta(hours=1)
    incidents = [Incident(station_id, None, "clock", start + 30 * h, start + 33 * h, 0.0),
                 Incident(station_id, None, "clock", start + 40 * h, start + 45 * h, 7.0)]
    messages = delivery_order(generate(stations, start, timedelta(days=3), 7, incidents))
    alarms, _ = run_quantrac(stations, messages, timedelta(seconds=60), s.offline_grace_s)
    during = [a for a in alarms if any(i.start <= a.at <= i.end + h for i in incidents)]
    assert [(a.rule, a.parameter) for a in during] == [("station_clock", "*")] * 2
    assert all(i.start + timedelta(seconds=2 * s.clock_lag_alert_s) <= a.at <= i.end for a, i in zip(during, incidents, strict=True))
    clock = score(alarms, incidents, timedelta(minutes=30))["per_kind"]["clock"]
    assert (clock["recall"], clock["precision"]) == (1.0, 1.0)
