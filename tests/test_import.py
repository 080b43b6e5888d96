"""`quantrac import` through the running pipeline: stored once, rolled up, historical alerts not notified,
idempotent, resumable after a SIGKILL; plus the pure parts (readers, token bucket, chunking)."""

from __future__ import annotations

import csv
import http.server
import json
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest.import_sources import detect_format, parse_time, read_csv
from ingest.importer import TokenBucket, chunk_records
from ingest.payload import Limits
from quantrac.domain import Station
from quantrac.settings import Settings, get_settings
from quantrac.wire import decode_deadletter, decode_sourced
from tests.test_stations_admin import river_station
from tests.utils.poll import wait_for
from tests.utils.processes import stored_count

HCM = ZoneInfo("Asia/Ho_Chi_Minh")


# ---- pure -----------------------------------------------------------------------------------------


def test_times_without_offset_are_local_and_with_offset_kept() -> None:
    assert parse_time("2026-11-01 07:00:00", HCM) == datetime(2026, 11, 1, tzinfo=timezone.utc)
    assert parse_time("2026-11-01T07:00:00+00:00", HCM).utcoffset() == timedelta(0)
    assert detect_format(["time", "parameter", "value"]) == "long" and detect_format(["Time", "ClO2"]) == "wide"


@given(rate=st.floats(1, 1e5), asks=st.lists(st.integers(1, 10_000), min_size=1, max_size=30))
def test_token_bucket_never_exceeds_its_rate(rate: float, asks: list[int]) -> None:
    now = [0.0]
    bucket = TokenBucket(rate, clock=lambda: now[0], wait=lambda s: now.__setitem__(0, now[0] + s))
    for n in asks:
        bucket.take(n)
    assert sum(asks) <= rate * now[0] + rate + max(asks) + 1e-6


def test_rows_become_one_record_per_timestamp_and_bad_ones_dead_letters(tmp_path: Path) -> None:
    station = Station.model_validate(river_station("A-UNIT"))
    now = datetime.now(timezone.utc)
    file = tmp_path / "x.csv"
    t0 = (now - timedelta(hours=1)).astimezone(HCM).replace(tzinfo=None)
    file.write_text("time,ClO2,ORP,Foo\n"
                    f"{t0.isoformat()},0.5,300,\n"
                    f"{(t0 + timedelta(minutes=1)).isoformat()},abc,310,1\n"
                    "yesterday,0.4,300,\n", encoding="utf-8")
    s = get_settings()
    records, sent, rejected = chunk_records(list(read_csv(file, "auto", HCM)), station, now, Limits(), s, "import:x.csv")
    readings = [decode_sourced(v) for t, _, v in records if t == s.readings_topic]
    dead = [decode_deadletter(v) for t, _, v in records if t == s.deadletter_topic]
    assert [len(r[0]) for r in readings] == [2, 1] and {r[2] for r in readings} == {"import"}
    assert sent == 3 and rejected == 3
    assert sorted((d["reason"], d["parameter"]) for d in dead) == [("bad_time", None), ("bad_value", "ClO2"),
                                                                    ("unknown_parameter", "Foo")]
    assert all("A-UNIT" in d["message"] and d["source"] == "import" for d in dead)


def test_outcomes_name_the_rejected_rows_count_by_reason_and_keep_three_examples(tmp_path: Path) -> None:
    from ingest.importer import Outcomes

    station = Station.model_validate(river_station("A-OUT"))
    now = datetime.now(timezone.utc)
    t0 = (now - timedelta(hours=1)).astimezone(HCM).replace(tzinfo=None)
    file = tmp_path / "x.csv"
    file.write_text("time,ClO2,Turb\n" + "".join(f"{(t0 + timedelta(minutes=i)).isoformat()},0.5,{i}\n" for i in range(5))
                    + "2010-01-01 00:00:00,0.5,\n", encoding="utf-8")
    outcomes = Outcomes()
    _, sent, rejected = chunk_records(list(read_csv(file, "auto", HCM)), station, now, Limits(), get_settings(), "x", outcomes)
    assert (sent, rejected) == (5, 6)
    assert dict(outcomes.counts) == {"unknown_parameter": 5, "too_old": 1}
    assert outcomes.rejected_units == {0: "unknown_parameter", 1: "unknown_parameter", 2: "unknown_parameter",
                                       3: "unknown_parameter", 4: "unknown_parameter", 5: "too_old"}
    shown = outcomes.as_json()
    assert len(shown["unknown_parameter"]["examples"]) == 3 and "Turb" in shown["unknown_parameter"]["examples"][0]
    assert "--retention-days" in shown["too_old"]["fix"] and "retention_days" in shown["too_old"]["examples"][0]
    own = station.model_copy(update={"retention_days": 10_000})
    kept = Outcomes()
    chunk_records(list(read_csv(file, "auto", HCM))[5:], own, now, Limits(), get_settings(), "x", kept)
    assert "too_old" not in kept.counts  # the station's own retention admits the old row


