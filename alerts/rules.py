"""Alert rules: pure functions from what a station reported to the conditions it breaks (or clears).

A `Condition` is what a rule found; `alerts.alerts_table` turns conditions into alerts (one active alert
per station + parameter + rule). Every condition names its rule, averaging basis, limit and the
limit's source. A rule that was evaluated and found clear returns its condition with
`active=False`, so the alert lifecycle can resolve an open alert after its hold time.

Rule names carry the averaging basis when it is not the instantaneous value (`exceedance_1h`),
because an alert is keyed by station + parameter + rule: the instantaneous and the 1-h exceedance of
one parameter are two alerts, each with its own basis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from quantrac.domain import Limit, ParameterSpec, Severity, Station
from quantrac.mqtt_accounts import READINGS_TOPIC

OpenKeys = set[tuple[str, str, str]]
"""(station, parameter, rule) keys that may have an open alert.

Given to a rule (`open_keys=`), it builds a clear condition only for a key in the set (a clear
condition on a key with no open alert changes nothing, and about 99.9 % of them are), and adds the
key of every active condition it builds, so that a clear one later in the same batch is built."""


@dataclass(frozen=True)
class Condition:
    """One judgement of a rule on a series at an event time: active or clear, with its value and limit."""
    station_id: str
    parameter: str
    rule: str
    basis: str
    severity: Severity
    value: float | None
    """The reading's value (a mean's for a window rule; the measured quantity for status and liveness rules); None for a group."""
    limit: float
    limit_source: str
    ts: datetime
    message: str
    active: bool = True
    """False when the rule was evaluated and the condition is clear (lets the lifecycle resolve alerts)."""
    historical: bool = False
    """Raised from imported (backfilled) readings: the alert is marked historical and never notified."""
    data_stopped: bool = False
    """The series' data stopped at `ts` for longer than the gap span: an open alert closes at once, at `ts`."""
    score: float | None = None
    """A detector's score (anomaly rules), judged against `limit`; None for the other rules."""


def wanted(open_keys: OpenKeys | None, station_id: str, parameter: str, rule: str, active: bool) -> bool:
    """Whether to build this condition (see `OpenKeys`); None: every condition is built."""
    if open_keys is None:
        return True
    key = (station_id, parameter, rule)
    if active:
        open_keys.add(key)
        return True
    return key in open_keys


def rule_name(rule: str, basis: str) -> str:
    """`exceedance` for the instantaneous value, `exceedance_1h` for the 1-h mean, and so on."""
    return rule if basis == "instant" else f"{rule}_{basis}"


def _where(station: Station, parameter: str) -> str:
    return f"station {station.id} ({station.name}), {parameter}"


def _what(basis: str) -> str:
    return "value" if basis == "instant" else f"{basis} mean"


UNITLESS = frozenset({"", "-"})
"""Units of a parameter measured without one (the catalogue writes pH's as "-")."""


def unit_suffix(unit: str) -> str:
    """What follows a number in a message: " mg/L", or nothing for a unitless parameter ("pH 9.6", not "9.6 -")."""
    return "" if unit.strip() in UNITLESS else f" {unit}"


LIMIT_RULES = ("exceedance", "early_warning", "below_minimum")
"""The rules `judge_limit` judges (with the basis suffix for a mean, `rule_name`)."""


def warn_from(limit: Limit, early_fraction: float | None) -> float | None:
    """The value above which `early_warning` holds (up to the limit): a fraction of a one-sided positive maximum."""
    if early_fraction is None or limit.low is not None or limit.high is None or limit.high <= 0:
        return None
    return early_fraction * limit.high


def limit_flags(value: Any, high: Any, low: Any, warn: Any) -> tuple[Any, Any, Any]:
    """(above, early warning, below) of `judge_limit`, on numbers or numpy arrays alike; a missing bound is NaN."""
    return value > high, (warn < value) & (value <= high), value < low


