"""Generated garbage and valid data, interleaved, through the real bridge and TT10 watcher.

Hypothesis generates a corpus of MQTT payloads and TT10 files, most of them malformed in one
known way each; the test sends it in one go (MQTT QoS 1 and file drops interleaved) and checks
that the bridge and the watcher stay up, that every bad item is in the dead-letter topic with the
expected reason, and that every valid reading is stored. Items are matched to dead letters by a
unique marker: in the payload for MQTT, in the file name's facility code (plus the line number)
for TT10.
"""

from __future__ import annotations

import os
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

import orjson
import paho.mqtt.client as mqtt
import psycopg
import pytest
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from kafka import KafkaConsumer, TopicPartition

from ingest.producer import CONSUMER_OPTIONS
from ingest.tt10 import format_stamp
from quantrac.db import save_stations
from quantrac.domain import Station
from quantrac.mqtt_accounts import tester_credential as credential_of_tester
from quantrac.settings import Settings
from quantrac.wire import decode_deadletter
from tests.utils.builders import make_station, topic
from tests.utils.poll import wait_for
from tests.utils.processes import Process, stored_count

pytestmark = pytest.mark.integration

MALFORMED_TARGET = 1000
EXAMPLES, ITEMS_PER_EXAMPLE = 100, 8  # rounds of 800 items, about three quarters malformed, until the target
UNITS = {"COD": "mg/L", "pH": "-", "Flow": "m3/h"}
BASE = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=1)


@dataclass
class Item:
    """One thing to send and what must come of it."""

    kind: str  # "mqtt" or "tt10"
    marker: str
    topic_or_name: str
    body: bytes
    valid_readings: int
    reasons: list[tuple[int | None, str]] = field(default_factory=list)  # (index or line, reason) expected dead letters


# --------------------------------------------------------------------------- corpus strategies

_values = {"COD": st.floats(0, 1999, allow_nan=False), "pH": st.floats(0, 14, allow_nan=False),
           "Flow": st.floats(0, 4999, allow_nan=False)}
_bad_reading = st.sampled_from(["unknown_parameter", "bad_unit", "bad_value", "bad_status", "missing_value"])
_bad_message = st.sampled_from(["bad_json", "not_utf8", "schema", "no_offset", "future", "too_old",
                                "topic_mismatch", "unknown_station", "oversize", "empty"])
_hostile_text = st.one_of(
    st.text(st.characters(codec="utf-8", categories=["Cc", "Cf", "Zs"]), min_size=1, max_size=8),  # NUL, controls, format chars
    st.builds(lambda t, n: t * n, st.sampled_from(["\x00", "P", "\u200b"]), st.integers(100, 5000)),  # long strings
    st.text(max_size=6).map(lambda t: f"CO\x00D{t}"))
"""Text no registry holds: NUL and control characters, very long strings."""
_hostile_station_suffix = st.one_of(st.just(""), st.integers(100, 3000).map(lambda n: "S" * n),
                                    st.text(st.characters(categories=["Cf", "Co", "So"]), max_size=20))
"""What a topic may carry (Mosquitto refuses NUL and control characters in topics): long ids, format and private-use characters."""
_bad_line = st.sampled_from(["unknown_parameter", "bad_unit", "bad_value", "bad_status", "missing_value",
                             "bad_fields", "bad_time", "future", "too_old"])
_bad_file = st.sampled_from(["unknown_station", "bad_filename", "empty_file"])


def _good_reading(draw: st.DrawFn, parameter: str) -> dict[str, object]:
    status = draw(st.sampled_from(["00", "00", "01", "02"]))
    value = None if status != "00" and draw(st.booleans()) else draw(_values[parameter])
    return {"parameter": parameter, "value": value, "unit": UNITS[parameter], "status": status}


def _broken_reading(draw: st.DrawFn, reason: str) -> dict[str, object]:
    parameter = draw(st.sampled_from(sorted(UNITS)))
    good = {"parameter": parameter, "value": 1.0, "unit": UNITS[parameter], "status": "00"}
    if reason == "unknown_parameter":
        return {**good, "parameter": draw(st.one_of(st.sampled_from(["BOD5", "Hg", "cod", "PM2,5", ""]), _hostile_text))}
    if reason == "bad_unit":
        return {**good, "unit": draw(st.one_of(st.sampled_from(["kg", "ppm", "mg/m3", "%"]), _hostile_text.map(lambda t: "kg" + t)))}
    if reason == "bad_value":
        return {**good, "value": draw(st.one_of(st.text(max_size=6), st.booleans(), st.lists(st.integers(-1000, 1000), max_size=2)))}
    if reason == "bad_status":
        return {**good, "status": draw(st.one_of(st.sampled_from(["03", "0", "", "99", "0\x000"]), st.integers(3, 99)))}
    return {**good, "value": None, "status": "00"}


