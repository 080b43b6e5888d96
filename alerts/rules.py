"""Regulatory limit rules: pure functions from a reading and its limit to the conditions it breaks.

A `Condition` is what a rule found; `alerts.store` turns conditions into alerts (one active alert
per station + parameter + rule). Every condition names its rule, averaging basis, limit and the
limit's source.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Iterable, Mapping

from quantrac.domain import Reading, Severity, Station


@dataclass(frozen=True)
class Condition:
    station_id: str
    parameter: str
    rule: str
    basis: str
    severity: Severity
    value: float
    limit: float
    limit_source: str
    ts: datetime
    message: str
    active: bool = True
    """False when the rule was evaluated and the condition is clear (lets the lifecycle resolve alerts)."""


def limit_conditions(reading: Reading, station: Station, basis: str = "instant") -> list[Condition]:
    """Conditions of one valid reading against its station's limit: above the maximum, below the minimum."""
    spec = station.parameter(reading.parameter)
    if spec is None or spec.limit is None or not reading.is_valid_measurement:
        return []
    value = float(reading.value)  # type: ignore[arg-type]
    limit = spec.limit
    where = f"station {station.id} ({station.name}), {reading.parameter}"
    found: list[Condition] = []
    if limit.high is not None and value > limit.high:
        found.append(Condition(station.id, reading.parameter, "exceedance", basis, Severity.CRITICAL, value, limit.high,
                               limit.source, reading.ts,
                               f"{where}: {value:g} {spec.unit} is above the limit {limit.high:g} {spec.unit} ({basis})"))
    if limit.low is not None and value < limit.low:
        found.append(Condition(station.id, reading.parameter, "below_minimum", basis, Severity.CRITICAL, value, limit.low,
                               limit.source, reading.ts,
                               f"{where}: {value:g} {spec.unit} is below the minimum {limit.low:g} {spec.unit} ({basis})"))
    return found


def evaluate(readings: Iterable[Reading], stations: Mapping[str, Station]) -> list[Condition]:
    """Every condition the given readings break; readings of unknown stations are skipped."""
    found: list[Condition] = []
    for reading in readings:
        station = stations.get(reading.station_id)
        if station is not None:
            found.extend(limit_conditions(reading, station))
    return found