def judge_limit(station: Station, parameter: str, value: float, ts: datetime, basis: str = "instant",
                early_fraction: float | None = 0.8, *, open_keys: OpenKeys | None = None) -> list[Condition]:
    """Conditions of one value (or window mean) against its station's limit, active or clear.

    Rules: `exceedance` above the maximum, `below_minimum` under the minimum (pH), and
    `early_warning` above `early_fraction` of a one-sided maximum while still within it.
    """
    spec = station.parameter(parameter)
    if spec is None or spec.limit is None:
        return []
    limit, unit, what = spec.limit, unit_suffix(spec.unit), _what(basis)
    where = _where(station, parameter)
    found: list[Condition] = []
    threshold = warn_from(limit, early_fraction)
    above, warn, below = limit_flags(value, or_nan(limit.high), or_nan(limit.low), or_nan(threshold))
    if limit.high is not None:
        if wanted(open_keys, station.id, parameter, rule_name("exceedance", basis), above):
            found.append(Condition(
                station.id, parameter, rule_name("exceedance", basis), basis, Severity.CRITICAL, value, limit.high, limit.source,
                ts, f"{where}: {what} {value:g}{unit} is {'above' if above else 'within'} the limit {limit.high:g}{unit} "
                f"({basis}; {limit.source})", active=above))
        if threshold is not None:
            if wanted(open_keys, station.id, parameter, rule_name("early_warning", basis), warn):
                found.append(Condition(
                    station.id, parameter, rule_name("early_warning", basis), basis, Severity.WARNING, value, limit.high,
                    limit.source, ts, f"{where}: {what} {value:g}{unit} is {value / limit.high:.0%} of the limit "
                    f"{limit.high:g}{unit} (early warning above {early_fraction:.0%}; {basis}; {limit.source})", active=warn))
    if limit.low is not None:
        if wanted(open_keys, station.id, parameter, rule_name("below_minimum", basis), below):
            found.append(Condition(
                station.id, parameter, rule_name("below_minimum", basis), basis, Severity.CRITICAL, value, limit.low, limit.source,
                ts, f"{where}: {what} {value:g}{unit} is {'below' if below else 'above'} the minimum {limit.low:g}{unit} "
                f"({basis}; {limit.source})", active=below))
    return found


def or_nan(bound: float | None) -> float:
    """A bound as a number for `limit_flags` and `outside`: NaN where there is none (every comparison with it is false)."""
    return math.nan if bound is None else float(bound)


def judge_range(station: Station, spec: ParameterSpec, value: float, ts: datetime, *,
                open_keys: OpenKeys | None = None) -> Condition | None:
    """`out_of_range`: a value outside the instrument's range is a device fault, not a measurement."""
    if spec.range_min is None and spec.range_max is None:
        return None
    low_out = spec.range_min is not None and value < spec.range_min
    high_out = spec.range_max is not None and value > spec.range_max
    if not wanted(open_keys, station.id, spec.symbol, "out_of_range", low_out or high_out):
        return None
    bound = spec.range_min if low_out else spec.range_max if spec.range_max is not None else spec.range_min
    unit = unit_suffix(spec.unit)
    return Condition(
        station.id, spec.symbol, "out_of_range", "instant", Severity.WARNING, value, float(bound),  # type: ignore[arg-type]  # bound is not None: the early return leaves range_min or range_max set, and the one chosen is the set one
        f"instrument range {spec.range_min}–{spec.range_max}{unit}", ts,
        f"{_where(station, spec.symbol)}: {value:g}{unit} is outside the instrument range "
        f"{spec.range_min:g}–{spec.range_max:g}{unit}; check the analyser (device fault), the value is kept out of means"
        if low_out or high_out else f"{_where(station, spec.symbol)}: {value:g}{unit} is within the instrument range",
        active=low_out or high_out)


def in_range(spec: ParameterSpec, value: float) -> bool:
    """Whether the value lies inside the analyser's measuring range (out of range is an instrument problem, not a breach)."""
    return not outside(value, or_nan(spec.range_min), or_nan(spec.range_max))


def outside(value: Any, low: Any, high: Any) -> Any:
    """Whether values lie outside [low, high], on numbers or numpy arrays alike; a missing bound is NaN."""
    return (value < low) | (value > high)


