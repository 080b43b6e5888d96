"""TT10 files on the real services: drop folder → watcher → Kafka → worker → PostgreSQL → export.

The watcher runs as a real subprocess (`quantrac tt10 watch`) beside the session's bridge and worker.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

import psycopg
import pytest

from ingest.tt10 import format_stamp
from quantrac.db import save_stations
from quantrac.domain import NATIONAL_SYMBOLS, ParameterSpec, Station, StationKind
from quantrac.settings import Settings
from tests.utils.poll import wait_for
from tests.utils.processes import Process, stored_count

pytestmark = pytest.mark.integration

# (value text, unit, status) for every symbol of Table 34, in table order: mixed formatting, all statuses.
SAMPLE: dict[str, tuple[str, str, str]] = {
    "Flow": ("1200", "m3/h", "00"), "Temp": ("28.5", "°C", "00"), "Color": ("35", "Pt/Co", "00"),
    "pH": ("7.12", "-", "00"), "TSS": ("", "mg/L", "02"), "COD": ("42.0", "mg/L", "01"),
    "NH4": ("0.050", "mg/L", "00"), "TP": ("3.5", "mg/L", "00"), "TN": ("12.30", "mg/L", "01"),
    "TOC": ("15", "mg/L", "00"), "Cl": ("0.2", "mg/L", "00"), "RH": ("65.0", "%", "00"),
    "P": ("101.325", "kPa", "00"), "NO": ("", "mg/Nm3", "02"), "NO2": ("150.75", "mg/Nm3", "00"),
    "CO": ("-0.5", "mg/Nm3", "00"), "SO2": ("480", "mg/Nm3", "00"), "O2": ("6.80", "%", "00"),
    "H2S": ("0.000", "mg/Nm3", "02"), "NH3": ("1.0", "mg/Nm3", "00"), "VHg": ("0.0012", "mg/Nm3", "01"),
    "PM": ("180.5", "mg/Nm3", "00"), "O3": (".5", "mg/Nm3", "00"), "PM10": ("45", "ug/m3", "00"),
    "PM2,5": ("22.40", "ug/m3", "00"),
}


def full_station() -> Station:
    return Station(id=f"T-{uuid.uuid4().hex[:10]}", name="TT10 round trip", zone="KCN Test", facility="Test",
                   kind=StationKind.WASTEWATER,
                   parameters={s: ParameterSpec(symbol=s, unit=SAMPLE[s][1]) for s in NATIONAL_SYMBOLS})


def drop(folder: Path, name: str, content: bytes) -> None:
    """Upload like an FTP client that writes under a temporary name and renames at the end."""
    part = folder / f"{name}.part"
    part.write_bytes(content)
    os.replace(part, folder / name)


@pytest.fixture(scope="module")
def watch_dir(stack: Settings, pipeline: dict) -> Iterator[Path]:
    folder = stack.run_dir / "test-tt10" / uuid.uuid4().hex[:8]
    folder.mkdir(parents=True)
    log_dir = stack.run_dir / "test-logs" / os.environ.get("QUANTRAC_TEST_NAMESPACE", "test")
    watcher = Process("tt10-watch", ["tt10", "watch", str(folder)], log_dir,
                      env={"QUANTRAC_TT10_POLL_S": "0.2", "QUANTRAC_TT10_SETTLE_S": "0.3", "QUANTRAC_REGISTRY_MISS_RELOAD_S": "0"})
    wait_for(lambda: (folder / "done").is_dir() or not watcher.alive(), timeout=30, what="the watcher to start")
    assert watcher.alive(), watcher.tail()
    yield folder
    assert watcher.alive(), f"the watcher died:\n{watcher.tail()}"
    watcher.stop()


def test_full_table_34_file_round_trips_byte_identical(watch_dir: Path, db: psycopg.Connection, stack: Settings,
                                                      tmp_path: Path) -> None:
    station = full_station()
    save_stations(db, {station.id: station})
    ts = datetime.now(timezone.utc).replace(second=0, microsecond=0) - timedelta(minutes=5)
    stamp = format_stamp(ts)
    name = f"HP_KCN-TEST_{station.id}_{stamp}.txt"
    content = "".join(f"{sym}\t{val}\t{unit}\t{stamp}\t{status}\r\n" for sym, (val, unit, status) in SAMPLE.items()).encode()
    assert {status for _, _, status in SAMPLE.values()} == {"00", "01", "02"} and tuple(SAMPLE) == NATIONAL_SYMBOLS

    drop(watch_dir, name, content)
    wait_for(lambda: (watch_dir / "done" / name).exists(), timeout=30, what=f"{name} in done/")
    assert not (watch_dir / "done" / f"{name}.reason").exists()
    wait_for(lambda: stored_count(db, station.id) == len(SAMPLE), timeout=30, what="25 readings stored")

    out = tmp_path / "export"
    result = subprocess.run(
        [sys.executable, "-m", "cli", "tt10", "export", str(out), "--station", station.id,
         "--from", (ts - timedelta(minutes=1)).isoformat(), "--to", (ts + timedelta(minutes=1)).isoformat()],
        capture_output=True, env=os.environ.copy(), timeout=60)
    assert result.returncode == 0, result.stderr.decode()
    assert [p.name for p in out.iterdir()] == [name]
    assert (out / name).read_bytes() == content


def test_partly_valid_and_rejected_files_are_filed_with_reasons(watch_dir: Path, db: psycopg.Connection) -> None:
    station = full_station()
    save_stations(db, {station.id: station})
    stamp = format_stamp(datetime.now(timezone.utc) - timedelta(minutes=5))
    partly = f"HP_KCN-TEST_{station.id}_{stamp}.txt"
    drop(watch_dir, partly, f"COD\t42\tmg/L\t{stamp}\t00\nBOD5\t1\tmg/L\t{stamp}\t00\npH\t7,1\t-\t{stamp}\t00\n".encode())
    unknown = f"HP_KCN-TEST_NOSUCH-{uuid.uuid4().hex[:6]}_{stamp}.txt"
    drop(watch_dir, unknown, f"COD\t42\tmg/L\t{stamp}\t00\n".encode())

    wait_for(lambda: (watch_dir / "done" / partly).exists() and (watch_dir / "rejected" / unknown).exists(),
             timeout=30, what="both files filed away")
    reasons = (watch_dir / "done" / f"{partly}.reason").read_text().splitlines()
    assert [r.split("\t")[:2] for r in reasons] == [["line 2", "unknown_parameter"], ["line 3", "bad_value"]]
    assert (watch_dir / "rejected" / f"{unknown}.reason").read_text().startswith("unknown_station\t")
    wait_for(lambda: stored_count(db, station.id) == 1, timeout=30, what="the one valid line stored")


def test_hostile_files_are_filed_away_and_the_next_file_is_stored(watch_dir: Path, db: psycopg.Connection, api: object) -> None:
    """A name that is not UTF-8; NUL and control characters in every field; a conflict: filed away, explained, and
    the file dropped after them stored (the watcher once crashed encoding such a name, and a NUL stopped the keeper)."""
    station = full_station()
    save_stations(db, {station.id: station})
    stamp = format_stamp(datetime.now(timezone.utc) - timedelta(minutes=10))
    nul = "\x00"
    undecodable = f"HP_KCN_{station.id}_{stamp}".encode() + b"\xff\xfe.txt"
    with open(os.path.join(os.fsencode(watch_dir), undecodable), "wb") as handle:
        handle.write(f"COD\t1\tmg/L\t{stamp}\t00\r\n".encode())
    hostile = (f"C{nul}OD\t1\tmg/L\t{stamp}\t00\r\npH\t7{nul}\t-\t{stamp}\t00\r\nTSS\t1\tmg/L{nul}\t{stamp}\t00\r\n"
               f"NH4\t1\tmg/L\t{stamp}{nul}\t00\r\nTP\t1\tmg/L\t{stamp}\t0{nul}\r\n\x01\x02\x1b\t1\tmg/L\t{stamp}\t00\r\n"
               f"COD\t5\tmg/L\t{stamp}\t00\r\nCOD\t6\tmg/L\t{stamp}\t00\r\n").encode()
    drop(watch_dir, f"HP_KCN_{station.id}_{stamp}.txt", hostile)
    after = format_stamp(datetime.now(timezone.utc) - timedelta(minutes=5))
    drop(watch_dir, f"HP_KCN_{station.id}_{after}.txt", f"Flow\t12\tm3/h\t{after}\t00\r\n".encode())
    wait_for(lambda: stored_count(db, station.id) == 2, timeout=60, interval=0.3,
             what="COD 5 of the hostile file and the next file's Flow stored")
    wait_for(lambda: (watch_dir / "rejected").joinpath(os.fsdecode(undecodable)).exists(), timeout=30,
             what="the undecodable name filed to rejected/")
    rejected_reason = (watch_dir / "rejected" / (os.fsdecode(undecodable) + ".reason")).read_text(errors="replace")
    assert rejected_reason.startswith("bad_filename")

    def reasons() -> list[str]:
        page = api.get("/api/v1/deadletters", params={"station": station.id, "limit": 100}).json()  # type: ignore[attr-defined]
        return sorted(d["reason"] for d in page["data"])
    expected = sorted(["unknown_parameter", "bad_value", "bad_unit", "bad_time", "bad_status", "unknown_parameter", "conflict"])
    wait_for(lambda: reasons() == expected, timeout=60, interval=0.5, what=f"the dead letters {expected} (have {reasons()})")


def test_links_fifos_and_folders_in_the_drop_folder_are_never_read(watch_dir: Path, db: psycopg.Connection, api: object,
                                                                  tmp_path: Path) -> None:
    """An uploader that can make a symbolic link (SFTP can) once had the watcher read any file it could, line by line
    into dead letters an operator lists. A link (to a file holding a valid line and a secret) and a FIFO go to
    rejected/ unread, as `not_a_file` dead letters of their station; a folder stays; the next file is stored."""
    station = full_station()
    save_stations(db, {station.id: station})
    stamps = [format_stamp(datetime.now(timezone.utc) - timedelta(minutes=m)) for m in (12, 11, 10, 9)]
    secret = tmp_path / "secret.txt"
    secret.write_text(f"COD\t1\tmg/L\t{stamps[0]}\t00\r\nroot:SECRET-HASH:20000::::::\n")
    link, fifo, folder, valid = (f"HP_KCN_{station.id}_{stamp}.txt" for stamp in stamps)
    (watch_dir / link).symlink_to(secret)
    os.mkfifo(watch_dir / fifo)
    (watch_dir / folder).mkdir()
    drop(watch_dir, valid, f"Flow\t12\tm3/h\t{stamps[3]}\t00\r\n".encode())
    wait_for(lambda: all((watch_dir / "rejected" / f"{name}.reason").exists() for name in (link, fifo)), timeout=60,
             interval=0.3, what="the link and the FIFO filed to rejected/")
    wait_for(lambda: stored_count(db, station.id) == 1, timeout=30, what="the valid file's one reading stored")
    assert (watch_dir / "rejected" / link).is_symlink() and (watch_dir / folder).is_dir()
    assert (watch_dir / "rejected" / f"{link}.reason").read_text().startswith("not_a_file\t")
    assert "a FIFO" in (watch_dir / "rejected" / f"{fifo}.reason").read_text()

    def letters() -> list[dict[str, object]]:
        page = api.get("/api/v1/deadletters", params={"station": station.id, "limit": 100}).json()  # type: ignore[attr-defined]
        return page["data"]  # type: ignore[no-any-return]
    wait_for(lambda: len(letters()) == 2, timeout=60, interval=0.5, what="the two not_a_file dead letters")
    assert sorted(str(d["reason"]) for d in letters()) == ["not_a_file", "not_a_file"]
    assert "SECRET" not in str(letters()) and stored_count(db, station.id) == 1