@st.composite
def mqtt_items(draw: st.DrawFn, station: Station, index: int) -> Item:
    marker = f"m{index:05d}{uuid.uuid4().hex[:6]}"
    ts = BASE + timedelta(seconds=index)
    params = draw(st.lists(st.sampled_from(sorted(UNITS)), min_size=1, max_size=3, unique=True))
    good = [_good_reading(draw, p) for p in params]
    mode = draw(st.sampled_from(["valid", "message", "reading", "message", "reading"]))
    body: dict[str, object] = {"ts": ts.isoformat(), "readings": good, "note": marker}
    if mode == "valid":
        return Item("mqtt", marker, topic(station.id), orjson.dumps(body), len(good))
    if mode == "reading":
        bad = [_broken_reading(draw, draw(_bad_reading)) for _ in range(draw(st.integers(1, 2)))]
        conflicting = draw(st.booleans())
        if conflicting:  # the same parameter again with another value: the later of the two is a conflict
            bad.append({**good[0], "value": float(good[0]["value"] or 0) + 1.0, "status": "00"})  # type: ignore[arg-type]
        readings = good + bad
        order = draw(st.permutations(range(len(readings))))
        shuffled = [readings[i] for i in order]
        # by position, not equality: a good value 0.0 equals a bad value False
        reasons = [(pos, _reading_reason(readings[i])) for pos, i in enumerate(order)
                   if len(good) <= i < len(good) + len(bad) - conflicting]
        if conflicting:
            reasons.append((max(order.index(0), order.index(len(readings) - 1)), "conflict"))
        return Item("mqtt", marker, topic(station.id), orjson.dumps({**body, "readings": shuffled}), len(good), sorted(reasons))
    return _bad_message_item(draw, station, marker, ts, body)


def _bad_message_item(draw: st.DrawFn, station: Station, marker: str, ts: datetime, body: dict[str, object]) -> Item:
    """A message refused whole, for one of the message-level reasons."""
    reason = draw(_bad_message)
    target = topic(station.id)
    raw: bytes
    if reason == "bad_json":
        raw = f'{{"ts": "{ts.isoformat()}", "note": "{marker}", "readings": ['.encode() + draw(st.text("{:,\"0123456789abc ", max_size=8)).encode()
    elif reason == "not_utf8":
        raw = b'{"note": "' + marker.encode() + b'", "x": "\xff\xfe' + draw(st.binary(max_size=8)) + b'"}'
    elif reason == "schema":
        raw = orjson.dumps(draw(st.sampled_from([{"ts": ts.isoformat(), "note": marker},
                                                 {"ts": ts.isoformat(), "note": marker, "readings": {"COD": 1}},
                                                 [marker, 1]])))
    elif reason == "no_offset":
        raw = orjson.dumps({**body, "ts": ts.replace(tzinfo=None).isoformat()})
    elif reason == "future":
        raw = orjson.dumps({**body, "ts": (datetime.now(timezone.utc) + timedelta(hours=draw(st.integers(1, 1000)))).isoformat()})
    elif reason == "too_old":
        raw = orjson.dumps({**body, "ts": (BASE - timedelta(days=draw(st.integers(731, 5000)))).isoformat()})
    elif reason == "topic_mismatch":
        raw = orjson.dumps({**body, "station_id": f"OTHER-{marker}"})
    elif reason == "unknown_station":
        target, raw = topic(f"U-{marker}{draw(_hostile_station_suffix)}"), orjson.dumps(body)
    elif reason == "empty":
        raw = orjson.dumps({**body, "readings": []})
    else:
        raw = orjson.dumps({**body, "pad": "x" * 70_000})
    return Item("mqtt", marker, target, raw, 0, [(None, reason)])


