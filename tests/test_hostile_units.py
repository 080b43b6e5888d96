"""Hostile input, pure parts: safe text, bounded dead letters, failure classes, repeat-folding logs,
empty messages and conflicting duplicates. The end-to-end half is tests/test_hostile_input_e2e.py."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from datetime import datetime, timedelta, timezone

import orjson
import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka import errors as kafka_errors

from ingest.payload import Limits, MessageRejected, Rejection, cap_rejections, decode_message
from ingest.tt10 import format_stamp
from ingest.tt10_watch import judge_file
from processors.pipeline import BatchProcessor
from quantrac.failures import Attempts, RateLimitedLog, is_record_failure, store_fix
from quantrac.safe_text import TEXT_LIMIT, safe_text
from quantrac.wire import DEADLETTER_PAYLOAD_CAP, QUARANTINE_HEAD, decode_deadletter, encode_deadletter, encode_quarantine
from tests.utils.builders import make_station, topic

NOW = datetime(2026, 11, 29, 14, 5, tzinfo=timezone.utc)
STATION = make_station("HD-HOSTILE-01")
STATIONS = {STATION.id: STATION}
KAFKA_MAX_REQUEST = 1_048_576

# --------------------------------------------------------------------------- safe text


@given(st.text())
def test_safe_text_is_always_storable_and_encodable(text: str) -> None:
    safe = safe_text(text)
    assert "\x00" not in safe
    safe.encode("utf-8")  # no lone surrogate left
    orjson.dumps(safe)
    assert len(safe) <= TEXT_LIMIT + 40 + 6 * TEXT_LIMIT  # clipped first, then each kept character at most 6 wide


def test_safe_text_shows_what_it_escaped_and_cut() -> None:
    assert safe_text("pH\x00") == "pH\\u0000"
    assert safe_text("file\udcff.txt") == "file\\udcff.txt"
    assert safe_text("x" * 1500).endswith("… (+500 characters)")
    assert safe_text("COD") == "COD"


# --------------------------------------------------------------------------- bounded dead letters


@settings(max_examples=60, deadline=None)
@given(size=st.integers(0, 3 * DEADLETTER_PAYLOAD_CAP), text=st.text(max_size=3000))
def test_a_dead_letter_always_encodes_within_kafkas_request_size(size: int, text: str) -> None:
    payload = (text.encode("utf-8", "surrogatepass") * (size // max(len(text), 1) + 1))[:size] if text else b"\x00" * size
    raw = encode_deadletter(topic=f"quantrac/v1/stations/{text}/readings", payload=payload, reason="oversize", message=text * 50,
                            received_at=NOW, station_id=text, parameter=text, index=3)
    assert len(raw) < KAFKA_MAX_REQUEST * 0.5
    body = decode_deadletter(raw)
    assert body["payload_size"] == len(payload) and body["payload_sha256"] == hashlib.sha256(payload).hexdigest()
    assert body["truncated"] == (len(payload) > DEADLETTER_PAYLOAD_CAP)
    assert body["payload"] == payload[:DEADLETTER_PAYLOAD_CAP]


def test_the_largest_allowed_cap_still_fits_kafka() -> None:
    from quantrac.settings import KAFKA_SAFE_PAYLOAD_BYTES
    raw = encode_deadletter(topic="t" * 70_000, payload=b"\xff" * (10 * KAFKA_SAFE_PAYLOAD_BYTES), reason="oversize",
                            message="m" * 70_000, received_at=NOW, station_id="s" * 70_000, parameter="p" * 70_000,
                            cap=KAFKA_SAFE_PAYLOAD_BYTES)
    assert len(raw) < KAFKA_MAX_REQUEST - 64 * 1024


def test_a_quarantine_record_keeps_head_size_hash_and_error() -> None:
    raw = b"\x00poison" * 100_000
    body = decode_deadletter(encode_quarantine(stage="worker", raw=raw, error="DataError: NUL", received_at=NOW))
    assert body["reason"] == "quarantined" and body["stage"] == "worker" and body["truncated"] is True
    assert body["payload"] == raw[:QUARANTINE_HEAD] and body["payload_size"] == len(raw)
    assert body["payload_sha256"] == hashlib.sha256(raw).hexdigest() and "DataError: NUL" in body["message"]
    assert base64.b64decode(orjson.loads(encode_quarantine(stage="x", raw=b"", error="e", received_at=NOW))["payload_b64"]) == b""


# --------------------------------------------------------------------------- failure classes


@pytest.mark.parametrize(("exc", "record"), [
    (kafka_errors.MessageSizeTooLargeError("2.6 MB"), True),
    (kafka_errors.RecordListTooLargeError(), True),
    (kafka_errors.KafkaTimeoutError(), False),
    (kafka_errors.NoBrokersAvailable(), False),
    (kafka_errors.NotLeaderForPartitionError(), False),
    (psycopg.errors.CharacterNotInRepertoire("NUL"), True),
    (psycopg.errors.NumericValueOutOfRange(), True),
    (psycopg.errors.UniqueViolation(), True),
    (psycopg.OperationalError("connection refused"), False),
    (psycopg.errors.AdminShutdown(), False),
    (psycopg.errors.UndefinedTable(), False),
    (ConnectionRefusedError(), False),
    (KeyError("COD"), True),
    (ValueError("bad"), True),
])
def test_failures_are_told_apart(exc: BaseException, record: bool) -> None:
    assert is_record_failure(exc) is record


@pytest.mark.parametrize(("exc", "migrate"), [
    (psycopg.errors.UndefinedTable('relation "station_liveness" does not exist'), True),
    (psycopg.errors.UndefinedFunction("function quantrac_ensure_partitions(date, date) does not exist"), True),
    (psycopg.errors.UndefinedColumn(), True),
    (psycopg.OperationalError("connection refused"), False),
    (psycopg.errors.AdminShutdown(), False),
])
def test_an_unmigrated_store_is_told_to_migrate_not_to_check_postgresql(exc: BaseException, migrate: bool) -> None:
    fix = store_fix(exc, "check PostgreSQL (quantrac stack status)")
    assert ("quantrac db migrate" in fix) is migrate and (fix == "check PostgreSQL (quantrac stack status)") is not migrate


def test_attempts_give_each_record_a_bounded_number_of_tries() -> None:
    attempts = Attempts(most=3, limit=2)
    assert [attempts.failed("a") for _ in range(3)] == [False, False, True]
    attempts.forget("a")
    assert attempts.count("a") == 0
    for key in ("b", "c", "d"):
        attempts.failed(key)
    assert attempts.count("b") == 0 and attempts.count("d") == 1  # bounded memory: the oldest went


class _Recorder:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, object]]] = []

    def __getattr__(self, level: str):  # type: ignore[no-untyped-def]
        return lambda event, **fields: self.lines.append((level, event, fields))


@given(st.lists(st.tuples(st.floats(0, 5), st.sampled_from(["a", "b"])), max_size=200))
def test_a_repeating_failure_is_logged_once_per_interval_with_its_count(steps: list[tuple[float, str]]) -> None:
    now = [0.0]
    recorder = _Recorder()
    logged = RateLimitedLog(recorder, interval_s=10.0, clock=lambda: now[0])
    calls = 0
    for dt, key in steps:
        now[0] += dt
        logged("warning", "bridge.send_failed", key=key)
        calls += 1
    lines = recorder.lines
    assert len(lines) <= 2 * (now[0] / 10.0 + 1)  # per key, at most one line per interval
    shown = len(lines) + sum(int(f.get("repeats", 0)) for *_, f in lines)  # type: ignore[arg-type]
    assert shown <= calls and (calls == 0 or lines)  # every line stands for calls that happened; the first one logs


# --------------------------------------------------------------------------- nothing unexplained


def decode(body: object) -> object:
    return decode_message(topic(STATION.id), orjson.dumps(body), STATIONS, NOW, Limits(max_payload_bytes=65536))


def test_an_empty_readings_list_is_dead_lettered_as_empty() -> None:
    with pytest.raises(MessageRejected) as caught:
        decode({"ts": NOW.isoformat(), "readings": []})
    assert caught.value.rejection.reason == "empty" and STATION.id in caught.value.rejection.message


def test_conflicting_readings_in_one_message_keep_the_first_and_dead_letter_the_other() -> None:
    batch = decode({"ts": NOW.isoformat(), "readings": [
        {"parameter": "COD", "value": 10.0, "unit": "mg/L"}, {"parameter": "pH", "value": 7.0, "unit": "-"},
        {"parameter": "COD", "value": 11.0, "unit": "mg/L"}, {"parameter": "COD", "value": 10.0, "unit": "mg/L"}]})
    assert [(r.parameter, r.value) for r in batch.readings] == [("COD", 10.0), ("pH", 7.0), ("COD", 10.0)]  # type: ignore[attr-defined]
    [conflict] = batch.rejections  # type: ignore[attr-defined]
    assert (conflict.reason, conflict.index, conflict.parameter) == ("conflict", 2, "COD")
    assert "11.0" in conflict.message and "10.0" in conflict.message


def test_a_conflicting_line_in_a_tt10_file_is_rejected_as_conflict() -> None:
    stamp = format_stamp(NOW - timedelta(minutes=5))
    data = f"COD\t10\tmg/L\t{stamp}\t00\r\nCOD\t12\tmg/L\t{stamp}\t00\r\npH\t7\t-\t{stamp}\t00\r\n".encode()
    verdict = judge_file(f"HP_KCN_{STATION.id}_{stamp}.txt", data, STATIONS, {}, NOW, Limits())
    assert [(k.reading.parameter, k.reading.value) for k in verdict.kept] == [("COD", 10.0), ("pH", 7.0)]
    assert [(r.line_no, r.reason) for r in verdict.rejected_lines] == [(2, "conflict")]


def test_a_flood_of_bad_items_is_capped_at_one_summary() -> None:
    rejections = [Rejection("schema", "x", STATION.id, None, i) for i in range(30)]
    capped = cap_rejections(rejections, 20, STATION.id)
    assert len(capped) == 21 and capped[-1].reason == "too_many_rejections" and "schema 10" in capped[-1].message
    batch = decode({"ts": NOW.isoformat(), "readings": [{}] * 5000 + [{"parameter": "COD", "value": 1.0, "unit": "mg/L"}]})
    assert len(batch.readings) == 1 and len(batch.rejections) == 21  # type: ignore[attr-defined]


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.floats() | st.text(max_size=20) | st.integers(),
                    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
                    max_leaves=30),
       st.text(max_size=40))
def test_any_json_body_and_station_either_decodes_or_is_rejected_with_a_storable_reason(body: object, station: str) -> None:
    raw = json.dumps({"ts": NOW.isoformat(), "readings": body} if not isinstance(body, dict) else body).encode()
    try:
        batch = decode_message(topic(station or "x"), raw, STATIONS, NOW, Limits())
    except MessageRejected as rejected:
        rejections = [rejected.rejection]
    else:
        rejections = batch.rejections
    for r in rejections:
        encode_deadletter(topic=topic(station), payload=raw, reason=r.reason, message=r.message, received_at=NOW,
                          station_id=r.station_id, parameter=r.parameter, index=r.index)


# --------------------------------------------------------------------------- import CSVs

_cell = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr), st.sampled_from(["1.7976931348623157e308", "5e-324", "-0.0",
                                                                               "1e999", "0x10", ""]),
    st.text(st.characters(codec="utf-8", categories=["Cc", "Cf", "Lu", "Nd"]), max_size=12),
    st.integers(200, 5000).map(lambda n: "9" * n))


@settings(max_examples=40, deadline=None)
@given(rows=st.lists(st.tuples(st.integers(0, 3), st.lists(_cell, min_size=2, max_size=2)), min_size=1, max_size=40),
       junk=st.binary(max_size=20))
def test_hostile_csv_rows_are_each_sent_or_dead_lettered(tmp_path_factory: pytest.TempPathFactory, rows: list[tuple[int, list[str]]],
                                                         junk: bytes) -> None:
    from zoneinfo import ZoneInfo

    from ingest.import_sources import read_csv
    from ingest.importer import READINGS_PER_RECORD, chunk_records
    from quantrac.settings import get_settings
    from quantrac.wire import decode_sourced

    station = make_station("HD-CSV-01")
    base = NOW - timedelta(hours=3)
    lines = [b"time,COD,pH"] + [
        f"{(base + timedelta(minutes=m)).isoformat()},{cod},{ph}".encode("utf-8", "surrogatepass").replace(b"\n", b" ").replace(b"\r", b" ")
        for m, (cod, ph) in rows]
    lines.append(b"2026-11-29T10:00:00+07:00," + junk.replace(b"\n", b"").replace(b"\r", b"").replace(b",", b"") + b",7")
    path = tmp_path_factory.mktemp("csv") / "hostile.csv"
    path.write_bytes(b"\n".join(lines) + b"\n")
    units = list(read_csv(path, "wide", ZoneInfo("Asia/Ho_Chi_Minh")))
    s = get_settings()
    records, sent, rejected = chunk_records(units, station, NOW, Limits(), s, "import:hostile.csv")
    readings = [decode_sourced(v)[0] for t, _, v in records if t == s.readings_topic]
    dead = [decode_deadletter(v) for t, _, v in records if t == s.deadletter_topic]
    # Every cell becomes a reading or a dead letter; a row whose time is bad or out of range, one dead letter.
    expected = sum(1 if u.ts is None or u.ts > NOW or NOW - u.ts > Limits().retention else len(u.items)  # type: ignore[union-attr]
                   for u in units)
    assert sum(len(r) for r in readings) == sent and len(dead) == rejected and sent + rejected == expected
    assert all(len(r) <= READINGS_PER_RECORD for r in readings)
    assert all(len(v) < KAFKA_MAX_REQUEST // 2 for _, _, v in records)


def test_a_cancelled_batch_is_not_tried_again() -> None:
    """A worker told to stop while a batch is in the store's hands stops: the cancellation is not a failure to retry (a
    retry loop that swallows it kept a stopped worker storing the same batch)."""
    processor = BatchProcessor("postgresql://unused", {})
    calls = 0

    async def cancelled() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:  # a second call, the retry, returns
            raise asyncio.CancelledError()

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(processor._attempts(cancelled))
    assert calls == 1


def test_the_worker_logs_its_conflicts_once_per_station_and_interval() -> None:
    """Readings that contradict stored ones are dead letters; the worker also says so in its log, one warning per
    station naming its parameters and the fix, folded while the station keeps sending them."""
    from structlog.testing import capture_logs

    from processors.pipeline import log_conflicts
    from quantrac.domain import Reading

    stations = [f"HD-CONFLICT-{n}-{NOW.timestamp():.0f}" for n in (1, 2)]
    readings = [Reading(station_id=s, parameter=p, value=1.0, unit="mg/L", ts=NOW + timedelta(minutes=m))
                for s in stations for p in ("COD", "TSS") for m in range(3)]
    with capture_logs() as logs:
        log_conflicts(readings)
        log_conflicts(readings)  # the same stations again at once: folded
    warnings = [e for e in logs if e["event"] == "worker.conflicts"]
    assert [(e["station"], e["count"], e["parameters"], e["first_ts"]) for e in warnings] == [
        (s, 6, ["COD", "TSS"], NOW.isoformat()) for s in stations]
    assert all(e["log_level"] == "warning" and "new time" in e["fix"] for e in warnings)
