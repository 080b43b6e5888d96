"""A small client of the quantrac API for notebooks: readings, alerts and completeness as pandas DataFrames.

    from quantrac.client import Client
    c = Client("http://127.0.0.1:8000", api_key="qk_...")
    df = c.readings("HD-DAIAN-WW01", ["COD"], "2026-11-01", "2026-12-01", bucket="1h")

Times given without an offset are Asia/Ho_Chi_Minh; every DataFrame has a tz-aware index in
Asia/Ho_Chi_Minh. Raw readings are fetched page by page (`page_size` rows a request); alerts follow
the API's cursor.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Iterable, Literal, TypeAlias
from zoneinfo import ZoneInfo

import httpx
import pandas as pd

ZONE = ZoneInfo("Asia/Ho_Chi_Minh")
When: TypeAlias = datetime | str | pd.Timestamp


def _instant(when: When) -> str:
    ts = pd.Timestamp(when)
    return (ts.tz_localize(ZONE) if ts.tzinfo is None else ts).isoformat()


def _frame(rows: list[dict[str, Any]], time_column: str, columns: Iterable[str]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=[time_column, *[c for c in columns if c != time_column]])
    frame[time_column] = pd.to_datetime(frame[time_column], utc=True).dt.tz_convert(ZONE)
    return frame.set_index(time_column).sort_index(kind="stable")


class Client:
    """One API base URL and key; `close()` (or `with`) releases the connection pool."""

    def __init__(self, base_url: str, api_key: str, *, timeout: float = 60.0, page_size: int = 50_000) -> None:
        self.http = httpx.Client(base_url=base_url.rstrip("/"), headers={"X-API-Key": api_key}, timeout=timeout)
        self.page_size = page_size

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the HTTP connection pool; the client cannot be used afterwards."""
        self.http.close()

    def _get(self, path: str, params: dict[str, Any]) -> dict[str, Any]:
        response = self.http.get(path, params={k: v for k, v in params.items() if v is not None})
        if response.status_code >= 400:
            raise RuntimeError(f"GET {path} answered {response.status_code}: {response.text[:500]}")
        return response.json()

    def readings(self, station: str, parameters: Iterable[str] | None, start: When, end: When,
                 bucket: Literal["raw", "5m", "1h", "1d"] = "raw") -> pd.DataFrame:
        """Readings over [start, end): raw (columns parameter, value, unit, status) or bucketed
        (parameter, avg, min, max, count, count_valid, missing), indexed by time in Asia/Ho_Chi_Minh."""
        path = f"/api/v1/stations/{station}/readings"
        params: dict[str, Any] = {"parameter": list(parameters) if parameters else None, "to": _instant(end), "bucket": bucket}
        if bucket != "raw":
            body = self._get(path, {**params, "from": _instant(start)})
            return _frame(body["data"], "bucket", ("parameter", "avg", "min", "max", "count", "count_valid", "missing"))
        rows: list[dict[str, Any]] = []
        seen: set[tuple[str, str]] = set()
        cursor = _instant(start)
        while True:
            body = self._get(path, {**params, "from": cursor, "limit": self.page_size})
            fresh = [r for r in body["data"] if (r["parameter"], r["ts"]) not in seen]
            rows.extend(fresh)
            seen.update((r["parameter"], r["ts"]) for r in fresh)
            if not body["truncated"] or not fresh:
                break
            cursor = body["data"][-1]["ts"]
        return _frame(rows, "ts", ("parameter", "value", "unit", "status"))

    def alerts(self, station: str | None = None, start: When | None = None, end: When | None = None,
               **filters: Any) -> pd.DataFrame:
        """Alerts opened in [start, end) (all pages), indexed by `opened_at` in Asia/Ho_Chi_Minh."""
        rows: list[dict[str, Any]] = []
        cursor: int | None = None
        while True:
            body = self._get("/api/v1/alerts", {"station": station, "from": _instant(start) if start else None,
                                                "to": _instant(end) if end else None, "cursor": cursor, "limit": 1000, **filters})
            rows.extend(body["data"])
            cursor = body.get("next_cursor")
            if cursor is None:
                break
        columns = list(rows[0]) if rows else ["opened_at", "id", "station_id", "parameter", "rule", "severity", "status"]
        return _frame(rows, "opened_at", columns)

    def completeness(self, station: str, start: When, end: When, period: Literal["hour", "day"] = "hour") -> pd.DataFrame:
        """Completeness per hour or local day, indexed by the period's start in Asia/Ho_Chi_Minh."""
        body = self._get(f"/api/v1/stations/{station}/completeness", {"period": period, "from": _instant(start), "to": _instant(end)})
        columns = list(body["data"][0]) if body["data"] else ["start", "end"]
        return _frame(body["data"], "start", columns)
