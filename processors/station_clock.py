"""A station whose readings' times fall behind their arrival and do not catch up: its gateway's clock is behind or stuck.

The bridge refuses a time more than a few minutes ahead (`future`), but a time behind is what a
backlog looks like, so it is taken. A gateway whose clock stopped keeps delivering readings of one
old time: they are duplicates or `conflict` dead letters, nothing new is stored, and the station still
looks alive (`processors.liveness` judges silence on receipt, not on event time). A clock hours behind
stores every reading at the wrong time. Either way the centre's data of that station is wrong while
nothing else says so.

Judged on the liveness entry's newest event time and newest receipt (the bridge's receive time, not
the worker's clock, so a worker working off a backlog sees the lags as they were): the *lag* is receipt
minus event time. Once the lag exceeds the station's bound, its deliveries are watched for one bound's
worth of receive time; a backlog being resent catches up (its event time advances by more than the
receive time plus one expected interval), a clock behind or stuck does not, and raises `station_clock`
(again at each such window while it lasts, with the lag then). Once the lag is back under the bound,
every delivery clears it until the alerts' clear hold has passed, so the alert resolves as any other. The bound is `QUANTRAC_CLOCK_LAG_ALERT_S` or the station's `clock_lag_alert_s`,
and never under three expected intervals (a station that stamps hourly means at the hour's start lags
by an hour by design: give it its own bound). The watch is stored with the station's liveness entry
(`processors.worker_state`), so a restart or a rebalance carries on with its window.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from alerts.lifecycle import holding_clear
from alerts.rules import Condition, judge_clock
from quantrac.domain import Station

Watch = dict[str, Any]
"""`"alerted"`; while the lag is over the bound, `"received_at"`, `"event_ts"` and `"latest_ts"` (ISO 8601: the receipt,
the station's newest time and the delivery's own newest time) where its window started; while an alert clears,
`"clear_since"`."""


def bound_s(station: Station, default_s: float) -> float:
    """The lag above which the station's clock is watched."""
    own = station.clock_lag_alert_s
    return max(float(own if own is not None else default_s), 3.0 * station.expected_interval_s)


def watch(previous: Watch | None, station: Station, event_ts: datetime, received_at: datetime, default_s: float,
          clear_hold_s: float, latest_ts: datetime | None = None) -> tuple[Watch | None, Condition | None]:
    """The watch after a delivery, from the newest event time and receipt of all the station's so far, and the
    `station_clock` condition it raises or clears (None: nothing to say).

    `latest_ts`: the newest event time of this delivery alone. A clock set back mid-stream (a gateway that
    starts sending UTC marked +07:00) leaves the station's newest time where it was, so the lag grows as if the
    clock had stopped; the delivery's own times tell the two apart: they run on with the deliveries, a whole
    number of hours behind them."""
    previous = previous or {}
    bound = bound_s(station, default_s)
    lag = (received_at - event_ts).total_seconds()
    latest = event_ts if latest_ts is None else latest_ts
    if lag > bound:
        window = {"received_at": received_at.isoformat(), "event_ts": event_ts.isoformat(), "latest_ts": latest.isoformat()}
        if "received_at" not in previous:
            return {"alerted": bool(previous.get("alerted")), **window}, None
        watched_s = (received_at - datetime.fromisoformat(previous["received_at"])).total_seconds()
        if watched_s < bound:
            return previous, None
        advanced_s = (event_ts - datetime.fromisoformat(previous["event_ts"])).total_seconds()
        if advanced_s > watched_s + station.expected_interval_s:  # catching up: a backlog
            return {"alerted": bool(previous.get("alerted")), **window}, None
        latest_advanced_s = (latest - datetime.fromisoformat(previous.get("latest_ts") or previous["event_ts"])).total_seconds()
        running = abs(latest_advanced_s - watched_s) <= station.expected_interval_s
        return {"alerted": True, **window}, judge_clock(station, lag, bound, received_at, behind=True,
                                                        advanced_s=advanced_s, watched_s=watched_s,
                                                        latest_lag_s=(received_at - latest).total_seconds() if running else None)
    if not previous.get("alerted"):
        return None, None
    since = holding_clear(previous.get("clear_since"), received_at, clear_hold_s)
    return ({"alerted": True, "clear_since": since} if since else None), judge_clock(station, lag, bound, received_at,
                                                                                      behind=False)
