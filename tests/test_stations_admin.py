"""Registry administration: custom parameters, audit with actor, retire, and the running pipeline picking changes up."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from processors.detectors import DETECTORS
from quantrac.domain import ParameterSpec, Station
from quantrac.registry import RegistryError, check_station, load_catalogue
from quantrac.settings import get_settings
from tests.utils.poll import wait_for
from tests.utils.processes import publish, stored_count


def river_station(station_id: str | None = None) -> dict[str, Any]:
    """A drinking-water intake with parameters outside the national symbol table."""
    return {"id": station_id or f"A-{uuid.uuid4().hex[:8]}", "name": "Intake", "zone": "Sông Thái Bình",
            "facility": "Water works", "kind": "drinking_water", "expected_interval_s": 60,
            "parameters": {
                "ClO2": {"symbol": "ClO2", "unit": "mg/L", "range_min": 0, "range_max": 5,
                         "limit": {"high": 1.0, "source": "permit"}, "detectors": []},
                "ORP": {"symbol": "ORP", "unit": "mV", "range_min": -1000, "range_max": 1000, "detectors": ["spike"]},
                "pH": {"symbol": "pH", "unit": "-", "range_min": 0, "range_max": 14}}}


CATALOGUE = load_catalogue(get_settings().registry_file)


def test_custom_parameters_are_first_class_and_known_ones_keep_their_unit() -> None:
    check_station(Station.model_validate(river_station()), CATALOGUE, DETECTORS)
    bad = river_station()
    bad["parameters"]["pH"]["unit"] = "mV"
    with pytest.raises(RegistryError, match=r"parameter 'pH'.*catalogue unit is '-'"):
        check_station(Station.model_validate(bad), CATALOGUE, DETECTORS)


@given(low=st.floats(-1e6, 1e6), width=st.floats(-1e6, 1e6))
def test_a_range_must_be_ordered(low: float, width: float) -> None:
    spec = ParameterSpec(symbol="Turb", unit="NTU", range_min=low, range_max=low + width)
    station = Station.model_validate({**river_station("A-1"), "parameters": {"Turb": spec.model_dump()}})
    if low + width > low:
        check_station(station, CATALOGUE, DETECTORS)
    else:
        with pytest.raises(RegistryError, match="range_min"):
            check_station(station, CATALOGUE, DETECTORS)


def test_a_request_is_refused_for_a_field_it_misnames_or_a_number_that_is_not_finite() -> None:
    """What an administrator sends is taken whole or refused: a misspelt `max` had saved COD without a limit."""
    from pydantic import ValidationError

    from quantrac.station_input import StationIn

    body = river_station("A-1")
    record = StationIn.model_validate(body).record()
    assert type(record) is Station and record == Station.model_validate(body)

    def refused(change: Any) -> str:
        bad = orjson.loads(orjson.dumps(body))
        change(bad)
        with pytest.raises(ValidationError) as caught:
            StationIn.model_validate(bad)
        return str(caught.value)

    assert "parameters.ClO2.limit.max" in refused(lambda b: b["parameters"]["ClO2"].update(limit={"max": 1.0, "source": "permit"}))
    assert "parameters.pH.range" in refused(lambda b: b["parameters"]["pH"].update(range=[0, 14]))
    assert "zones" in refused(lambda b: b.update(zones="KCN"))
    assert "finite" in refused(lambda b: b["parameters"]["ClO2"]["limit"].update(high=float("nan")))
    assert "finite" in refused(lambda b: b["parameters"]["ORP"].update(range_max=float("inf")))
    assert "at most 200 characters" in refused(lambda b: b.update(name="n" * 201))
    assert "at least 1 item" in refused(lambda b: b.update(parameters={}))


def test_the_cli_reads_a_station_file_as_strictly(tmp_path: Any, capsys: Any) -> None:
    """`quantrac stations add|update FILE` takes the record through the same model as the API."""
    import typer

    from cli.stations import _station_records

    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_bytes(orjson.dumps([river_station("A-1")]))
    assert [type(s) for s in _station_records(good)] == [Station]
    body = river_station("A-2")
    body["parameters"]["ClO2"]["limit"] = {"max": 1.0, "source": "permit"}
    bad.write_bytes(orjson.dumps(body))
    with pytest.raises(typer.Exit):
        _station_records(bad)
    assert "parameters.ClO2.limit.max" in capsys.readouterr().err


def test_unknown_detector_is_refused() -> None:
    body = river_station()
    body["parameters"]["ORP"]["detectors"] = ["psychic"]
    with pytest.raises(RegistryError, match=r"ORP.*unknown detectors \['psychic'\]"):
        check_station(Station.model_validate(body), CATALOGUE, DETECTORS)


@pytest.mark.integration
def test_create_update_retire_are_audited_with_their_actor(api: Any, api_as: Any) -> None:
    body = river_station()
    sid = body["id"]
    assert api_as("analyst").post("/api/v1/stations", json=body).status_code == 403
    created = api.post("/api/v1/stations", json=body)
    assert created.status_code == 201, created.text
    assert created.json()["action"] == "created"
    assert api.post("/api/v1/stations", json=body).status_code == 409
    listed = {s["id"]: s for s in api.get("/api/v1/stations").json()["data"]}
    assert listed[sid]["parameters"]["ClO2"]["limit"]["high"] == 1.0
    body["parameters"]["ClO2"]["limit"]["high"] = 0.8
    assert api.put(f"/api/v1/stations/{sid}", json=body).json()["action"] == "updated"
    assert api.put(f"/api/v1/stations/{sid}", json=body).json()["action"] == "unchanged"
    wrong = {**body, "parameters": {**body["parameters"], "COD": {"symbol": "COD", "unit": "g/L"}}}
    refused = api.put(f"/api/v1/stations/{sid}", json=wrong)
    assert refused.status_code == 422 and "COD" in refused.text and "mg/L" in refused.text
    assert api.post(f"/api/v1/stations/{sid}/retire").status_code == 204
    assert api.post(f"/api/v1/stations/{sid}/retire").status_code == 404
    assert sid not in {s["id"] for s in api.get("/api/v1/stations").json()["data"]}
    audit = api.get(f"/api/v1/stations/{sid}/audit").json()
    assert [a["action"] for a in audit] == ["created", "updated", "retired"]
    assert {a["actor"] for a in audit} == {"test-admin (admin)"}
    assert audit[1]["before"]["parameters"]["ClO2"]["limit"]["high"] == 1.0
    assert audit[1]["after"]["parameters"]["ClO2"]["limit"]["high"] == 0.8


@pytest.mark.integration
def test_a_station_created_through_the_api_is_accepted_by_the_running_pipeline(api: Any, pipeline: Any, db: Any) -> None:
    body = river_station()
    sid = body["id"]
    assert api.post("/api/v1/stations", json=body).status_code == 201

    def stored() -> bool:
        publish(get_settings(), sid, orjson.dumps({"ts": datetime.now(timezone.utc).isoformat(), "readings": [
            {"parameter": "ClO2", "value": 0.4, "unit": "mg/L"}, {"parameter": "ORP", "value": 250.0, "unit": "mV"}]}))
        return stored_count(db, sid) >= 2

    wait_for(stored, timeout=60, interval=1.0, what=f"readings of the new station {sid} stored by the running bridge and worker")
    units = dict(db.execute("SELECT parameter, unit FROM readings WHERE station_id = %s", (sid,)).fetchall())
    assert units == {"ClO2": "mg/L", "ORP": "mV"}


@pytest.mark.parametrize("field, value", [("retention_days", 3_099_319), ("expected_interval_s", 10**9), ("offline_grace_s", 10**9)])
def test_a_record_beyond_the_time_bounds_is_refused_before_a_retention_pass_or_a_summary_overflows(field: str, value: int) -> None:
    with pytest.raises(ValueError, match=field):
        Station.model_validate({**river_station(), field: value})


@pytest.mark.integration
def test_the_registry_changes_are_the_stations_saved_or_retired_lately(db: Any) -> None:
    """What the bridge's registry looks up when a message names a station it does not know (`live_registry`)."""
    from quantrac.db import load_registry_snapshot, save_stations
    from tests.utils.builders import make_station

    station = make_station()
    save_stations(db, {station.id: station})
    assert station.id in load_registry_snapshot(db, changed_within_s=60).stations
    db.execute("UPDATE stations SET updated_at = now() - interval '1 hour' WHERE id = %s", (station.id,))
    assert station.id not in load_registry_snapshot(db, changed_within_s=60).stations
    assert station.id in load_registry_snapshot(db).stations


