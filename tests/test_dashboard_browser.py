"""The dashboard end to end in headless Debian chromium (npm playwright-core): the page asks for the key
(HTTP Basic), the browser's cached credential then carries the page's fetch and EventSource requests; see a
new alert arrive live over SSE, acknowledge it; the screenshot is kept in tests/artifacts/dashboard.png."""

from __future__ import annotations

import queue
import shutil
import subprocess
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import orjson
import psycopg
import pytest

from quantrac.domain import Reading
from quantrac.settings import Settings
from tests.alerts_support.helpers import apply, condition, new_station, store_readings
from tests.alerts_support.live import LiveApi, live_api  # noqa: F401  (fixture)

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
        [alert] = apply(stack.pg_dsn, [condition(station.id, 250.0)])
        node.stdin.write(station.id + "\n")  # type: ignore[union-attr]
        node.stdin.flush()  # type: ignore[union-attr]
        result = orjson.loads(lines.get(timeout=90))
        assert node.wait(timeout=30) == 0
    finally:
        if node.poll() is None:
            node.kill()
            node.wait(5)
    assert result["errors"] == [] and result["pageStatus"] == 200
    assert int(result["alertId"]) == alert["id"] and station.id in result["rowBefore"]
    assert "Đã xác nhận" in result["rowAfter"] or "Acknowledged" in result["rowAfter"]
    assert result["titleVi"].startswith("Trung tâm") and result["titleEn"].startswith("Automatic monitoring")
    assert result["zones"] >= 1 and result["external"] == [], "the dashboard must load nothing from outside"
    row = db.execute("SELECT status, acknowledged_by FROM alerts WHERE id = %s", (alert["id"],)).fetchone()
    assert row == ("acknowledged", "live-operator (operator)")
    assert result["chartPoints"] == 24 and result["limitLines"] == 1
    assert screenshot.stat().st_size > 10_000
