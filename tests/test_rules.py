"""Every rule on hand-computed cases: what it finds, and that a clear evaluation is reported inactive."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from alerts.rules import (
    judge_anomaly,
    judge_calibration,
    judge_fault,
    judge_limit,
    judge_offline,
    judge_range,
    judge_rate,
    rule_name,
)
from quantrac.domain import Severity
from tests.utils.builders import make_station

TS = datetime(2026, 11, 29, 14, 0, tzinfo=timezone.utc)
ST = make_station("T-1", cod_limit=100)


def _active(conditions):
    return {c.rule for c in conditions if c.active}


def test_rule_names_carry_the_basis_except_instant() -> None:
    assert (rule_name("exceedance", "instant"), rule_name("exceedance", "1h")) == ("exceedance", "exceedance_1h")


@pytest.mark.parametrize(("value", "expected"), [
    (150.0, {"exceedance"}),      # above 100
    (100.0, {"early_warning"}),   # at the limit: not an exceedance, but above 80 %
    (80.5, {"early_warning"}),    # 80.5 > 0.8 x 100
    (80.0, set()),                # exactly 80 % is not above it
    (10.0, set()),
])
def test_exceedance_and_early_warning_on_the_instant_value(value: float, expected: set[str]) -> None:
    found = judge_limit(ST, "COD", value, TS, "instant", early_fraction=0.8)
    assert {c.rule for c in found} == {"exceedance", "early_warning"}  # both evaluated, active or clear
    assert _active(found) == expected


def test_window_basis_names_rule_basis_limit_and_source() -> None:
    [exc, warn] = judge_limit(ST, "COD", 120.0, TS, "1h", early_fraction=0.8)
    assert (exc.rule, exc.basis, exc.severity, exc.limit, exc.limit_source, exc.active) == (
        "exceedance_1h", "1h", Severity.CRITICAL, 100.0, "test limit", True)
    assert "1h mean 120" in exc.message and "T-1" in exc.message and "COD" in exc.message
    assert (warn.rule, warn.severity, warn.active) == ("early_warning_1h", Severity.WARNING, False)


def test_early_warning_fraction_is_configurable() -> None:
    assert _active(judge_limit(ST, "COD", 95.0, TS, early_fraction=0.96)) == set()
    assert _active(judge_limit(ST, "COD", 97.0, TS, early_fraction=0.96)) == {"early_warning"}
    assert _active(judge_limit(ST, "COD", 97.0, TS, early_fraction=None)) == set()


@pytest.mark.parametrize(("value", "expected"), [(4.0, {"below_minimum"}), (9.5, {"exceedance"}), (7.0, set()),
                                                 (5.5, set()), (9.0, set())])
def test_ph_has_two_bounds_and_no_early_warning(value: float, expected: set[str]) -> None:
    found = judge_limit(ST, "pH", value, TS)
    assert {c.rule for c in found} == {"exceedance", "below_minimum"}
    assert _active(found) == expected


def test_a_parameter_without_limit_has_no_limit_rule() -> None:
    assert judge_limit(ST, "Flow", 1e6, TS) == []


@pytest.mark.parametrize(("value", "active", "bound"), [(2500.0, True, 2000.0), (-1.0, True, 0.0), (50.0, False, 2000.0)])
def test_value_outside_the_instrument_range_is_a_device_fault(value: float, active: bool, bound: float) -> None:
    c = judge_range(ST, ST.parameters["COD"], value, TS)
    assert (c.rule, c.severity, c.active, c.limit) == ("out_of_range", Severity.WARNING, active, bound)


def test_rate_of_change_per_minute() -> None:
    spec = ST.parameters["COD"].model_copy(update={"max_rate_per_min": 10.0})
    fast = judge_rate(ST, spec, TS, 50.0, TS + timedelta(minutes=5), 101.0)  # 51 / 5 = 10.2 per min
    slow = judge_rate(ST, spec, TS, 50.0, TS + timedelta(minutes=5), 100.0)  # exactly 10 per min
    assert (fast.rule, fast.active, fast.value) == ("rate_of_change", True, pytest.approx(10.2))
    assert slow.active is False
    assert judge_rate(ST, spec, TS, 50.0, TS, 500.0) is None  # no time passed: nothing to judge
    assert judge_rate(ST, ST.parameters["Flow"], TS, 1.0, TS + timedelta(minutes=1), 1e5) is None  # no bound configured


def test_a_unitless_parameter_reads_without_a_dangling_unit() -> None:
    """pH's unit is "-" in the catalogue: a message says "value 4 is below the minimum 5.5", not "4 - ... 5.5 -"."""
    ph = ST.parameters["pH"].model_copy(update={"max_rate_per_min": 0.2})
    below = next(c for c in judge_limit(ST, "pH", 4.0, TS) if c.rule == "below_minimum")
    out = judge_range(ST, ph, -1.0, TS)
    rate = judge_rate(ST, ph, TS, 7.0, TS + timedelta(minutes=5), 9.0)
    assert "value 4 is below the minimum 5.5 (" in below.message
    assert "-1 is outside the instrument range 0–14;" in out.message
    assert "(0.4/min, bound 0.2/min)" in rate.message
    for message in (below.message, out.message, rate.message):
        assert " - " not in message and "-/min" not in message
    exc = next(c for c in judge_limit(ST, "COD", 150.0, TS) if c.rule == "exceedance")
    cod_rate = judge_rate(ST, ST.parameters["COD"].model_copy(update={"max_rate_per_min": 10.0}), TS, 50.0,
                          TS + timedelta(minutes=5), 101.0)
    assert "value 150 mg/L is above the limit 100 mg/L" in exc.message
    assert "(10.2 mg/L/min, bound 10 mg/L/min)" in cod_rate.message


