"""The dashboard end to end in headless Debian chromium (npm playwright-core): the page asks for the key
(HTTP Basic), the browser's cached credential then carries the page's fetch and EventSource requests; see a
new alert arrive live over SSE, acknowledge it, see its clear hold start live; triage: alerts grouped by station, rule and basis in words, values
rounded to the parameter's resolution, an anomaly's reading apart from its score, filters by severity, zone and rule,
the suppressed count one click away. The screenshot is kept in tests/artifacts/dashboard.png."""

from __future__ import annotations

import queue
import re
import shutil
import subprocess
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import orjson
import psycopg
import pytest

from alerts import silences
from alerts.rules import Condition
from quantrac.db import save_stations
from quantrac.domain import Reading, Severity, Station
from quantrac.settings import Settings
from tests.alerts_support.helpers import NOW, apply, condition, new_station, store_readings
from tests.alerts_support.live import LiveApi, live_api  # noqa: F401  (fixture)
from tests.utils.poll import wait_for

pytestmark = pytest.mark.integration
HARNESS = Path(__file__).resolve().parent / "browser"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM = "/usr/bin/chromium"


def _harness_ready() -> None:
    assert Path(CHROMIUM).exists(), "chromium is missing: run deploy/local/install-debian-packages.sh (make test does)"
    if not (HARNESS / "node_modules" / "playwright-core").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=HARNESS, check=True, timeout=300)