def judge_rate(station: Station, spec: ParameterSpec, prev_ts: datetime, prev_value: float, ts: datetime,
               value: float, *, at: datetime | None = None, smoothed: bool = False,
               open_keys: OpenKeys | None = None) -> Condition | None:
    """`rate_of_change`: the change per minute from `prev_value` at `prev_ts` to `value` at `ts`, against the bound.

    `max_rate_per_min` is the largest change per minute of the parameter's *level* the process can
    plausibly make, judged over a span (`QUANTRAC_DETECT_RATE_SPAN_S`, default 5 min, or the station's
    interval when longer): the worker passes robust levels about a span apart (`smoothed`, see
    `processors.rate_span`), so a bound of 0.2 pH/min means "the level moved more than 1 pH within
    5 minutes", not "two readings a second apart differ by 0.0033". `at` is the reading that completed
    the span (the condition's time; default `ts`).
    """
    if spec.max_rate_per_min is None:
        return None
    minutes = (ts - prev_ts).total_seconds() / 60.0
    if minutes <= 0:
        return None
    rate = abs(value - prev_value) / minutes
    fast = rate > spec.max_rate_per_min
    if not wanted(open_keys, station.id, spec.symbol, "rate_of_change", fast):
        return None
    what, unit = "level" if smoothed else "value", unit_suffix(spec.unit)
    return Condition(
        station.id, spec.symbol, "rate_of_change", "instant", Severity.WARNING, rate, spec.max_rate_per_min,
        "parameter catalogue max_rate_per_min", at or ts,
        f"{_where(station, spec.symbol)}: {what} changed {prev_value:g} → {value:g}{unit} in {minutes:.3g} min "
        f"({rate:.3g}{unit}/min, bound {spec.max_rate_per_min:g}{unit}/min)", active=fast)


def judge_fault(station: Station, parameter: str, run_count: int, run_seconds: float, ts: datetime,
                after_n: int, after_s: float, *, open_keys: OpenKeys | None = None) -> Condition | None:
    """`device_fault`: status 02 for `after_n` consecutive readings or `after_s` seconds; clear once 00 returns."""
    persisting = run_count >= after_n or (run_count > 0 and run_seconds >= after_s)
    if not wanted(open_keys, station.id, parameter, "device_fault", persisting):
        return None
    return Condition(
        station.id, parameter, "device_fault", "instant", Severity.WARNING, float(run_count), float(after_n),
        f"status 02 for {after_n} readings or {after_s:g} s (worker setting)", ts,
        f"{_where(station, parameter)}: device fault (status 02) for {run_count} readings over {run_seconds / 60:g} min; "
        "send a technician to the analyser" if persisting else f"{_where(station, parameter)}: no persisting device fault",
        active=persisting)


def judge_calibration(station: Station, parameter: str, run_seconds: float, day_seconds: float, ts: datetime,
                      max_s: float, daily_s: float, *, open_keys: OpenKeys | None = None) -> Condition | None:
    """`calibration_overrun`: status 01 continuously beyond `max_s`, or beyond `daily_s` in a local day."""
    over = run_seconds > max_s or day_seconds > daily_s
    if not wanted(open_keys, station.id, parameter, "calibration_overrun", over):
        return None
    return Condition(
        station.id, parameter, "calibration_overrun", "instant", Severity.WARNING, run_seconds / 60, max_s / 60,
        f"calibration allowance {max_s / 60:g} min continuous, {daily_s / 60:g} min a day (worker setting)", ts,
        f"{_where(station, parameter)}: calibrating (status 01) for {run_seconds / 60:g} min continuously, "
        f"{day_seconds / 60:g} min today, beyond the allowance ({max_s / 60:g} min continuous, {daily_s / 60:g} min a day); "
        "ask the facility why" if over else f"{_where(station, parameter)}: calibration within its allowance", active=over)


def judge_anomaly(station: Station, parameter: str, kind: str, is_anomaly: bool, value: float | None, score: float,
                  threshold: float, detail: str, ts: datetime, *, open_keys: OpenKeys | None = None) -> Condition | None:
    """`anomaly_<kind>` from a streaming detector's verdict (severity warning): the reading's value, and the score
    judged against the detector's threshold (`limit`). A group's verdict has no one value."""
    if not wanted(open_keys, station.id, parameter, f"anomaly_{kind}", is_anomaly):
        return None
    return Condition(station.id, parameter, f"anomaly_{kind}", "instant", Severity.WARNING, value, threshold,
                     f"{kind} detector", ts, f"{_where(station, parameter)}: {kind} anomaly: {detail}", active=is_anomaly,
                     score=score)