def _reading_reason(r: dict[str, object]) -> str:
    if r["parameter"] not in UNITS:
        return "unknown_parameter"
    if r["status"] not in ("00", "01", "02"):
        return "bad_status"
    if r["value"] is None:
        return "missing_value"
    if not isinstance(r["value"], float) or isinstance(r["value"], bool):
        return "bad_value"
    return "bad_unit"


def _tt10_line(symbol: str, value: str, unit: str, stamp: str, status: str) -> str:
    return "\t".join((symbol, value, unit, stamp, status))


@st.composite
def tt10_items(draw: st.DrawFn, station: Station, index: int) -> Item:
    marker = f"f{index:05d}{uuid.uuid4().hex[:6]}"
    stamp = format_stamp(BASE + timedelta(seconds=index))
    params = draw(st.lists(st.sampled_from(sorted(UNITS)), min_size=1, max_size=3, unique=True))
    lines: list[tuple[str, str | None]] = []
    for p in params:
        status = draw(st.sampled_from(["00", "01", "02"]))
        value = "" if status == "02" and draw(st.booleans()) else draw(st.sampled_from(["1", "7.10", "0.050", "42.0", "123.456"]))
        lines.append((_tt10_line(p, value, UNITS[p], stamp, status), None))
    mode = draw(st.sampled_from(["valid", "lines", "file", "lines", "file"]))
    name = f"HP_{marker}_{station.id}_{stamp}.txt"
    if mode == "file":
        reason = draw(_bad_file)
        if reason == "unknown_station":
            name = f"HP_{marker}_U-{marker}_{stamp}.txt"
        elif reason == "bad_filename":
            name = draw(st.sampled_from([f"HP_{marker}_{station.id}.txt", f"HP_{marker}_{station.id}_{stamp}.csv",
                                         f"HP_{marker}_{station.id}_99999999999999.txt"]))
        else:
            lines = []
        body = "".join(text + "\r\n" for text, _ in lines).encode()
        return Item("tt10", marker, name, body, 0, [(None, reason)])
    if mode == "lines":
        used = {p for p in params}
        for _ in range(draw(st.integers(1, 3))):
            reason = draw(_bad_line)
            p = draw(st.sampled_from(sorted(set(UNITS) - used) or ["COD"]))
            lines.append((_bad_tt10_line(draw, reason, p, stamp), reason))
        lines = [lines[i] for i in draw(st.permutations(range(len(lines))))]
    body = "".join(text + "\r\n" for text, _ in lines).encode()
    reasons = [(n, reason) for n, (_, reason) in enumerate(lines, start=1) if reason is not None]
    return Item("tt10", marker, name, body, len(params), reasons)


def _bad_tt10_line(draw: st.DrawFn, reason: str, p: str, stamp: str) -> str:
    if reason == "unknown_parameter":
        return _tt10_line(draw(st.sampled_from(["BOD5", "Hg", "TOC", "C\x00OD", "P" * 3000])), "1", "mg/L", stamp, "00")
    if reason == "bad_unit":
        return _tt10_line(p, "1", draw(st.sampled_from(["kg", "ppm"])), stamp, "00")
    if reason == "bad_value":
        return _tt10_line(p, draw(st.sampled_from(["1,5", "abc", "NaN", "1e999", "--1"])), UNITS[p], stamp, "00")
    if reason == "bad_status":
        return _tt10_line(p, "1", UNITS[p], stamp, draw(st.sampled_from(["03", "0", "x"])))
    if reason == "missing_value":
        return _tt10_line(p, "", UNITS[p], stamp, draw(st.sampled_from(["00", "01"])))
    if reason == "bad_fields":
        return draw(st.sampled_from([f"{p} 1 mg/L {stamp} 00", f"{p}\t1\t{UNITS[p]}\t{stamp}", f"{p}\t1\t{UNITS[p]}\t{stamp}\t00\textra"]))
    if reason == "bad_time":
        return _tt10_line(p, "1", UNITS[p], draw(st.sampled_from(["2025-01-15", "20251315103000", stamp[:-1]])), "00")
    when = datetime.now(timezone.utc) + timedelta(hours=2) if reason == "future" else BASE - timedelta(days=800)
    return _tt10_line(p, "1", UNITS[p], format_stamp(when), "00")


