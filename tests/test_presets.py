"""Detector presets: one per station kind with its provenance, named by a station or replaced by its own channels,
checked with errors that name the station, the parameter and the fix; the worker runs a preset as the bench scores it."""

from __future__ import annotations

import math
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from pydantic import ValidationError

from processors.detection import DetectionConfig, LiveDetectors, Plan, detect
from processors.detectors.presets import check_detection, preset, preset_names, station_channels
from quantrac.domain import DetectorChannel, Reading, StationKind
from quantrac.registry import load_registry
from quantrac.settings import get_settings
from tests.utils.builders import make_station
from tests.utils.gecco import gecco_data, gecco_station


def test_every_station_kind_has_a_preset_that_says_where_its_numbers_come_from() -> None:
    assert {k.value for k in StationKind} <= set(preset_names())
    for kind in StationKind:
        p = preset(kind.value)
        assert p.channels and len(p.provenance) > 40, kind
    assert "bench/tune_gecco.py" in preset("drinking_water").provenance and "held out" in preset("drinking_water").provenance
    assert "[U]" in preset("wastewater").provenance


def test_a_station_runs_its_own_channels_else_the_preset_it_names_else_its_kinds() -> None:
    station = make_station("P-1")
    assert station_channels(station) == preset("wastewater").channels
    named = station.model_copy(update={"detector_preset": "drinking_water"})
    assert station_channels(named) == preset("drinking_water").channels
    own = (DetectorChannel(detector="spike", columns=("pH",), params={"threshold": 10.0}),)
    assert station_channels(named.model_copy(update={"channels": own})) == own


def test_a_channel_on_a_parameter_wins_and_a_parameters_own_list_decides_what_runs_on_it() -> None:
    station = make_station("P-2")
    cod = station.parameters["COD"].model_copy(update={"detectors": ("flatline",)})
    station = station.model_copy(update={"parameters": {**station.parameters, "COD": cod}, "channels": (
        DetectorChannel(detector="spike"), DetectorChannel(detector="spike", columns=("pH",), params={"threshold": 10.0}),
        DetectorChannel(detector="drift"))})
    plan = Plan.of(station, DetectionConfig())
    assert [(c.detector, c.params) for c in plan.scalar["pH"]] == [("spike", {"threshold": 10.0}), ("drift", None)]
    assert [(c.detector, c.params) for c in plan.scalar["COD"]] == [("flatline", None)]
    assert [c.detector for c in Plan.of(station, DetectionConfig(detectors=("drift",))).scalar["Flow"]] == ["drift"]


@pytest.mark.parametrize(("update", "expected"), [
    ({"detector_preset": "tap_water"}, r"station P-3: detector_preset 'tap_water' is not a preset; name one of .*'drinking_water'.* "
                                       r"or leave it out for its kind's preset \(wastewater\)"),
    ({"channels": [{"detector": "zscore", "columns": ["pH"]}]}, r"station P-3, parameter pH: unknown detector 'zscore'; use one of"),
    ({"channels": [{"detector": "spike", "columns": ["pH"], "params": {"treshold": 9}}]},
     r"station P-3, parameter pH: spike has no hyperparameter \['treshold'\]; its hyperparameters are \[.*'threshold'"),
    ({"channels": [{"detector": "spike", "columns": ["pH"], "params": {"window": 0}}]},
     r"station P-3, parameter pH: its hyperparameters are refused: .*; fix them"),
    ({"channels": [{"detector": "spike", "columns": ["NH4"]}]},
     r"station P-3, parameter NH4: channel spike names \['NH4'\], which the station does not report; use some of"),
    ({"channels": [{"detector": "multivariate"}]}, r"multivariate scores a group of parameters; list them in columns"),
    ({"channels": [{"detector": "spike", "columns": ["pH", "COD"]}]}, r"spike runs on one parameter"),
])
def test_a_wrong_preset_or_channel_is_refused_naming_the_station_the_parameter_and_the_fix(update: dict, expected: str) -> None:
    body = {**make_station("P-3").model_dump(mode="json"), **update}
    with pytest.raises(ValueError, match=expected):  # the domain model's checks (a ValidationError), then the detectors'
        check_detection(type(make_station()).model_validate(body))