def judge_data_stopped(station: Station, parameter: str, rule: str, last_ts: datetime, resumed_ts: datetime, *,
                       open_keys: OpenKeys | None = None) -> Condition | None:
    """Clear `rule` at the series' last reading before a gap: an alert does not bridge a gap (`data_stopped`)."""
    if not wanted(open_keys, station.id, parameter, rule, False):
        return None
    gap_min = (resumed_ts - last_ts).total_seconds() / 60
    return Condition(station.id, parameter, rule, "instant", Severity.WARNING, 0.0, 0.0, "data gap", last_ts,
                     f"{_where(station, parameter)}: data stopped at {last_ts.isoformat()} for {gap_min:.0f} min; "
                     f"closed at the gap (the detectors relearn before judging again)", active=False, data_stopped=True)


CLOCK_RULE = "station_clock"
"""The rule of a station whose readings' times lag their arrival and do not catch up (`judge_clock`)."""

ZONE_SLACK_S = 300.0
"""A clock lag within this of a whole number of hours, on a clock that runs, reads as a time zone error."""


def _whole_hours(lag_s: float) -> int | None:
    """The lag as a whole number of hours (at least 1), within `ZONE_SLACK_S`; else None."""
    hours = round(lag_s / 3600)
    return hours if hours >= 1 and abs(lag_s - hours * 3600) <= ZONE_SLACK_S else None


def judge_clock(station: Station, lag_s: float, bound_s: float, at: datetime, *, behind: bool, advanced_s: float = 0.0,
                watched_s: float = 0.0, latest_lag_s: float | None = None) -> Condition:
    """`station_clock` (parameter `*`): the readings' times lag their arrival by more than `bound_s` and do not catch
    up (`processors.station_clock`); clear when the lag is back under the bound. `latest_lag_s`: the lag of the
    latest deliveries' own times, where they ran on with the deliveries (a clock set back while it runs)."""
    where = f"station {station.id} ({station.name})"
    if not behind:
        message = f"{where}: its readings' times are within {bound_s / 60:.0f} min of their arrival again"
    else:
        pace = ("did not advance" if advanced_s <= 0 else
                f"advanced {advanced_s / 60:.0f} min while {watched_s / 60:.0f} min of deliveries arrived")
        zone = "probably a time zone error (local time sent with another offset, e.g. UTC time marked +07:00); " \
               "send each time with its own offset"
        hours = _whole_hours(lag_s) if advanced_s > 0 else None
        set_back = _whole_hours(latest_lag_s) if latest_lag_s is not None else None
        if hours is not None:
            cause = f"a whole {hours} h while the clock runs: {zone}"
        elif set_back is not None:
            cause = (f"its latest messages are stamped a whole {set_back} h behind their arrival and run on with it: "
                     f"the clock was set back, {zone}")
        else:
            cause = ("the gateway's clock is behind or stuck. Set it right (NTP); a station that delivers this late "
                     "by design (files sent an hour after they are written) needs its own clock_lag_alert_s")
        message = (f"{where}: its readings' times run {lag_s / 60:.0f} min behind their arrival and are not catching up "
                   f"(their newest time {pace}); {cause}. Readings of a time already stored are refused as conflicts "
                   f"(GET /api/v1/deadletters?station={station.id}&reason=conflict), the others are stored at the wrong time")
    return Condition(station.id, "*", CLOCK_RULE, "instant", Severity.WARNING, lag_s, bound_s,
                     "clock lag bound", at, message, active=behind)


def judge_offline(station: Station, last_received: datetime, deadline: datetime, now: datetime, offline: bool) -> Condition:
    """`station_offline` (parameter `*`): nothing received by its deadline (expected slot + grace)."""
    silent_s = (now - last_received).total_seconds()
    return Condition(
        station.id, "*", "station_offline", "instant", Severity.CRITICAL, silent_s, (deadline - last_received).total_seconds(),
        f"expected every {station.expected_interval_s} s", now,
        f"station {station.id} ({station.name}) has sent nothing for {silent_s:.0f} s (expected every "
        f"{station.expected_interval_s} s; deadline {deadline.isoformat()}); check its datalogger and link, and that its "
        f"gateway publishes to {READINGS_TOPIC.format(station=station.id)} exactly (the broker drops what an account may "
        "not publish, and acknowledges it to an MQTT 3.1.1 gateway as if taken); messages refused on arrival (a clock "
        f"ahead, a bad payload) do not count: see GET /api/v1/deadletters?station={station.id}"
        if offline else f"station {station.id} ({station.name}) is reporting again", active=offline)