def build_corpus(station: Station) -> list[Item]:
    """At least MALFORMED_TARGET malformed items among valid ones, MQTT and TT10 interleaved, from Hypothesis."""
    corpus: list[Item] = []

    @hsettings(max_examples=EXAMPLES, database=None, phases=[Phase.generate], deadline=None,
               suppress_health_check=list(HealthCheck))
    @given(st.data())
    def collect(data: st.DataObject) -> None:
        for _ in range(ITEMS_PER_EXAMPLE):  # the same draws whatever was collected before (Hypothesis may replay)
            index = len(corpus)
            kind = data.draw(st.sampled_from(["mqtt", "mqtt", "tt10"]))
            corpus.append(data.draw(mqtt_items(station, index) if kind == "mqtt" else tt10_items(station, index)))

    while sum(1 for i in corpus if i.reasons) < MALFORMED_TARGET:
        collect()
    return corpus


# --------------------------------------------------------------------------- the run


@pytest.fixture()
def watch_dir(stack: Settings, pipeline: dict) -> Iterator[tuple[Path, Process]]:
    folder = stack.run_dir / "test-tt10" / f"fuzz-{uuid.uuid4().hex[:8]}"
    folder.mkdir(parents=True)
    log_dir = stack.run_dir / "test-logs" / os.environ.get("QUANTRAC_TEST_NAMESPACE", "test")
    watcher = Process("tt10-watch-fuzz", ["tt10", "watch", str(folder)], log_dir,
                      env={"QUANTRAC_TT10_POLL_S": "0.2", "QUANTRAC_TT10_SETTLE_S": "0.3", "QUANTRAC_REGISTRY_MISS_RELOAD_S": "0"})
    wait_for(lambda: (folder / "done").is_dir() or not watcher.alive(), timeout=30, what="the watcher to start")
    yield folder, watcher
    watcher.stop()


class DeadLetters:
    """Reads the dead-letter topic from where it ended before the test sent anything.

    The start offsets are taken with `end_offsets` before the first send and set with `seek`;
    records are read with `poll()`, which moves the position as it returns records. (The iterator
    API with `consumer_timeout_ms` moves positions lazily, record by record, a path in which this
    test's consumer missed records that the bridge's own dead-letter keeper -- a `poll()` consumer --
    stored; see `missing_from_topic` for the check that tells the two apart.)
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False, **CONSUMER_OPTIONS)
        self.partitions = [TopicPartition(settings.deadletter_topic, p)
                           for p in sorted(self.consumer.partitions_for_topic(settings.deadletter_topic))]
        self.start = self.consumer.end_offsets(self.partitions)
        self.consumer.assign(self.partitions)
        for tp, offset in self.start.items():
            self.consumer.seek(tp, offset)

    def poll(self) -> Iterator[dict[str, object]]:
        for records in self.consumer.poll(timeout_ms=500, max_records=2000).values():
            for record in records:
                yield decode_deadletter(record.value)

    def missing_from_topic(self, keys: set[tuple[str, int | None]], markers: dict[str, str]) -> set[tuple[str, int | None]]:
        """Which of `keys` are not in the topic at all (a product loss, not a reading problem): a fresh full read."""
        reader = KafkaConsumer(bootstrap_servers=self.settings.kafka_bootstrap, enable_auto_commit=False, **CONSUMER_OPTIONS)
        try:
            reader.assign(self.partitions)
            end = reader.end_offsets(self.partitions)
            for tp, offset in self.start.items():
                reader.seek(tp, offset)
            found: set[tuple[str, int | None]] = set()
            while any(reader.position(tp) < end[tp] for tp in self.partitions):
                for records in reader.poll(timeout_ms=1000).values():
                    found.update(k for k in (_key(decode_deadletter(r.value), markers) for r in records) if k is not None)
            return keys - found
        finally:
            reader.close()

    def lag(self) -> dict[int, int]:
        """Records in the topic this reader has not reached yet, by partition (for a timeout's message)."""
        end = self.consumer.end_offsets(self.partitions)
        return {tp.partition: end[tp] - self.consumer.position(tp) for tp in self.partitions if end[tp] > self.consumer.position(tp)}

    def close(self) -> None:
        self.consumer.close()


def _mqtt_client(settings: Settings) -> mqtt.Client:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311, client_id=f"quantrac-fuzz-{uuid.uuid4().hex[:8]}")
    credential = credential_of_tester(settings)
    if credential is not None:
        client.username_pw_set(credential.username, credential.password)
    client.max_inflight_messages_set(200)
    client.connect(settings.mqtt_host, settings.mqtt_port)
    client.loop_start()
    return client


