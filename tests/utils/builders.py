"""Data builders for tests: stations with known limits, payloads in the MQTT contract."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

import orjson

from quantrac.domain import Limit, ParameterSpec, Station, StationKind


def make_station(station_id: str | None = None, *, cod_limit: float = 100.0, zone: str = "KCN Test",
                 expected_interval_s: int = 300) -> Station:
    """A wastewater station with COD (limit `cod_limit`), pH (5.5–9) and Flow (no limit)."""
    return Station(
        id=station_id or f"T-{uuid.uuid4().hex[:10]}", name="Test outlet", zone=zone, facility="Test facility",
        kind=StationKind.WASTEWATER, expected_interval_s=expected_interval_s,
        parameters={
            "COD": ParameterSpec(symbol="COD", unit="mg/L", limit=Limit(high=cod_limit, source="test limit"), range_min=0, range_max=2000),
            "pH": ParameterSpec(symbol="pH", unit="-", limit=Limit(low=5.5, high=9.0, source="test pH"), range_min=0, range_max=14),
            "Flow": ParameterSpec(symbol="Flow", unit="m3/h", range_min=0, range_max=5000),
        },
    )


def payload(ts: datetime | None = None, **values: Any) -> bytes:
    """A contract payload; keyword arguments are parameter=value (or parameter=(value, status))."""
    ts = ts or datetime.now(timezone.utc)
    readings = []
    units = {"COD": "mg/L", "pH": "-", "Flow": "m3/h"}
    for parameter, value in values.items():
        status = "00"
        if isinstance(value, tuple):
            value, status = value
        readings.append({"parameter": parameter, "value": value, "unit": units.get(parameter, "mg/L"), "status": status})
    return orjson.dumps({"ts": ts.isoformat(), "readings": readings})


def topic(station_id: str) -> str:
    return f"quantrac/v1/stations/{station_id}/readings"
