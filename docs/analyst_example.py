"""Example: a station's month from the API, plotted with its limit and alerts, and its exceedance hours.

    .venv/bin/python docs/analyst_example.py --url http://127.0.0.1:8000 --key qk_... \\
        --station HD-DAIAN-WW01 --parameter COD --month 2026-11 --out cod-2026-11.png

Needs matplotlib (in the `dev` extra). An exceedance hour is an hour whose mean (the 1-h rollup,
valid readings only) is above the station's limit for the parameter, as in the compliance report.
"""

from __future__ import annotations

import argparse

import httpx
import pandas as pd

from quantrac.client import ZONE, Client


def month_range(month: str) -> tuple[pd.Timestamp, pd.Timestamp]:
    """First and last instant of a month in Vietnam time, as the API expects them."""
    start = pd.Timestamp(f"{month}-01").tz_localize(ZONE)
    return start, start + pd.offsets.MonthBegin(1)


def exceedance_hours(hourly: pd.DataFrame, limit: float | None) -> pd.Series:
    """Hourly means above the limit (none when the parameter has no limit)."""
    if limit is None:
        return hourly.avg.iloc[0:0]
    return hourly.avg[hourly.avg > limit]


def main() -> None:
    """Fetch a month of one station's hourly history and print it as a table."""
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--url", default="http://127.0.0.1:8000")
    args.add_argument("--key", required=True, help="API key with the history permission (analyst or admin).")
    args.add_argument("--station", required=True)
    args.add_argument("--parameter", required=True)
    args.add_argument("--month", required=True, help="YYYY-MM (local time, Asia/Ho_Chi_Minh)")
    args.add_argument("--out", default="station-month.png")
    a = args.parse_args()

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    start, end = month_range(a.month)
    stations = httpx.get(f"{a.url}/api/v1/stations", headers={"X-API-Key": a.key}, timeout=30).json()["data"]
    spec = next(s for s in stations if s["id"] == a.station)["parameters"][a.parameter]
    limit = (spec.get("limit") or {}).get("high")
    with Client(a.url, a.key) as client:
        hourly = client.readings(a.station, [a.parameter], start, end, bucket="1h")
        alerts = client.alerts(a.station, start, end, parameter=a.parameter)
    over = exceedance_hours(hourly, limit)

    fig, ax = plt.subplots(figsize=(12, 4))
    ax.plot(hourly.index, hourly.avg, lw=0.8, label=f"{a.parameter} 1-h mean ({spec['unit']})")
    if limit is not None:
        ax.axhline(limit, color="red", ls="--", lw=1, label=f"limit {limit:g}")
    for opened, row in alerts.iterrows():
        ax.axvspan(opened, pd.Timestamp(row.last_ts), color="orange" if row.get("historical") else "red", alpha=0.2)
    ax.scatter(over.index, over.values, color="red", s=8, label=f"{len(over)} exceedance hours")
    ax.set_title(f"{a.station} {a.parameter} {a.month} (Asia/Ho_Chi_Minh)")
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(a.out, dpi=120)
    print(f"{a.out}: {len(hourly)} hours, {len(alerts)} alerts, {len(over)} exceedance hours")


if __name__ == "__main__":
    main()