def _key(body: dict[str, object], markers: dict[str, str]) -> tuple[str, int | None] | None:
    """(marker, index or line) of a dead letter, or None when it is not one of ours."""
    if body.get("source") == "tt10":
        name = str(body["topic"]).rsplit("/", 1)[-1]
        parts = name.split("_")
        marker = parts[1] if len(parts) > 1 else ""
        return (marker, body.get("index")) if marker in markers else None  # type: ignore[return-value]
    text = (body.get("payload") or b"").decode("utf-8", errors="replace") + str(body.get("topic"))  # type: ignore[union-attr]
    for marker in _find_markers(text):
        if marker in markers:
            return marker, body.get("index")  # type: ignore[return-value]
    return None


def _find_markers(text: str) -> list[str]:
    return re.findall(r"m\d{5}[0-9a-f]{6}", text)


def test_interleaved_generated_garbage_is_dead_lettered_and_valid_readings_are_stored(
        pipeline: dict, watch_dir: tuple[Path, Process], stack: Settings, db: psycopg.Connection) -> None:
    folder, watcher = watch_dir
    station = make_station()
    save_stations(db, {station.id: station})
    corpus = build_corpus(station)
    malformed = [i for i in corpus if i.reasons]
    assert len(malformed) >= MALFORMED_TARGET and len(corpus) > len(malformed)
    assert {i.kind for i in malformed} == {"mqtt", "tt10"} and {i.kind for i in corpus if not i.reasons} == {"mqtt", "tt10"}

    expected = {(i.marker, index): reason for i in corpus for index, reason in i.reasons}
    markers = {i.marker: i.kind for i in corpus}
    dead_letters = DeadLetters(stack)
    client = _mqtt_client(stack)
    try:
        last = None
        for item in corpus:
            if item.kind == "mqtt":
                last = client.publish(item.topic_or_name, item.body, qos=1)
            else:
                part = folder / f".{item.topic_or_name}.part"
                part.write_bytes(item.body)
                os.replace(part, folder / item.topic_or_name)
        assert last is not None
        last.wait_for_publish(timeout=60)
    finally:
        client.disconnect()
        client.loop_stop()

    seen: dict[tuple[str, int | None], str] = {}

    def all_dead_letters_seen() -> bool:
        for body in dead_letters.poll():
            key = _key(body, markers)
            if key is not None:
                assert body["reason"] and body["message"] and body["received_at"]
                seen[key] = body["reason"]
        return expected.keys() <= seen.keys()

    try:
        wait_for(all_dead_letters_seen, timeout=480, interval=0.2,
                 what=f"{len(expected)} dead letters (missing: {sorted(set(expected) - set(seen))[:10]})")
    except AssertionError as exc:
        lost = dead_letters.missing_from_topic(set(expected) - set(seen), markers)
        raise AssertionError(f"{exc}; {len(set(expected) - set(seen))} missing, of which not in the dead-letter topic at all: "
                             f"{len(lost)} {sorted(lost)[:10]}; unread records by partition: {dead_letters.lag()}") from None
    finally:
        dead_letters.close()
    wrong = {k: (seen[k], reason) for k, reason in expected.items() if seen[k] != reason}
    assert not wrong, f"reason mismatch (got, expected): {dict(list(wrong.items())[:10])}"
    assert not set(seen) - set(expected), f"unexpected dead letters: {sorted(set(seen) - set(expected))[:10]}"

    valid = sum(i.valid_readings for i in corpus)
    wait_for(lambda: stored_count(db, station.id) == valid, timeout=120, interval=0.5,
             what=f"{valid} valid readings stored")
    wait_for(lambda: not [p for p in folder.iterdir() if p.is_file()], timeout=60, what="the drop folder emptied")
    filed = [p.name for sub in ("done", "rejected") for p in (folder / sub).iterdir() if not p.name.endswith(".reason")]
    assert sorted(filed) == sorted(i.topic_or_name for i in corpus if i.kind == "tt10")
    for name, proc in (("bridge", pipeline["bridge"]), ("worker", pipeline["worker"]), ("watcher", watcher)):
        assert proc.alive(), f"{name} died:\n{proc.tail()}"
