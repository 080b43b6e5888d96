"""TT10 drop folder and export, pure parts: one validation with MQTT, verdicts, records, file names."""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest

from ingest.payload import Limits
from ingest.tt10 import VN_TZ, format_stamp
from ingest.tt10_export import StoredValue, build_files, station_code
from ingest.tt10_watch import (
    NotRegularFile,
    StableFiles,
    file_away,
    is_candidate,
    judge_file,
    read_regular,
    refused_entry,
    verdict_records,
)
from quantrac.domain import Status
from quantrac.registry import RegistryCache, RegistrySnapshot
from quantrac.wire import decode_deadletter, decode_readings
from tests.utils.builders import make_station

NOW = datetime(2026, 11, 29, 14, 5, tzinfo=timezone.utc)
STATION = make_station("HD-TEST-01")
STATIONS = {STATION.id: STATION}
STAMP = format_stamp(NOW - timedelta(minutes=5))
NAME = f"HP_KCNTEST_HD-TEST-01_{STAMP}.txt"


def judge(text: str | bytes, name: str = NAME, codes: dict[str, str] | None = None):
    data = text.encode() if isinstance(text, str) else text
    return judge_file(name, data, STATIONS, codes or {}, NOW, Limits())


def test_valid_file_becomes_readings_in_utc_with_their_text() -> None:
    v = judge(f"COD\t42.0\tmg/L\t{STAMP}\t00\r\npH\t7.10\t-\t{STAMP}\t01\r\nFlow\t\tm3/h\t{STAMP}\t02\r\n")
    assert v.file_rejection is None and v.rejected_lines == [] and v.destination == "done"
    assert [(k.reading.parameter, k.reading.value, k.reading.status, k.value_text) for k in v.kept] == [
        ("COD", 42.0, Status.MEASURING, "42.0"), ("pH", 7.1, Status.CALIBRATING, "7.10"), ("Flow", None, Status.FAULT, "")]
    assert all(k.reading.ts == NOW - timedelta(minutes=5) and k.reading.ts.utcoffset() == timedelta(0) for k in v.kept)
    assert v.reason_text() == ""


@pytest.mark.parametrize(("line", "reason"), [
    (f"BOD5\t12\tmg/L\t{STAMP}\t00", "unknown_parameter"),
    (f"COD\t12\tkg\t{STAMP}\t00", "bad_unit"),
    (f"COD\t12\tmg/L\t{format_stamp(NOW + timedelta(minutes=30))}\t00", "future"),
    (f"COD\t12\tmg/L\t{format_stamp(NOW - timedelta(days=800))}\t00", "too_old"),
    (f"COD\t1,5\tmg/L\t{STAMP}\t00", "bad_value"),
    (f"COD\t12\tmg/L\t{STAMP}\t03", "bad_status"),
    ("COD 12 mg/L", "bad_fields"),
])
def test_partly_valid_file_keeps_good_lines_and_names_each_bad_one(line: str, reason: str) -> None:
    v = judge(f"pH\t7.1\t-\t{STAMP}\t00\n{line}\nCOD\t12\tmg/L\t{STAMP}\t00\n")
    assert [k.line_no for k in v.kept] == [1, 3]
    (bad,) = v.rejected_lines
    assert (bad.line_no, bad.reason, bad.raw_line) == (2, reason, line)
    assert STATION.id in bad.message and NAME in bad.message
    assert v.destination == "done" and v.reason_text().startswith(f"line 2\t{reason}\t")


def test_conversion_is_shared_with_mqtt() -> None:
    (kept,) = judge(f"COD\t0.042\tg/L\t{STAMP}\t00\n").kept
    assert (kept.reading.value, kept.reading.unit) == (42.0, "mg/L")