def test_device_fault_after_n_consecutive_or_t_seconds() -> None:
    assert judge_fault(ST, "COD", 2, 600, TS, after_n=3, after_s=1800).active is False
    assert judge_fault(ST, "COD", 3, 600, TS, after_n=3, after_s=1800).active is True
    assert judge_fault(ST, "COD", 1, 1800, TS, after_n=3, after_s=1800).active is True
    assert judge_fault(ST, "COD", 0, 0, TS, after_n=3, after_s=1800).active is False


def test_calibration_beyond_continuous_or_daily_allowance() -> None:
    assert judge_calibration(ST, "COD", 3600, 3600, TS, max_s=3600, daily_s=7200).active is False
    assert judge_calibration(ST, "COD", 3900, 3900, TS, max_s=3600, daily_s=7200).active is True
    c = judge_calibration(ST, "COD", 600, 7500, TS, max_s=3600, daily_s=7200)
    assert (c.rule, c.active, c.severity) == ("calibration_overrun", True, Severity.WARNING)


def test_anomaly_rule_is_named_after_the_detector() -> None:
    c = judge_anomaly(ST, "COD", "spike", True, 300.0, 9.0, 6.0, "value 300 is 9 MADs above", TS)
    assert (c.rule, c.severity, c.value, c.score, c.limit, c.active) == ("anomaly_spike", Severity.WARNING, 300.0, 9.0, 6.0, True)


def test_offline_names_the_station_and_its_deadline() -> None:
    c = judge_offline(ST, TS, TS + timedelta(seconds=360), TS + timedelta(seconds=400), offline=True)
    assert (c.rule, c.parameter, c.severity, c.value, c.limit, c.active) == ("station_offline", "*", Severity.CRITICAL, 400, 360, True)
    assert "T-1" in c.message and "datalogger" in c.message
    assert "quantrac/v1/stations/T-1/readings exactly" in c.message  # a gateway on a wrong topic is dropped silently
    assert "/api/v1/deadletters?station=T-1" in c.message  # a gateway whose every message is refused looks silent too