def test_the_seed_file_names_presets_and_channels(tmp_path: Path) -> None:
    s = get_settings()
    seed = yaml.safe_load(s.registry_file.read_text(encoding="utf-8"))
    first, second = seed["stations"][0], seed["stations"][1]
    seed["stations"] = [{**first, "detector_preset": "surface_water"},
                        {**second, "channels": [{"detector": "spike", "columns": ["pH"], "params": {"threshold": 9.0}}]}]
    path = tmp_path / "stations.yaml"
    path.write_text(yaml.safe_dump(seed, allow_unicode=True), encoding="utf-8")
    stations = load_registry(path, s.limits_dir)
    assert station_channels(stations[first["id"]]) == preset("surface_water").channels
    assert station_channels(stations[second["id"]])[0].params == {"threshold": 9.0}
    seed["stations"] = [{**first, "detector_preset": "nope"}]
    path.write_text(yaml.safe_dump(seed, allow_unicode=True), encoding="utf-8")
    with pytest.raises(ValidationError, match=f"station {first['id']}: detector_preset 'nope' is not a preset"):
        load_registry(path, s.limits_dir)


def test_the_worker_runs_the_drinking_water_preset_exactly_as_the_bench_scores_it() -> None:
    """GECCO held-out rows streamed through the worker's detection step for a station naming the preset flag the same
    rows, channel by channel, as the bench's scoring (`bench/detection.py gecco_flags`)."""
    from bench.detection import GECCO_COLUMNS, gecco_flags, gecco_load
    g = gecco_load(gecco_data())
    start = g.part("test").start + 400
    stop = start + 1700  # the first held-out event and an alarm before it, with no gap or missing value
    station = gecco_station("GECCO-PRESET")
    state = None
    flagged: dict[tuple[str, str], np.ndarray] = {}
    for i in range(start, stop):
        readings = [Reading(station_id=station.id, parameter=c, value=float(v), unit=station.parameters[c].unit, ts=g.times[i])
                    for c, v in zip(GECCO_COLUMNS, g.data[i], strict=False) if not math.isnan(v)]
        out = detect(state, readings, station, DetectionConfig())
        state = out.state
        for c in out.conditions:
            if c.rule.startswith("anomaly_") and c.active:
                flagged.setdefault((c.parameter, c.rule), np.zeros(len(g.y), dtype=bool))[i] = True
    assert flagged, "the slice must raise alarms for the comparison to mean something"
    for channel in preset("drinking_water").channels:
        ours = flagged.pop((",".join(channel.columns or ()), f"anomaly_{channel.detector}"), np.zeros(len(g.y), dtype=bool))
        bench = gecco_flags(channel.model_dump(), g, start, stop)
        assert np.array_equal(ours[start:stop], bench[start:stop]), (channel.detector, np.flatnonzero(ours != bench)[:10])
    assert flagged == {}, f"the worker ran channels the preset does not have: {list(flagged)}"