@pytest.mark.parametrize(("name", "reason"), [
    (f"HP_KCNTEST_NOPE_{STAMP}.txt", "unknown_station"),
    ("HP_KCNTEST_HD-TEST-01.txt", "bad_filename"),
    (f"HP_KCN_TEST_HD-TEST-01_{STAMP}.txt", "bad_filename"),
])
def test_whole_file_rejections(name: str, reason: str) -> None:
    v = judge(f"COD\t42\tmg/L\t{STAMP}\t00\n", name=name)
    assert v.file_rejection is not None and v.file_rejection.reason == reason and v.destination == "rejected"
    assert v.reason_text().startswith(reason + "\t")


def test_a_retired_stations_file_is_rejected_as_retired() -> None:
    registry = RegistryCache(lambda: RegistrySnapshot(STATIONS, frozenset({"HD-OLD-01"})))
    v = judge_file(f"HP_KCNTEST_HD-OLD-01_{STAMP}.txt", f"COD\t42\tmg/L\t{STAMP}\t00\n".encode(), registry, {}, NOW, Limits())
    assert v.file_rejection is not None and v.file_rejection.reason == "station_retired" and v.destination == "rejected"


def test_station_code_mapping_both_ways() -> None:
    codes = {"NT01": STATION.id}
    v = judge(f"COD\t42\tmg/L\t{STAMP}\t00\n", name=f"HP_KCNTEST_NT01_{STAMP}.txt", codes=codes)
    assert v.station_id == STATION.id and len(v.kept) == 1
    assert station_code(STATION.id, codes) == "NT01" and station_code("OTHER", codes) == "OTHER"


def test_records_readings_and_dead_letters_with_file_name_and_line() -> None:
    data = f"COD\t42\tmg/L\t{STAMP}\t00\nCOD\tx\tmg/L\t{STAMP}\t00\n".encode()
    v = judge(data)
    (readings, dead) = verdict_records(v, data, NOW, "r", "d")
    assert readings[0] == "r" and readings[1] == STATION.id.encode()
    assert orjson.loads(readings[2])["source"] == "tt10" and len(decode_readings(readings[2])[0]) == 1
    body = decode_deadletter(dead[2])
    assert (dead[0], body["topic"], body["reason"], body["index"], body["source"]) == ("d", NAME, "bad_value", 2, "tt10")
    assert body["payload"] == f"COD\tx\tmg/L\t{STAMP}\t00".encode() and body["parameter"] == "COD"


def test_empty_and_all_bad_files_are_rejected_and_dead_lettered_whole() -> None:
    for data in (b"", b"\r\n"):
        v = judge(data)
        (record,) = verdict_records(v, data, NOW, "r", "d")
        assert v.destination == "rejected" and decode_deadletter(record[2])["reason"] == "empty_file"
    v = judge(b"garbage\n")
    assert v.destination == "rejected" and [r.reason for r in v.rejected_lines] == ["bad_fields"]


def test_in_progress_names_are_never_candidates(tmp_path: Path) -> None:
    for name in (".HP_A_B_20250101000000.txt", "x.txt.part", "x.tmp", "x.txt.reason", "ok.txt"):
        (tmp_path / name).write_text("x")
    assert sorted(p.name for p in tmp_path.iterdir() if is_candidate(p)) == ["ok.txt"]