# ---- through the pipeline ------------------------------------------------------------------------


def write_long_csv(path: Path, rows: int, end: datetime) -> tuple[int, float]:
    """`rows` long-format rows (ClO2 and ORP alternating, one minute apart, local times without offset).

    ClO2 exceeds its limit (1.0) for 10 minutes every 5000 minutes. Returns (readings, sum of values)."""
    start = end - timedelta(minutes=rows // 2)
    total = 0.0
    with path.open("w", newline="", encoding="utf-8") as handle:
        w = csv.writer(handle)
        w.writerow(["time", "parameter", "value", "unit", "status"])
        for i in range(rows // 2):
            t = (start + timedelta(minutes=i)).astimezone(HCM).replace(tzinfo=None).isoformat(sep=" ")
            clo2 = 1.5 if i % 5000 < 10 else round(0.4 + (i % 7) * 0.01, 2)
            orp = 300 + i % 11
            w.writerow([t, "ClO2", clo2, "mg/L", "00"])
            w.writerow([t, "ORP", orp, "mV", "00"])
            total += clo2 + orp
    return rows, total


def import_cmd(station: str, path: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "cli", "import", "--station", station, str(path), "--no-progress", *extra]


def fingerprint(db: Any, station: str) -> tuple[Any, ...]:
    """Everything an import may change, apart from the import log."""
    return (db.execute("SELECT count(*), round(sum(value)::numeric, 6) FROM readings WHERE station_id = %s", (station,)).fetchone(),
            db.execute("SELECT count(*), sum(count), round(sum(avg)::numeric, 6) FROM readings_1h WHERE station_id = %s",
                       (station,)).fetchone(),
            db.execute("SELECT count(*), count(*) FILTER (WHERE historical) FROM alerts WHERE station_id = %s", (station,)).fetchone(),
            db.execute("SELECT count(*) FROM alert_events e JOIN alerts a ON a.id = e.alert_id WHERE a.station_id = %s",
                       (station,)).fetchone(),
            db.execute("SELECT counter, sum(n) FROM delivery_counts WHERE station_id = %s GROUP BY counter ORDER BY counter",
                       (station,)).fetchall())


def rollups_match_raw(db: Any, station: str) -> bool:
    diff = db.execute(
        "WITH raw AS (SELECT parameter, date_trunc('hour', ts AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS bucket, count(*) AS n, avg(value) AS a FROM readings "
        "WHERE station_id = %s GROUP BY 1, 2) "
        "SELECT count(*) FROM raw FULL JOIN (SELECT * FROM readings_1h WHERE station_id = %s) r ON r.parameter = raw.parameter "
        "AND r.bucket = raw.bucket WHERE r.count IS DISTINCT FROM raw.n OR abs(r.avg - raw.a) > 1e-9 OR r.avg IS NULL "
        "OR raw.n IS NULL", (station, station)).fetchone()
    return diff[0] == 0


@pytest.fixture()
def receiver() -> Iterator[tuple[str, list[bytes]]]:
    """A webhook receiver that records every request it gets."""
    got: list[bytes] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            got.append(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", got
    server.shutdown()


ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


@pytest.mark.integration
@pytest.mark.timeout(900)
def test_a_100k_row_import_is_stored_once_rolled_up_and_its_alerts_are_historical(
        api: Any, pipeline: Any, db: Any, stack: Settings, tmp_path: Path, receiver: tuple[str, list[bytes]]) -> None:
    body = river_station()
    sid = body["id"]
    assert api.post("/api/v1/stations", json=body).status_code == 201
    expected, total = write_long_csv(tmp_path / "history.csv", 100_000, datetime.now(timezone.utc) - timedelta(hours=2))
    first_event = db.execute("SELECT coalesce(max(id), 0) FROM alert_events").fetchone()[0]

    began = time.monotonic()
    done = subprocess.run(import_cmd(sid, tmp_path / "history.csv"), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "100000 readings sent, 0 rejected" in done.stdout
    wait_for(lambda: stored_count(db, sid) >= expected, timeout=600, interval=2.0, what=f"{expected} imported readings stored")
    stored_after_s = time.monotonic() - began
    count, checksum = db.execute("SELECT count(*), sum(value) FROM readings WHERE station_id = %s", (sid,)).fetchone()
    assert count == expected and abs(checksum - total) < 1e-6 * total
    assert db.execute("SELECT count(*) FROM (SELECT 1 FROM readings WHERE station_id = %s GROUP BY parameter, ts "
                      "HAVING count(*) > 1) d", (sid,)).fetchone()[0] == 0
    wait_for(lambda: rollups_match_raw(db, sid), timeout=60, interval=1.0, what="readings_1h to equal a GROUP BY over raw")
    alerts = db.execute("SELECT rule, historical FROM alerts WHERE station_id = %s", (sid,)).fetchall()
    assert any(rule == "exceedance" for rule, _ in alerts) and all(h for _, h in alerts), alerts

    from alerts.notifier import Channel, poll_once, webhook_channel
    hook_settings = stack.model_copy(update={"notify_webhook_url": receiver[0], "notify_webhook_attempts": 1})
    db.execute("INSERT INTO notifier_cursor (name, event_id) VALUES ('notifier', %s) ON CONFLICT (name) DO UPDATE "
               "SET event_id = EXCLUDED.event_id", (first_event,))
    hook = Channel("webhook", webhook_channel("webhook", receiver[0], hook_settings, lambda: db), lambda n: True)
    while poll_once(db, [hook]):
        pass
    outcomes = db.execute("SELECT DISTINCT d.outcome FROM notification_deliveries d JOIN alerts a ON a.id = d.alert_id "
                          "WHERE a.station_id = %s", (sid,)).fetchall()
    assert outcomes == [("suppressed",)] and not [b for b in receiver[1] if sid.encode() in b]

    before = fingerprint(db, sid)
    again = subprocess.run(import_cmd(sid, tmp_path / "history.csv"), capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "0 rows read (100000 already confirmed)" in again.stdout, again.stdout + again.stderr
    assert fingerprint(db, sid) == before
    rate = db.execute("SELECT readings_sent / extract(epoch FROM finished_at - started_at) FROM import_log "
                      "WHERE station_id = %s ORDER BY id LIMIT 1", (sid,)).fetchone()[0]
    print(f"import rate (readings/s, producer side): {rate:.0f}")
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "import-rate.json").write_text(json.dumps({
        "readings": expected, "sent_readings_per_s": round(float(rate)),
        "stored_readings_per_s": round(expected / stored_after_s), "seconds_until_all_stored": round(stored_after_s, 1)}))


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_an_import_killed_half_way_and_resumed_ends_with_the_same_result(
        api: Any, pipeline: Any, db: Any, tmp_path: Path) -> None:
    body = river_station()
    sid = body["id"]
    assert api.post("/api/v1/stations", json=body).status_code == 201
    path = tmp_path / "killed.csv"
    expected, total = write_long_csv(path, 20_000, datetime.now(timezone.utc) - timedelta(hours=1))
    proc = subprocess.Popen(import_cmd(sid, path, "--rate", "2000", "--chunk", "1000"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)

    def confirmed() -> int:
        row = db.execute("SELECT rows_confirmed FROM import_progress p JOIN import_log l ON l.file_sha256 = p.file_sha256 "
                         "WHERE p.station_id = %s LIMIT 1", (sid,)).fetchone()
        return row[0] if row else 0

    try:
        wait_for(lambda: confirmed() >= expected // 2 or proc.poll() is not None, timeout=120, interval=0.05,
                 what="half of the import confirmed")
        assert proc.poll() is None, "the import finished before it could be interrupted; lower --rate"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    half = confirmed()
    assert expected // 2 <= half < expected
    resumed = subprocess.run(import_cmd(sid, path), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0 and f"({half} already confirmed)" in resumed.stdout, resumed.stdout + resumed.stderr
    wait_for(lambda: stored_count(db, sid) >= expected, timeout=300, interval=1.0, what="every resumed reading stored")
    count, checksum = db.execute("SELECT count(*), sum(value) FROM readings WHERE station_id = %s", (sid,)).fetchone()
    assert count == expected and abs(checksum - total) < 1e-6 * total
    assert confirmed() == expected
    wait_for(lambda: rollups_match_raw(db, sid), timeout=60, interval=1.0, what="rollups of the resumed import")


def test_a_tt10_folder_goes_through_the_watchers_checks_as_import_records(tmp_path: Path) -> None:
    from ingest.import_sources import read_units
    from ingest.tt10 import TT10Line, TT10Name, format_content

    station = Station.model_validate(river_station("A-TT10"))
    now = datetime.now(timezone.utc).replace(microsecond=0)
    for minutes in (10, 5):
        ts = now - timedelta(minutes=minutes)
        name = TT10Name("HP", "NMN", "INTAKE1", ts).filename
        lines = [TT10Line.of("pH", 7.1, "-", ts), TT10Line.of("COD", 5.0, "mg/L", ts)]
        (tmp_path / name).write_text(format_content(lines), encoding="utf-8")
    s = get_settings()
    units = list(read_units(tmp_path, "auto", HCM))
    records, sent, rejected = chunk_records(units, station, now, Limits(), s, "import:dir")
    readings = [decode_sourced(v) for t, _, v in records if t == s.readings_topic]
    dead = [decode_deadletter(v) for t, _, v in records if t == s.deadletter_topic]
    assert len(units) == 2 and sent == 2 and rejected == 2
    assert [r[0][0].ts for r in readings] == [now - timedelta(minutes=10), now - timedelta(minutes=5)]
    assert {r[2] for r in readings} == {"import"} and {d["reason"] for d in dead} == {"unknown_parameter"}


def test_spreadsheet_exports_are_read_or_refused_with_the_fix(tmp_path: Path) -> None:
    """A sheet saved where the decimal mark is a comma separates fields with ';' (read, values with a comma taken);
    a UTF-16 'Unicode text' export and a row the csv module cannot read stop the import with the file's fix, not a
    traceback."""
    from ingest.import_sources import ImportSourceError

    semicolons = tmp_path / "vn.csv"
    semicolons.write_text("time;COD;pH\n2026-12-01 08:00;45,5;7,2\n2026-12-01 08:05;46;7,3\n", encoding="utf-8")
    rows = list(read_csv(semicolons, "auto", HCM))
    assert [[(i["parameter"], i["value"]) for i in r.items] for r in rows] == [[("COD", 45.5), ("pH", 7.2)], [("COD", 46.0), ("pH", 7.3)]]
    assert rows[0].raw == "2026-12-01 08:00;45,5;7,2" and rows[1].number == 3

    unicode_text = tmp_path / "unicode.csv"
    unicode_text.write_bytes("time\tCOD\n2026-12-01 08:00\t1\n".encode("utf-16"))
    with pytest.raises(ImportSourceError, match="UTF-16.*CSV UTF-8"):
        list(read_csv(unicode_text, "auto", HCM))

    broken = tmp_path / "broken.csv"
    broken.write_text("time,COD\n2026-12-01 08:00,1\n2026-12-01 08:05," + "9" * 200_000 + "\n", encoding="utf-8")
    read = []
    with pytest.raises(ImportSourceError, match="broken.csv, row 3: field larger than field limit"):
        for row in read_csv(broken, "auto", HCM):
            read.append(row.number)
    assert read == [2]


def test_a_tt10_folder_to_import_skips_fifos_and_reads_links_to_files(tmp_path: Path) -> None:
    """The operator's own folder: a link to a file is read; a FIFO is not listed (reading it would wait forever)."""
    import os

    from ingest.import_sources import fingerprint, tt10_files

    (tmp_path / "HP_KCN_HD-TEST-01_20261201080000.txt").write_text("COD\t1\tmg/L\t20261201080000\t00\n")
    elsewhere = tmp_path.parent / f"{tmp_path.name}-elsewhere.txt"
    elsewhere.write_text("COD\t2\tmg/L\t20261201080500\t00\n")
    (tmp_path / "HP_KCN_HD-TEST-01_20261201080500.txt").symlink_to(elsewhere)
    os.mkfifo(tmp_path / "HP_KCN_HD-TEST-01_20261201081000.txt")
    assert [p.name for p in tt10_files(tmp_path)] == ["HP_KCN_HD-TEST-01_20261201080000.txt", "HP_KCN_HD-TEST-01_20261201080500.txt"]
    assert len(fingerprint(tmp_path)) == 64
