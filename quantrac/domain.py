"""The domain model: stations, their parameters, readings and alerts.

Symbols and status codes follow Circular 10/2021/TT-BTNMT (Appendix 15, Table 34).
Every timestamp is timezone-aware; storage is UTC, display is Asia/Ho_Chi_Minh.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

NATIONAL_SYMBOLS: tuple[str, ...] = (
    "Flow", "Temp", "Color", "pH", "TSS", "COD", "NH4", "TP", "TN", "TOC", "Cl", "RH", "P",
    "NO", "NO2", "CO", "SO2", "O2", "H2S", "NH3", "VHg", "PM", "O3", "PM10", "PM2,5",
)
"""Parameter symbols of Circular 10/2021 Table 34, in the table's order (note `PM2,5`)."""


class Status(StrEnum):
    """Device status sent with every value (Circular 10/2021 Art. 39)."""

    MEASURING = "00"
    CALIBRATING = "01"
    FAULT = "02"


class StationKind(StrEnum):
    """What a station monitors; it selects the regulation and the detector preset."""
    WASTEWATER = "wastewater"
    EMISSION = "emission"
    DRINKING_WATER = "drinking_water"
    SURFACE_WATER = "surface_water"


class Severity(StrEnum):
    """How urgently an alert needs a person."""
    WARNING = "warning"
    CRITICAL = "critical"


class AlertStatus(StrEnum):
    """Where an alert is in its lifecycle."""
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


def _require_aware(ts: datetime) -> datetime:
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise ValueError("timestamp has no UTC offset; send ISO 8601 with an offset, e.g. 2026-11-29T21:05:00+07:00")
    return ts


AwareDatetime = Annotated[datetime, AfterValidator(_require_aware)]


class Limit(BaseModel):
    """The limit that applies to one parameter at one station, with where it comes from.

    `high` is the effective maximum (already multiplied by the station's factors);
    `low` exists only for two-sided parameters such as pH.
    """

    model_config = ConfigDict(frozen=True)

    high: float | None = None
    low: float | None = None
    source: str = Field(description="Regulation, column and factors, or the permit, e.g. 'QCVN 40:2011/BTNMT col. B x Kq 0.9 x Kf 1.0'.")


class ParameterSpec(BaseModel):
    """One parameter a station reports."""

    model_config = ConfigDict(frozen=True)

    symbol: str
    unit: str
    limit: Limit | None = None
    range_min: float | None = Field(None, description="Instrument range; values outside it mean a device fault.")
    range_max: float | None = None
    max_rate_per_min: float | None = Field(None, description="Largest plausible change per minute (in the unit); faster means a rate-of-change alert. Judged on robust levels about a span apart (`rate_span_s`), not on two readings. Configuration [U].")
    resolution: float | None = Field(None, gt=0, description="Smallest step the instrument reports (in the unit); floors every detector's scale estimate. None: learned from the data. Configuration [U].")
    rate_span_s: float | None = Field(None, gt=0, description="Span the rate of change is judged over (seconds); None: QUANTRAC_DETECT_RATE_SPAN_S. The station's interval when that is longer.")
    detectors: tuple[str, ...] | None = Field(None, description="Anomaly detectors run on this parameter (names of processors.detectors.DETECTORS), each from the station's preset when it has a channel for it, else at the worker's hyperparameters; None: what the station's preset runs on it, empty: none.")


WEEK_S = 7 * 86400
"""The longest interval and offline grace a station may have: beyond it, time arithmetic is no longer about a station."""
MAX_RETENTION_DAYS = 36500
"""A century: a longer retention keeps everything anyway, and cutoffs before year 1 cannot be computed."""


class DetectorChannel(BaseModel):
    """One anomaly detector over one parameter (a vector detector: over a group), as a preset or a station gives it.

    The worker builds it as `bench/` does (`processors.detectors.presets.build`): the same detector,
    the same hyperparameters, so a preset's bench figure describes what the worker runs.
    """

    model_config = ConfigDict(frozen=True)

    detector: str = Field(description="Name of a detector of processors.detectors.DETECTORS (spike, drift, flatline, multivariate).")
    columns: tuple[str, ...] | None = Field(None, description="Parameters it runs on: one for a scalar detector, the group for a vector one. None: every parameter of the station (scalar detectors only).")
    params: dict[str, Any] | None = Field(None, description="Hyperparameters, exactly (over the detector's own defaults). None: the worker's QUANTRAC_DETECT_DETECTOR_PARAMS with the parameter's resolution as scale floor.")