def test_stable_files_wait_for_unchanged_size(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_text("one")
    stable = StableFiles(settle_s=1.0)
    t0 = path.stat().st_mtime + 5
    assert stable.ready([path], t0) == []
    path.write_text("one two")
    assert stable.ready([path], t0 + 2) == []  # changed since the last scan: starts settling again
    assert stable.ready([path], t0 + 3.5) == [path]


def test_export_groups_by_time_in_file_then_table_order_with_original_text() -> None:
    t1, t2 = NOW, NOW + timedelta(minutes=5)
    values = [StoredValue("pH", t1, 7.1, "-", "00", "7.10", f"HN_FAC_HD-TEST-01_{format_stamp(t1)}.txt", 1),
              StoredValue("COD", t1, 42.0, "mg/L", "01", "42.0", None, 2),
              StoredValue("Flow", t2, None, "m3/h", "02"), StoredValue("COD", t2, 43.25, "mg/L", "00", "99", None),
              StoredValue("pH", t2, None, "-", "01")]
    export = build_files(STATION, values, province="HP", facility="FX", newline="\n")
    local = t1.astimezone(VN_TZ).strftime("%Y%m%d%H%M%S")
    assert [f.name for f in export.files] == [f"HN_FAC_HD-TEST-01_{local}.txt", f"HP_FX_HD-TEST-01_{format_stamp(t2)}.txt"]
    assert export.files[0].content == f"pH\t7.10\t-\t{local}\t00\nCOD\t42.0\tmg/L\t{local}\t01\n"
    assert export.files[1].content == f"Flow\t\tm3/h\t{format_stamp(t2)}\t02\nCOD\t43.25\tmg/L\t{format_stamp(t2)}\t00\n"
    assert [v.parameter for v in export.skipped] == ["pH"]


def test_links_fifos_and_folders_are_taken_but_never_read(tmp_path: Path) -> None:
    """A symbolic link (even to a valid file) and a FIFO are candidates, refused unread (`NotRegularFile`, which says
    what they are); a folder is not a candidate; a regular file is read."""
    secret = tmp_path / "secret.txt"
    secret.write_text(f"COD\t1\tmg/L\t{STAMP}\t00\r\n")
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / f"HP_KCN_HD-TEST-01_{STAMP}.txt").symlink_to(secret)
    (drop / "dangling.txt").symlink_to(tmp_path / "gone.txt")
    os.mkfifo(drop / "fifo.txt")
    (drop / "folder.txt").mkdir()
    (drop / "plain.txt").write_bytes(b"plain")
    assert sorted(p.name for p in drop.iterdir() if is_candidate(p)) == sorted(
        [f"HP_KCN_HD-TEST-01_{STAMP}.txt", "dangling.txt", "fifo.txt", "plain.txt"])
    for name, kind in [(f"HP_KCN_HD-TEST-01_{STAMP}.txt", "a symbolic link"), ("dangling.txt", "a symbolic link"),
                       ("fifo.txt", "a FIFO")]:
        with pytest.raises(NotRegularFile, match=kind):
            read_regular(drop / name)
    assert read_regular(drop / "plain.txt") == b"plain"
    verdict = refused_entry(f"HP_KCN_HD-TEST-01_{STAMP}.txt", "a symbolic link", {})
    assert verdict.station_id == "HD-TEST-01" and verdict.destination == "rejected" and not verdict.kept
    assert verdict.file_rejection is not None and verdict.file_rejection.reason == "not_a_file"
    assert refused_entry("fifo.txt", "a FIFO", {}).station_id is None


def test_a_file_uploaded_again_under_the_same_name_is_filed_beside_the_first(tmp_path: Path) -> None:
    """The archive keeps every upload: a second file of the same name (corrected values, a retried upload) goes to
    `<name>.2` with its own note, the first stays as it was."""
    station = make_station("HD-TEST-01")
    name = f"HP_KCN_HD-TEST-01_{STAMP}.txt"
    (tmp_path / "done").mkdir()
    (tmp_path / "rejected").mkdir()
    contents = [f"COD\t1\tmg/L\t{STAMP}\t00\r\n", f"COD\t2\tmg/L\t{STAMP}\t00\r\nXX\t1\tmg/L\t{STAMP}\t00\r\n",
                f"COD\t3\tmg/L\t{STAMP}\t00\r\n"]
    where = []
    for text in contents:
        (tmp_path / name).write_bytes(text.encode())
        verdict = judge_file(name, text.encode(), {station.id: station}, {}, NOW, Limits())
        where.append(file_away(tmp_path, tmp_path / name, verdict))
    assert [p.relative_to(tmp_path).as_posix() for p in where] == [f"done/{name}", f"done/{name}.2", f"done/{name}.3"]
    assert [p.read_bytes().decode() for p in where] == contents and not (tmp_path / name).exists()
    assert sorted(p.name for p in (tmp_path / "done").glob("*.reason")) == [f"{name}.2.reason"]