@pytest.mark.integration
def test_a_preset_or_channels_are_set_through_the_api_and_the_cli_and_refused_with_the_fix(
        api: Any, db: Any, tmp_path: Path) -> None:
    from tests.test_stations_admin import river_station
    body = {**river_station(), "detector_preset": "surface_water"}
    sid = body["id"]
    created = api.post("/api/v1/stations", json=body)
    assert created.status_code == 201, created.text
    assert api.get(f"/api/v1/stations/{sid}").json()["detector_preset"] == "surface_water"
    refused = api.put(f"/api/v1/stations/{sid}", json={**body, "detector_preset": "tap_water"})
    assert refused.status_code == 422 and f"station {sid}: detector_preset 'tap_water' is not a preset" in refused.text
    own = {**body, "channels": [{"detector": "spike", "columns": ["ORP"], "params": {"treshold": 9}}]}
    refused = api.put(f"/api/v1/stations/{sid}", json=own)
    assert refused.status_code == 422 and f"station {sid}, parameter ORP: spike has no hyperparameter ['treshold']" in refused.text
    own["channels"][0]["params"] = {"threshold": 9.0}
    assert api.put(f"/api/v1/stations/{sid}", json=own).json()["action"] == "updated"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "cli", *args], capture_output=True, text=True, timeout=60)

    done = cli("presets", "use", sid, "drinking_water")
    assert done.returncode == 0 and "runs preset drinking_water" in done.stdout, done.stderr
    spec = db.execute("SELECT spec FROM stations WHERE id = %s", (sid,)).fetchone()[0]
    assert (spec["detector_preset"], spec["channels"]) == ("drinking_water", None)  # a station runs its channels or a preset
    assert cli("presets", "use", sid, "tap_water").returncode == 2
    wrong = tmp_path / "station.yaml"
    wrong.write_text(yaml.safe_dump({**body, "detector_preset": "tap_water"}, allow_unicode=True), encoding="utf-8")
    done = cli("stations", "update", str(wrong))
    assert done.returncode == 2 and f"station {sid}: detector_preset 'tap_water' is not a preset" in done.stderr


def test_a_station_given_other_channels_relearns_under_them_instead_of_reusing_what_the_old_ones_learned() -> None:
    station = make_station("P-5", expected_interval_s=60)
    t0 = datetime(2026, 11, 1, tzinfo=timezone.utc)
    cod = [Reading(station_id=station.id, parameter="COD", value=50.0 + (i % 5) * 0.5, unit="mg/L", ts=t0 + timedelta(minutes=i))
           for i in range(61)]
    live = LiveDetectors()
    before = detect(None, cod[:60], station, DetectionConfig(), live)
    assert {"spike", "drift", "flatline"} <= set(before.state.parameters["COD"].detectors)
    own = station.model_copy(update={"channels": (DetectorChannel(detector="spike", columns=("COD",), params={"threshold": 1000.0}),)})
    after = detect(before.state, cod[60:], own, DetectionConfig(), live)
    assert after.state.plan != before.state.plan and set(after.state.parameters["COD"].detectors) == {"spike"}
    key = (station.id, after.state.plan, "COD", "spike")  # built afresh, not the wastewater preset's live row
    bank, row = live.rows[key]
    assert key in live[station.id][1] and live.banks[bank].params[row]["threshold"] == 1000.0
    again = detect(after.state, [], own, DetectionConfig(), live)
    assert again.state.parameters["COD"].detectors == after.state.parameters["COD"].detectors  # the same channels keep what they learned


def test_a_restart_only_hyperparameter_keeps_what_the_detectors_learned() -> None:
    """Adding `reseed_after` to the worker's spike parameters (or a channel's) changes how spike starts again after a
    gap, not what any detector learned: the plan key is the same, and no station's detectors start afresh on the
    upgrade; any other hyperparameter still changes it."""
    station = make_station("P-6", expected_interval_s=60)
    spike = {"threshold": 8.0, "relearn_after": 6}
    before = DetectionConfig(detector_params={"spike": spike})
    after = DetectionConfig(detector_params={"spike": {**spike, "reseed_after": 6}})
    other = DetectionConfig(detector_params={"spike": {**spike, "threshold": 9.0}})
    assert Plan.of(station, before).key == Plan.of(station, after).key != Plan.of(station, other).key
    own = [DetectorChannel(detector="spike", columns=("COD",), params={**spike, "reseed_after": r}) for r in (None, 3)]
    keys = {Plan.of(station.model_copy(update={"channels": (c,)}), before).key for c in own}
    assert len(keys) == 1