class Station(BaseModel):
    """A discharge monitoring station (a wastewater outlet or a stack)."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    name: str
    zone: str = Field(description="Industrial zone or cluster.")
    facility: str
    kind: StationKind
    expected_interval_s: int = Field(300, gt=0, le=WEEK_S, description="How often the station should report (at most a week).")
    offline_grace_s: int | None = Field(None, ge=0, le=WEEK_S, description="Grace after a missed slot before the station is reported offline; None: the worker's default.")
    clock_lag_alert_s: int | None = Field(None, gt=0, le=WEEK_S, description="Lag of its readings' times behind their arrival above which its clock is watched and, if they do not catch up, reported (`station_clock`); None: QUANTRAC_CLOCK_LAG_ALERT_S. Never under three expected intervals.")
    regulation: str | None = Field(None, description="Regulation table its limits come from, e.g. 'qcvn40_2011'; None when only permit limits apply.")
    column: str | None = Field(None, description="Column of the regulation that applies (A or B).")
    factors: dict[str, float] = Field(default_factory=dict, description="Adjustment factor values (Kq, Kf, Kp, Kv) the limits were computed with.")
    gateway: str | None = Field(None, description="Id of the gateway (MQTT account) that publishes for this station; None: its own id.")
    retention_days: int | None = Field(None, gt=0, le=MAX_RETENTION_DAYS, description="Days of this station's readings kept (ingest's too_old bound and the worker's retention pass); None: QUANTRAC_RETENTION_DAYS. Set it to keep an archive older than the live window.")
    history_only: bool = Field(False, description="The station exists for its imported history (no live gateway): never reported offline.")
    parameters: dict[str, ParameterSpec]
    detector_preset: str | None = Field(None, description="Detector preset it runs (a file quantrac/data/presets/<name>.json; `quantrac presets list`). None: the preset of its kind. Ignored when `channels` is given.")
    channels: tuple[DetectorChannel, ...] | None = Field(None, description="Its own detector channels; they replace any preset. None: the named preset, else its kind's.")

    @model_validator(mode="after")
    def _detection_is_known(self) -> "Station":
        """The preset it names exists and its channels watch its own parameters (detectors: `processors.detectors.presets`)."""
        from quantrac.presets import preset_names, preset_path

        if self.channels is None:
            name = self.detector_preset
            if name is not None and not preset_path(name).is_file():
                raise ValueError(f"station {self.id}: detector_preset {name!r} is not a preset; name one of "
                                 f"{preset_names()} or leave it out for its kind's preset ({self.kind.value})")
            return self
        for channel in self.channels:
            missing = [c for c in channel.columns or () if c not in self.parameters]
            if missing:
                raise ValueError(f"station {self.id}, parameter {', '.join(channel.columns or ())}: channel "
                                 f"{channel.detector} names {missing}, which the station does not report; use some of "
                                 f"{sorted(self.parameters)}")
        return self

    def parameter(self, symbol: str) -> ParameterSpec | None:
        """The station's spec of parameter `symbol`; None when the station does not report it."""
        return self.parameters.get(symbol)


class Reading(BaseModel):
    """One measured value of one parameter at one station at one event time."""

    model_config = ConfigDict(frozen=True)

    station_id: str
    parameter: str
    value: float | None
    unit: str
    ts: AwareDatetime
    status: Status = Status.MEASURING

    @property
    def is_valid_measurement(self) -> bool:
        """True when the value counts towards means and limits (status 00 and a finite value)."""
        return self.status is Status.MEASURING and self.value is not None and math.isfinite(self.value)


class Alert(BaseModel):
    """An alert as the API shows it."""

    id: int
    station_id: str
    parameter: str
    rule: str
    basis: str = Field(description="Averaging basis: instant, 5m, 1h, 24h.")
    severity: Severity
    status: AlertStatus
    opened_at: datetime
    updated_at: datetime
    last_value: float | None = Field(description="The latest reading's value (a window mean for a window rule); for an anomaly too, the reading's value, not the score.")
    peak_value: float | None
    limit: float | None = Field(description="The limit the value broke; for an anomaly the detector's score threshold.")
    score: float | None = Field(None, description="Anomaly rules: the detector's score of the latest reading, judged against `limit`; null for the others.")
    limit_source: str | None
    count: int
    message: str
    historical: bool = Field(False, description="Raised on imported (backfilled) readings: shown, never notified.")


BUCKETS: dict[str, timedelta] = {"5m": timedelta(minutes=5), "1h": timedelta(hours=1), "1d": timedelta(days=1)}

ReasonCode = Literal[
    "oversize", "not_utf8", "bad_json", "schema", "topic_mismatch", "unknown_station", "station_retired", "unknown_parameter",
    "bad_unit", "bad_value", "bad_status", "missing_value", "no_offset", "future", "too_old", "empty", "conflict",
    "too_many_rejections", "quarantined", "bad_filename", "empty_file", "not_a_file", "bad_time",
]


def utc(ts: datetime) -> datetime:
    """The same instant in UTC."""
    return _require_aware(ts).astimezone(timezone.utc)
