"""The scenario generator and simulator, without a broker: determinism, patterns, incidents, outputs."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.payload import Limits, decode_message
from ingest.scenarios import (
    BASELINES,
    CLOCK_KINDS,
    CLOCK_MARGIN,
    Incident,
    Message,
    apart_from,
    generate,
    ground_truth,
    load_factor,
    random_incidents,
    reference_limit,
    station_baseline,
    with_clock_faults,
)
from ingest.simulator import (
    Injection,
    TT10Sink,
    in_delivery_order,
    mqtt_payload,
    parse_injection,
    plan_interval,
    play,
    run,
    run_processes,
    split_stations,
    topic_for,
    tt10_file,
    write_ground_truth,
)
from ingest.tt10 import parse_content, parse_filename
from ingest.tt10_watch import judge_file
from quantrac.domain import Status
from quantrac.registry import load_registry
from quantrac.settings import get_settings

SETTINGS = get_settings()
STATIONS = load_registry(SETTINGS.registry_file, SETTINGS.limits_dir)
WW = "HD-DAIAN-WW01"
START = datetime(2026, 11, 23, 17, 0, tzinfo=timezone.utc)  # Tuesday 00:00 in Hanoi
DAY = timedelta(days=1)


def stream(incidents: tuple[Incident, ...] = (), seed: int = 1, span: timedelta = DAY, only: str | None = WW) -> list[Message]:
    stations = {only: STATIONS[only]} if only else STATIONS
    return list(generate(stations, START, span, seed, list(incidents)))


def series(messages: list[Message], parameter: str) -> list[tuple[datetime, float | None, Status]]:
    return [(m.ts, r.value, r.status) for m in messages for r in m.readings if r.parameter == parameter]


def test_same_seed_same_stream_and_other_seed_differs() -> None:
    a, b, c = stream(seed=3, span=timedelta(hours=2)), stream(seed=3, span=timedelta(hours=2)), stream(seed=4, span=timedelta(hours=2))
    assert a == b and a != c


def test_messages_follow_the_registry_interval_in_event_time_order() -> None:
    messages = stream(only=None)
    assert all(m.ts.tzinfo is not None and START <= m.ts < START + DAY for m in messages)
    assert [m.ts for m in messages] == sorted(m.ts for m in messages)
    mine = [m for m in messages if m.station_id == WW]
    assert len(mine) == 288 and {b.ts - a.ts for a, b in zip(mine, mine[1:], strict=False)} == {timedelta(minutes=5)}
    assert {r.parameter for r in mine[0].readings} == set(STATIONS[WW].parameters)
    assert {m.station_id for m in messages} == set(STATIONS)


def test_normal_operation_stays_near_baseline_under_limits_with_shift_pattern() -> None:
    messages = stream()
    cod = [v for _, v, s in series(messages, "COD")]
    limit = STATIONS[WW].parameters["COD"].limit.high  # type: ignore[union-attr]
    assert all(v is not None and 0 <= v < limit for v in cod)
    mean = station_baseline("COD", STATIONS[WW].parameters["COD"]).mean
    assert abs(sum(cod) / len(cod) - mean) < 0.2 * mean  # type: ignore[operator]
    flow = series(messages, "Flow")
    day = [v for ts, v, _ in flow if load_factor(ts) == 1.0]
    night = [v for ts, v, _ in flow if load_factor(ts) < 1.0]
    assert sum(day) / len(day) > 1.15 * sum(night) / len(night)  # type: ignore[arg-type]


def test_normal_operation_opens_no_early_warning_at_any_seed_station() -> None:
    """A station whose generic baseline would sit near its strict limit (Đại An, column A) runs lower, so `make run`
    shows no alert before an incident."""
    messages = list(generate(STATIONS, START, timedelta(days=7), seed=3))
    over = [(m.station_id, r.parameter, r.value) for m in messages for r in m.readings
            if (limit := STATIONS[m.station_id].parameters[r.parameter].limit) is not None and limit.low is None
            and limit.high is not None and r.value is not None and r.value > 0.8 * limit.high]
    assert over == []
    daian = [r.value for m in messages if m.station_id == WW for r in m.readings if r.parameter == "COD"]
    assert max(daian) > 0.5 * STATIONS[WW].parameters["COD"].limit.high  # type: ignore[operator, union-attr]  # still a working plant's level


def test_value_incidents_have_the_effect_the_ground_truth_states() -> None:
    limit = reference_limit(STATIONS[WW].parameters["COD"], BASELINES["COD"])
    nh4_mean = station_baseline("NH4", STATIONS[WW].parameters["NH4"]).mean
    h = timedelta(hours=1)
    incidents = [Incident(WW, "COD", "exceedance", START + 2 * h, START + 3 * h, 1.5),
                 Incident(WW, "NH4", "spike", START + 4 * h, START + 5 * h, 8.0),
                 Incident(WW, "TSS", "drift", START + 6 * h, START + 12 * h, 1.4),
                 Incident(WW, "TN", "spill", START + 14 * h, START + 20 * h, 3.0)]
    messages = stream(incidents)
    cod = [(ts, v) for ts, v, _ in series(messages, "COD")]
    assert all(v > limit for ts, v in cod if incidents[0].active(ts))  # type: ignore[operator]
    assert all(v < limit for ts, v in cod if not incidents[0].active(ts))  # type: ignore[operator]
    nh4 = [v for ts, v, _ in series(messages, "NH4") if incidents[1].active(ts)]
    assert nh4[0] == pytest.approx(nh4_mean * 8, rel=0.01) and max(nh4[1:]) < nh4_mean * 3  # type: ignore[type-var]
    tss = [v for ts, v, _ in series(messages, "TSS") if incidents[2].active(ts)]
    tss_limit = reference_limit(STATIONS[WW].parameters["TSS"], BASELINES["TSS"])
    assert tss[0] < tss_limit < tss[-1] and tss[-1] == pytest.approx(1.4 * tss_limit, rel=0.15)  # type: ignore[operator]
    tn = [v for ts, v, _ in series(messages, "TN") if incidents[3].active(ts)]
    tn_limit = reference_limit(STATIONS[WW].parameters["TN"], BASELINES["TN"])
    assert tn[0] > 2 * tn_limit and tn[-1] < tn_limit  # type: ignore[operator]
    truth = [ground_truth(i, STATIONS) for i in incidents]
    assert truth[0]["expected"] == {"value": round(limit * 1.5, 6), "limit": limit, "above_limit": True, "rule": "exceedance"}
    assert [t["kind"] for t in truth] == ["exceedance", "spike", "drift", "spill"]


def test_status_incidents() -> None:
    h = timedelta(hours=1)
    incidents = [Incident(WW, "pH", "calibration", START + h, START + 2 * h),
                 Incident(WW, "COD", "fault", START + 3 * h, START + 4 * h),
                 Incident(WW, "TSS", "stuck", START + 5 * h, START + 7 * h)]
    messages = stream(incidents)
    ph = series(messages, "pH")
    assert {s for ts, _, s in ph if incidents[0].active(ts)} == {Status.CALIBRATING}
    assert {s for ts, _, s in ph if not incidents[0].active(ts)} == {Status.MEASURING}
    assert {(v, s) for ts, v, s in series(messages, "COD") if incidents[1].active(ts)} == {(None, Status.FAULT)}
    stuck = [v for ts, v, _ in series(messages, "TSS") if incidents[2].active(ts)]
    assert len(stuck) == 24 and len(set(stuck)) == 1
    assert len({v for ts, v, _ in series(messages, "TSS") if not incidents[2].active(ts)}) > 100


def test_delivery_incidents() -> None:
    h = timedelta(hours=1)
    silent = Incident(WW, None, "silent", START + h, START + 3 * h)
    late = Incident(WW, None, "late", START + 5 * h, START + 6 * h)
    shuffled = Incident(WW, None, "out_of_order", START + 8 * h, START + 12 * h)
    messages = stream([silent, late, shuffled])
    assert not [m for m in messages if silent.active(m.ts)] and len(messages) == 288 - 24
    assert {m.deliver_at for m in messages if late.active(m.ts)} == {late.end}
    delivered = list(in_delivery_order(messages))
    assert sorted(delivered, key=lambda m: m.ts) == messages
    assert [m.deliver_at for m in delivered] == sorted(m.deliver_at for m in delivered)
    window = [m.ts for m in delivered if shuffled.active(m.ts)]
    assert window != sorted(window)
    assert ground_truth(silent, STATIONS)["expected"] == {"no_data": True, "rule": "silent_station"}


def test_clock_incidents_stamp_a_stopped_or_early_time_and_deliver_on_time() -> None:
    h = timedelta(hours=1)
    stopped = Incident(WW, None, "clock", START + h, START + 3 * h, 0.0)
    early = Incident(WW, None, "clock", START + 5 * h, START + 6 * h, 7.0)
    plain = stream()
    messages = stream((stopped, early))
    assert len(messages) == len(plain) == 288
    taken = [m.deliver_at for m in plain]  # no delivery incident: each message is delivered when taken
    assert [m.deliver_at for m in messages] == taken
    in_stopped = [m for m, at in zip(messages, taken, strict=True) if stopped.active(at)]
    in_early = [m for m, at in zip(messages, taken, strict=True) if early.active(at)]
    assert len(in_stopped) == 24 and {m.ts for m in in_stopped} == {stopped.start.replace(microsecond=0)}
    assert len(in_early) == 12 and all(m.deliver_at - m.ts == 7 * h for m in in_early)
    assert all(r.ts == m.ts for m in messages for r in m.readings)
    assert [r.value for m in messages for r in m.readings] == [r.value for m in plain for r in m.readings]
    assert all(m.ts == at for m, at in zip(messages, taken, strict=True) if not (stopped.active(at) or early.active(at)))
    assert ground_truth(stopped, STATIONS)["expected"] == {"stamped": "stopped at the start", "rule": "station_clock"}
    assert ground_truth(early, STATIONS)["expected"] == {"stamped": "7 h behind", "rule": "station_clock"}


def test_random_incidents_are_seeded_and_cover_kinds() -> None:
    a = random_incidents(STATIONS, START, 7 * DAY, seed=5)
    assert a == random_incidents(STATIONS, START, 7 * DAY, seed=5) != random_incidents(STATIONS, START, 7 * DAY, seed=6)
    assert len({i.kind for i in a}) >= 8 and all(START <= i.start <= i.end <= START + 7 * DAY for i in a)
    assert "clock" not in {i.kind for i in a}  # drawn apart: nothing else could be told under a wrong clock
    clocks = random_incidents(STATIONS, START, 7 * DAY, seed=5, kinds=CLOCK_KINDS)
    assert {i.kind for i in clocks} == {"clock"} and {i.magnitude for i in clocks} == {0.0, 7.0}
    assert all(i.parameter is None and i.end - i.start <= 12 * timedelta(hours=1) for i in clocks)
    assert all(i.end - i.start >= 2 * timedelta(hours=1) for i in clocks if i.end < START + 7 * DAY)
    alone = apart_from(clocks, a, timedelta(hours=1))
    assert 0 < len(alone) < len(clocks)
    assert not [(c, o) for c in alone for o in a + alone if o != c and o.station == c.station
                and o.start < c.end + timedelta(hours=1) and c.start < o.end + timedelta(hours=1)]
    both = with_clock_faults(a, STATIONS, START, 7 * DAY, seed=5, per_station_per_day=2.0)
    assert [i for i in both if i.kind != "clock"] == a and both == sorted(both, key=lambda i: (i.start, i.station))
    added = [i for i in both if i.kind == "clock"]
    assert added == apart_from(random_incidents(STATIONS, START, 7 * DAY, seed=6, kinds=CLOCK_KINDS), a, CLOCK_MARGIN)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32), hours=st.integers(1, 3))
def test_every_generated_message_passes_the_bridge_validation(seed: int, hours: int) -> None:
    start = datetime.now(timezone.utc) - timedelta(hours=hours)
    incidents = random_incidents(STATIONS, start, timedelta(hours=hours), seed, per_station_per_day=24)
    for m in generate(STATIONS, start, timedelta(hours=hours), seed, incidents):
        batch = decode_message(topic_for(m.station_id), mqtt_payload(m), STATIONS, start + timedelta(hours=hours), Limits())
        assert batch.rejections == [] and batch.readings == m.readings
        name, data = tt10_file(m)
        verdict = judge_file(name, data, STATIONS, {}, start + timedelta(hours=hours), Limits())
        assert verdict.rejected_lines == [] and verdict.readings == m.readings


def test_tt10_output_is_a_valid_file_named_by_convention() -> None:
    m = stream(span=timedelta(minutes=5))[0]
    name, data = tt10_file(m)
    assert name.startswith(f"HP_SIM_{WW}_") and name.endswith(".txt")
    assert parse_content(data).ok and data.endswith(b"\r\n")


def test_rate_plan_and_injection_parsing() -> None:
    per_cycle = sum(len(s.parameters) for s in STATIONS.values())
    assert plan_interval(STATIONS, None, 1.0) is None
    assert plan_interval(STATIONS, per_cycle, 1.0) == timedelta(seconds=1)
    assert plan_interval(STATIONS, per_cycle, 60.0) == timedelta(minutes=1)
    assert parse_injection("S:COD") == Injection("S", "COD") and parse_injection("S:COD:250") == Injection("S", "COD", 250.0)
    for bad in ("S", "S:COD:x", "a:b:c:d"):
        with pytest.raises(ValueError, match="--inject"):
            parse_injection(bad)


class ListSink:
    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.closed = False

    def send(self, message: Message) -> None:
        self.messages.append(message)

    def close(self) -> None:
        self.closed = True


def test_run_plays_the_past_day_sped_up_with_injection_and_ground_truth(tmp_path: Path) -> None:
    sink = ListSink()
    now = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)
    sent, readings = run({WW: STATIONS[WW]}, sink=sink, duration=0.3, speedup=86400 / 0.3, seed=1,
                         injections=[Injection(WW, "COD", 999.0)], ground_truth_path=tmp_path / "gt.jsonl", now=now)
    assert sink.closed and sent == len(sink.messages) == 288 and readings == 288 * len(STATIONS[WW].parameters)
    assert sink.messages[0].ts >= now - DAY and sink.messages[-1].ts < now
    assert {v for _, v, _ in series(sink.messages, "COD")} == {999.0}
    (truth,) = [orjson.loads(line) for line in (tmp_path / "gt.jsonl").read_bytes().splitlines()]
    assert (truth["station"], truth["parameter"], truth["kind"], truth["expected"]["value"]) == (WW, "COD", "exceedance", 999.0)


def test_play_paces_by_event_time_and_stops_on_request() -> None:
    messages = stream(span=timedelta(hours=1))
    stop = threading.Event()
    ticks = iter(range(10**6))
    sink = ListSink()
    stop.set()
    assert play(messages, sink, start=START, speedup=1.0, stop=stop, clock=lambda: float(next(ticks))) == (0, 0)
    assert write_ground_truth(Path("/dev/null"), [], STATIONS) == 0


@settings(max_examples=50, deadline=None)
@given(n=st.integers(min_value=1, max_value=12), keep=st.sets(st.sampled_from(sorted(STATIONS)), min_size=1))
def test_split_stations_covers_each_station_once_and_balances_parameters(n: int, keep: set[str]) -> None:
    stations = {k: STATIONS[k] for k in keep}
    groups = split_stations(stations, n)
    assert len(groups) == min(n, len(stations)) and all(groups)
    assert sorted(k for g in groups for k in g) == sorted(stations)
    loads = [sum(len(s.parameters) for s in g.values()) for g in groups]
    assert max(loads) - min(loads) <= max(len(s.parameters) for s in stations.values())


def test_run_processes_plays_every_station_once_across_processes(tmp_path: Path) -> None:
    """Three forked publishers (TT10 output, so the parent can see what each child wrote) play the
    same two hours as one process would: every station, every interval, once; one ground truth."""
    now = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)
    span_s, duration = 7200, 0.5
    out = tmp_path / "drop"
    sent, readings = run_processes(3, STATIONS, make_sink=lambda: TT10Sink(out), duration=duration, speedup=span_s / duration,
                                   seed=1, injections=[Injection(WW, "COD", 999.0)], ground_truth_path=tmp_path / "gt.jsonl", now=now)
    names = [parse_filename(f.name) for f in out.iterdir()]
    expected = {k: span_s // s.expected_interval_s for k, s in STATIONS.items()}
    assert sent == len(names) == sum(expected.values())
    assert readings == sum(n * len(STATIONS[k].parameters) for k, n in expected.items())
    assert {k: sum(1 for x in names if x.station == k) for k in STATIONS} == expected
    assert all(now - timedelta(seconds=span_s) <= x.file_time < now for x in names)
    (truth,) = [orjson.loads(line) for line in (tmp_path / "gt.jsonl").read_bytes().splitlines()]
    assert (truth["station"], truth["parameter"], truth["expected"]["value"]) == (WW, "COD", 999.0)