@pytest.mark.integration
def test_a_whole_reload_validates_only_the_records_that_changed(db: Any) -> None:
    """The bridge reloads the whole registry every QUANTRAC_REGISTRY_REFRESH_S in its MQTT thread: an unchanged
    record is taken from the last load, a changed one (even by SQL that leaves `updated_at`) is read again, and a
    retired one leaves."""
    from quantrac.db import load_registry_snapshot, save_stations
    from tests.utils.builders import make_station

    kept, edited, retired = make_station(), make_station(), make_station()
    save_stations(db, {s.id: s for s in (kept, edited, retired)})
    parsed: dict[str, tuple[str, Station]] = {}
    first = load_registry_snapshot(db, parsed=parsed).stations
    assert first[kept.id] == kept and first[edited.id] == edited
    db.execute("UPDATE stations SET spec = jsonb_set(spec, '{zone}', '\"KCN Edited\"') WHERE id = %s", (edited.id,))
    db.execute("UPDATE stations SET retired_at = now(), updated_at = now() WHERE id = %s", (retired.id,))
    second = load_registry_snapshot(db, parsed=parsed)
    assert second.stations[kept.id] is first[kept.id]  # not validated again
    assert second.stations[edited.id].zone == "KCN Edited"
    assert retired.id not in second.stations and retired.id in second.retired_ids and retired.id not in parsed
    assert second == load_registry_snapshot(db)  # what a load without the cache gives