def test_new_alert_appears_live_and_is_acknowledged(stack: Settings, db: psycopg.Connection,
                                                    live_api: LiveApi) -> None:  # noqa: F811
    _harness_ready()
    anonymous = httpx.get(f"{live_api.url}/", timeout=10)
    assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"].startswith('Basic realm="quantrac"')
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "dashboard.png"
    screenshot.unlink(missing_ok=True)
    station = new_station(db, zone="KCN Đại An")
    cod = station.parameters["COD"].model_copy(update={"resolution": 0.1})
    station = Station.model_validate(station.model_copy(update={"parameters": {**station.parameters, "COD": cod}}).model_dump())
    save_stations(db, {station.id: station})
    other = new_station(db, zone="KCN Phúc Điền")
    with db.transaction():  # a gateway that sent something broken an hour ago: the station stays online, marked
        db.execute("INSERT INTO deadletters (topic_partition, topic_offset, kafka_topic, source, stage, topic, reason, message, "
                   "received_at, station_id, payload) VALUES (0, 0, %s, 'mqtt', 'bridge', 't', 'bad_json', 'm', "
                   "now() - interval '1 hour', %s, '\\x00')", (f"browser-test-{station.id}", station.id))
    apply(stack.pg_dsn, [condition(station.id, 204.1234, rule="anomaly_spike", limit=6.0, score=15.2834,
                                   severity=Severity.WARNING, minutes=-5)])
    [silenced] = apply(stack.pg_dsn, [Condition(other.id, "COD", "early_warning_1h", "1h", Severity.WARNING, 85.04999, 100.0,
                                                "test limit", NOW, "1-h mean near the limit")])
    wide = new_station(db, zone="KCN Đại An")
    apply(stack.pg_dsn, [Condition(wide.id, "*", "station_clock", "instant", Severity.WARNING, 7200.0, 1800.0,
                                   "clock lag bound", NOW, "clock 2 h behind")])
    with db.transaction():
        silences.create(db, station_id=other.id, parameter=None, starts_at=datetime.now(timezone.utc) - timedelta(minutes=1),
                        ends_at=datetime.now(timezone.utc) + timedelta(hours=1), reason="maintenance", note=None, actor="test")
    now = datetime.now(timezone.utc)
    store_readings(stack.pg_dsn, [Reading(station_id=station.id, parameter="COD", value=60.0 + 10 * (i % 5), unit="mg/L",
                                          ts=now - timedelta(minutes=5 * i)) for i in range(24)])
    node = subprocess.Popen([shutil.which("node") or "node", "dashboard.mjs", live_api.url, live_api.operator_key,
                             str(screenshot)], cwd=HARNESS, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in node.stdout], daemon=True).start()  # type: ignore[union-attr]
    try:
        first = lines.get(timeout=60)
        assert first.strip() == "READY", first + "".join(lines.queue)
        [alert] = apply(stack.pg_dsn, [condition(station.id, 250.04321)])
        setup = {"station": station.id, "other": other.id, "otherZone": other.zone, "silencedAlert": silenced["id"],
                 "wide": wide.id}
        node.stdin.write(orjson.dumps(setup).decode() + "\n")  # type: ignore[union-attr]
        node.stdin.flush()  # type: ignore[union-attr]
        wait_for(lambda: db.execute("SELECT status FROM alerts WHERE id = %s", (alert["id"],)).fetchone() == ("acknowledged",),
                 timeout=60, interval=0.2, what="the dashboard to acknowledge the alert")
        apply(stack.pg_dsn, [condition(station.id, 60.0, minutes=2)])  # clear: its hold starts, the alert stays
        result = orjson.loads(lines.get(timeout=90))
        assert node.wait(timeout=30) == 0, result
    finally:
        if node.poll() is None:
            node.kill()
            node.wait(5)
    assert result["errors"] == [] and result["pageStatus"] == 200
    assert int(result["alertId"]) == alert["id"] and "250.0 mg/L" in result["rowBefore"]
    assert "Đã xác nhận" in result["rowAfter"] or "Acknowledged" in result["rowAfter"]
    clear_local = (NOW + timedelta(minutes=2)).astimezone(ZoneInfo("Asia/Ho_Chi_Minh"))
    assert result["statusClearing"] == f"Acknowledged · clear since {clear_local:%d/%m/%Y, %H:%M:%S}", result["statusClearing"]
    assert result["titleVi"].startswith("Trung tâm") and result["titleEn"].startswith("Automatic monitoring")
    assert result["zones"] >= 1 and result["external"] == [], "the dashboard must load nothing from outside"
    assert result["refused"] == " ⚠1" and result["refusedTitle"].startswith("1 dead letter of its data in 24 h")
    assert result["refusedElsewhere"] == 0, "a station with no dead letter is not marked"
    row = db.execute("SELECT status, acknowledged_by FROM alerts WHERE id = %s", (alert["id"],)).fetchone()
    assert row == ("acknowledged", "live-operator (operator)")
    assert result["lateRequests"] >= 1, "the harness delays the other parameters' readings to test the chart's race"
    assert result["chartAfterLate"] == 1, "a late answer for a parameter no longer selected replaced the chart"
    assert result["chartPoints"] == 24 and result["limitLines"] == 1
    assert screenshot.stat().st_size > 10_000
    # triage: one group per station, its alerts right under it
    assert result["grouped"] and {station.id, other.id} <= set(result["groups"])
    rows = {r["rule"]: r["cells"] for r in result["stationRows"]}
    assert set(rows) == {"exceedance", "anomaly_spike"} and all(len(cells) == 8 and cells[6] for cells in rows.values())
    assert "Above limit" in rows["exceedance"][2] and "instantaneous value" in rows["exceedance"][2]
    assert rows["exceedance"][3] == "250.0 mg/L / 100.0"  # rounded to COD's resolution, 0.1
    assert "Anomaly: spike" in rows["anomaly_spike"][2]
    assert rows["anomaly_spike"][3] == "reading 204.1 mg/L" and rows["anomaly_spike"][4] == "15.28 (threshold 6)"
    [other_row] = result["otherRows"]
    assert "Early warning" in other_row["cells"][2] and "1-hour mean" in other_row["cells"][2]
    assert other_row["cells"][3] == "85.05 mg/L / 100"  # no resolution configured: four significant digits
    [wide_row] = result["wideRows"]  # a station-wide alert names no parameter and no averaging basis
    assert wide_row["cells"][1] == "whole station" and wide_row["cells"][2] == "Station clock behind or stuck"
    assert wide_row["cells"][3] == "2 h / 30 min"  # a lag in seconds, as a person reads it
    # filters
    assert result["byRule"] and {r["rule"] for r in result["byRule"]} == {"anomaly_spike"}
    assert other.id in result["byZone"] and station.id not in result["byZone"]
    assert result["bySeverity"] and {r["severity"] for r in result["bySeverity"]} == {"warning"}
    assert {r["station"] for r in result["bySeverity"]} >= {station.id, other.id}
    # suppressed: counted in the summary, listed one click away
    assert re.fullmatch(r"Notifications held back: \d+ \(\d+ silenced, \d+ inhibited by an offline station\)",
                        result["suppressedSummary"]), result["suppressedSummary"]
    assert not result["suppressedVisibleBefore"] and result["suppressedVisibleAfter"]
    assert other.id in result["suppressedItem"] and "silenced" in result["suppressedItem"] and "maintenance" in result["suppressedItem"]
