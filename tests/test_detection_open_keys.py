"""Judging a batch with the open alerts' keys gives exactly the conditions the rules would build one by one (issue 15).

With `open_keys`, `detect_batch` judges ranges, limits and early warnings column-wise over the batch
and window means through a gate (`processors.rule_columns`), and hands the scalar rules only what
can give a condition. The oracle is the batch judged with `open_keys=None` (every condition built,
active or clear) and filtered the way `alerts.rules.OpenKeys` defines: a condition is kept when it
is active (its key joins the set) or its key is in the set. Generated readings cross every bound
(instrument range, limit, early-warning band, minimum) now and then, go missing, fault and
calibrate, come late and out of order, and are cut into batches; between batches keys are opened
and resolved elsewhere (as the alerts table would). Conditions, late readings, the keys after each
batch and the states must be equal.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

from hypothesis import HealthCheck, example, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from alerts.rules import Condition, OpenKeys
from processors.detection import DetectionConfig, detect_batch
from processors.rule_columns import INSTANT_RULES, WINDOW_RULES
from quantrac.domain import Reading, Status
from tests.utils.builders import make_station

T0 = datetime(2026, 11, 29, 16, 50, tzinfo=timezone.utc)
STATIONS = {s.id: s for s in (make_station(f"K-{i}", cod_limit=100.0, expected_interval_s=60) for i in range(2))}
UNITS = {"COD": "mg/L", "pH": "-", "Flow": "m3/h"}
CONFIG = DetectionConfig(detectors=("spike", "flatline"), lateness_s=300.0, gap_min_s=600.0, rate_span_s=300.0)
LEVELS = {  # per parameter: a value in each band (COD: limit 100, early from 80; pH: 5.5-9; all: an instrument range)
    "COD": {"normal": 50.0, "early": 90.0, "above": 130.0, "out": 2500.0, "below": 50.0},
    "pH": {"normal": 7.0, "early": 8.5, "above": 9.6, "out": 15.0, "below": 4.0},
    "Flow": {"normal": 300.0, "early": 300.0, "above": 300.0, "out": -5.0, "below": 300.0},
}
kinds = st.sampled_from(["normal"] * 12 + ["early", "above", "out", "below", "none", "fault", "calibrating", "missing"])
steps = st.tuples(st.sampled_from([1] * 10 + [-3, -8, 0, 15]), st.integers(0, 1), st.lists(kinds, min_size=3, max_size=3),
                  st.integers(-3, 3), st.integers(1, 8))
"""(minutes on, station, kind per parameter, noise in %, repeats): runs of a kind move the window means across bounds."""
RULES = sorted(INSTANT_RULES | WINDOW_RULES | {"rate_of_change", "device_fault", "calibration_overrun"})
KEYS = [(sid, p, rule) for sid in STATIONS for p in UNITS for rule in RULES]


def readings_of(generated: list[tuple[int, int, list[str], int, int]]) -> list[Reading]:
    minute = dict.fromkeys(STATIONS, 0)
    out: dict[tuple[str, str, datetime], Reading] = {}
    for step, which, per_parameter, noise, repeats in generated:
        for _ in range(repeats):
            _step(out, minute, step, which, per_parameter, noise)
    return list(out.values())


def _step(out: dict[tuple[str, str, datetime], Reading], minute: dict[str, int], step: int, which: int,
          per_parameter: list[str], noise: int) -> None:
    sid = f"K-{which}"
    minute[sid] += step
    ts = T0 + timedelta(minutes=minute[sid], seconds=7)
    for p, kind in zip(UNITS, per_parameter, strict=True):
        if kind == "missing":
            continue
        value: float | None = LEVELS[p].get(kind, LEVELS[p]["normal"]) * (1 + noise / 100)
        status = Status.FAULT if kind == "fault" else Status.CALIBRATING if kind == "calibrating" else Status.MEASURING
        value = None if kind == "none" else value
        out[(sid, p, ts)] = Reading(station_id=sid, parameter=p, value=value, unit=UNITS[p], ts=ts, status=status)


def in_batches(readings: list[Reading], cuts: list[int], elsewhere: list[tuple[set, set]]
               ) -> Iterator[tuple[list[Reading], set, set]]:
    """The readings cut into batches of the sizes `cuts` gives in turn, each with the keys opened and resolved
    elsewhere (as the alerts table would) before it, taken in turn from `elsewhere`."""
    i = k = 0
    while i < len(readings):
        opened, resolved = elsewhere[k % len(elsewhere)]
        batch = readings[i:i + cuts[k % len(cuts)]]
        yield batch, opened, resolved
        i, k = i + len(batch), k + 1


def wanted_of(everything: list[Condition], keys: OpenKeys) -> list[Condition]:
    """`OpenKeys`' contract applied to every condition of a batch, in order (the keys set grows as in `wanted`)."""
    kept = []
    for c in everything:
        key = (c.station_id, c.parameter, c.rule)
        if c.active:
            keys.add(key)
        if c.active or key in keys:
            kept.append(c)
    return kept


ANCHOR_TIE = ([(1, 0, ["normal", "normal", "normal"], 0, 35), (1, 0, ["missing", "normal", "normal"], 0, 1),
               (1, 0, ["normal", "normal", "missing"], 0, 1)], [105, 4], [(set(), set())])
"""K-0 flat for 35 minutes, then pH and Flow at 17:26, COD and pH at 17:27 in one batch: the flatline alarms of 17:27
once came out as [pH, COD] with the keys and [COD, pH] in the oracle (their anchors tied; now (condition number,
event number))."""


@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@example(*ANCHOR_TIE)
@given(st.lists(steps, min_size=10, max_size=80), st.lists(st.integers(1, 90), min_size=1, max_size=6),
       st.lists(st.tuples(st.sets(st.sampled_from(KEYS), max_size=6), st.sets(st.sampled_from(KEYS), max_size=6)),
                min_size=1, max_size=6))
def test_open_keys_give_the_conditions_the_rules_would_build(generated, cuts, elsewhere) -> None:
    keyed_states: dict = {}
    all_states: dict = {}
    keys: OpenKeys = set()
    oracle_keys: OpenKeys = set()
    for batch, opened, resolved in in_batches(readings_of(generated), cuts, elsewhere):
        keys = (keys | opened) - resolved
        oracle_keys = (oracle_keys | opened) - resolved
        new_k, found_k, late_k = detect_batch(batch, keyed_states, STATIONS, CONFIG, None, keys)
        new_a, found_a, late_a = detect_batch(batch, all_states, STATIONS, CONFIG, None, None)
        assert found_k == wanted_of(found_a, oracle_keys)
        assert late_k == late_a and keys == oracle_keys
        assert new_k == new_a
        keyed_states.update(new_k)
        all_states.update(new_a)


def test_the_generated_readings_reach_every_rule_active_and_clear() -> None:
    """The generator is not vacuous: a plain run crosses every bound, closes window means, and clears again."""
    generated = [(1, n % 2, [kind, kind, kind], 0, 1) for n, kind in enumerate(
        ["normal"] * 30 + ["above"] * 14 + ["normal"] * 4 + ["early"] * 3 + ["below"] * 2 + ["out"] * 2 + ["normal"] * 20)]
    _, found, _ = detect_batch(readings_of(generated), {}, STATIONS, CONFIG, None, set())
    active = {c.rule for c in found if c.active}
    assert {"exceedance", "early_warning", "below_minimum", "out_of_range", "exceedance_5m"} <= active
    assert {"exceedance", "exceedance_5m", "out_of_range"} <= {c.rule for c in found if not c.active}
