"""Limits computed from the regulation tables, and the limit rules on single readings (through the worker's
detection step, the path every reading takes)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from alerts.rules import Condition
from processors.detection import DetectionConfig, detect_batch
from quantrac.domain import Reading, Severity, Station, Status
from quantrac.registry import RegistryCache, RegistryError, RegistrySnapshot, load_registry
from quantrac.settings import get_settings
from tests.utils.builders import make_station

TS = datetime(2026, 11, 29, 14, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def registry():
    s = get_settings()
    return load_registry(s.registry_file, s.limits_dir)


def test_seed_has_stations_in_several_zones_of_both_kinds(registry) -> None:
    assert len({s.zone for s in registry.values()}) >= 5
    assert {s.kind.value for s in registry.values()} == {"wastewater", "emission"}


def test_qcvn40_limit_is_c_times_kq_times_kf(registry) -> None:
    cod = registry["HD-NAMSACH-WW01"].parameters["COD"].limit  # column B (150), Kq 1.0, Kf 1.1
    assert cod.high == pytest.approx(165.0)
    assert "QCVN 40:2011" in cod.source and "col. B" in cod.source


def test_temperature_colour_and_ph_take_no_factors(registry) -> None:
    station = registry["HD-TANTRUONG-WW01"]  # Kq 0.9, Kf 1.1
    assert station.parameters["Temp"].limit.high == 40
    assert station.parameters["Color"].limit.high == 150
    assert (station.parameters["pH"].limit.low, station.parameters["pH"].limit.high) == (5.5, 9.0)


def test_permit_override_wins(registry) -> None:
    cod = registry["HD-TANTRUONG-WW01"].parameters["COD"].limit
    assert cod.high == 120 and "permit" in cod.source.lower()


def test_qcvn19_limit_is_c_times_kp_times_kv(registry) -> None:
    assert registry["HD-HOANGTHACH-ST01"].parameters["SO2"].limit.high == pytest.approx(500 * 0.9 * 1.2)


def _reading(value: float | None, parameter: str = "COD", status: Status = Status.MEASURING) -> Reading:
    return Reading(station_id="T-1", parameter=parameter, value=value, unit="mg/L", ts=TS, status=status)


def limit_conditions(reading: Reading, station: Station) -> list[Condition]:
    """The active limit conditions the worker's detection step finds for one reading on its instantaneous value."""
    _, conditions, _ = detect_batch([reading], {}, {station.id: station}, DetectionConfig())
    return [c for c in conditions if c.active and c.basis == "instant" and c.rule in ("exceedance", "below_minimum")]


def test_exceedance_names_rule_basis_limit_and_source() -> None:
    station = make_station("T-1", cod_limit=100)
    [c] = limit_conditions(_reading(150.0), station)
    assert (c.rule, c.basis, c.severity, c.limit, c.limit_source, c.value) == ("exceedance", "instant", Severity.CRITICAL, 100, "test limit", 150.0)
    assert "T-1" in c.message and "COD" in c.message


def test_at_the_limit_is_not_an_exceedance() -> None:
    assert limit_conditions(_reading(100.0), make_station("T-1", cod_limit=100)) == []


def test_ph_below_minimum_and_calibration_is_ignored() -> None:
    station = make_station("T-1")
    assert [c.rule for c in limit_conditions(_reading(4.0, "pH"), station)] == ["below_minimum"]
    assert limit_conditions(_reading(500.0, status=Status.CALIBRATING), station) == []
    assert limit_conditions(_reading(None, status=Status.FAULT), station) == []


def test_readings_of_unknown_stations_are_not_judged() -> None:
    assert detect_batch([_reading(500.0)], {}, {}, DetectionConfig()) == ({}, [], [])


def test_registry_cache_reloads_on_a_miss_but_not_more_often_than_allowed() -> None:
    calls = []
    now = [0.0]
    station = make_station("T-NEW")

    def load():
        calls.append(now[0])
        return {station.id: station} if now[0] >= 1 else {}

    cache = RegistryCache(load, refresh_s=60, miss_reload_s=1.0, clock=lambda: now[0])
    assert "T-NEW" not in cache
    now[0] = 0.5
    assert "T-NEW" not in cache
    now[0] = 1.5
    assert cache["T-NEW"] is station
    assert calls == [0.0, 1.5]


def test_a_flood_of_unknown_stations_costs_one_small_lookup_a_second_not_a_whole_reload() -> None:
    """With `changes` (what the bridge has), a station unknown to the cache is looked up among the stations changed
    lately, at most every `miss_reload_s`, and the whole registry is loaded only every `refresh_s`: a gateway sending
    for unknown ids used to make the bridge reload every station each second in its MQTT thread."""
    now = [0.0]
    old, new, gone = make_station("T-OLD"), make_station("T-NEW"), make_station("T-GONE")
    loads: list[float] = []
    looks: list[float] = []

    def load() -> RegistrySnapshot:
        loads.append(now[0])
        return RegistrySnapshot({old.id: old, gone.id: gone})

    def changes() -> RegistrySnapshot:
        looks.append(now[0])
        return RegistrySnapshot({new.id: new} if now[0] >= 2 else {}, frozenset({gone.id}) if now[0] >= 2 else frozenset())

    cache = RegistryCache(load, refresh_s=30, miss_reload_s=1.0, clock=lambda: now[0], changes=changes)
    for step in range(200):  # 100 unknown ids a second for two seconds
        now[0] = step / 100
        assert f"X-{step}" not in cache
    assert loads == [0.0] and looks == [1.0]
    now[0] = 2.0
    assert cache["T-NEW"] is new and cache["T-OLD"] is old
    assert "T-GONE" not in cache and "T-GONE" in cache.retired_ids
    assert looks == [1.0, 2.0]
    now[0] = 30.0
    assert "T-NEW" not in cache  # the whole reload is the truth again (here, without it)
    assert loads == [0.0, 30.0]


def test_the_seed_file_gives_a_station_its_own_retention_and_history_only(tmp_path) -> None:
    """Issue 19: `retention_days` and `history_only` are registry fields the seed file can set."""
    import yaml

    from quantrac.settings import get_settings
    s = get_settings()
    seed = yaml.safe_load(s.registry_file.read_text(encoding="utf-8"))
    seed["stations"] = [{"id": "ARCHIVE-1", "name": "Archive", "zone": "Z", "facility": "F", "kind": "surface_water",
                         "extra_parameters": ["pH"], "retention_days": 4000, "history_only": True},
                        {"id": "LIVE-1", "name": "Live", "zone": "Z", "facility": "F", "kind": "surface_water",
                         "extra_parameters": ["pH"]}]
    path = tmp_path / "stations.yaml"
    path.write_text(yaml.safe_dump(seed, allow_unicode=True), encoding="utf-8")
    stations = load_registry(path, s.limits_dir)
    assert (stations["ARCHIVE-1"].retention_days, stations["ARCHIVE-1"].history_only) == (4000, True)
    assert (stations["LIVE-1"].retention_days, stations["LIVE-1"].history_only) == (None, False)


@pytest.mark.parametrize(("change", "named"), [
    (lambda st, cat: st.update(permit_limit={"COD": {"high": 120, "source": "permit"}}), "unknown keys ['permit_limit']"),
    (lambda st, cat: st.update(permit_limits={"COD": {"max": 120, "source": "permit"}}), "parameter 'COD': permit limit"),
    (lambda st, cat: st.update(permit_limits={"CODD": {"high": 120, "source": "permit"}}), "permit_limits: unknown keys ['CODD']"),
    (lambda st, cat: cat["pH"].update(ranges=[0, 14]), "parameter 'pH' of the catalogue: unknown keys ['ranges']"),
])
def test_a_seed_key_the_loader_does_not_read_is_named_not_dropped(tmp_path, change, named) -> None:
    """A misspelt `permit_limits` had left a station on the regulation's limits, with nothing to say so."""
    import yaml

    from quantrac.settings import get_settings
    s = get_settings()
    seed = yaml.safe_load(s.registry_file.read_text(encoding="utf-8"))
    station = {"id": "T-SEED", "name": "Seed", "zone": "Z", "facility": "F", "kind": "wastewater",
               "extra_parameters": ["COD", "pH"]}
    seed["stations"] = [station]
    path = tmp_path / "stations.yaml"
    path.write_text(yaml.safe_dump(seed, allow_unicode=True), encoding="utf-8")
    assert set(load_registry(path, s.limits_dir)) == {"T-SEED"}
    change(station, seed["parameters"])
    path.write_text(yaml.safe_dump(seed, allow_unicode=True), encoding="utf-8")
    with pytest.raises(RegistryError, match=named.replace("[", r"\[").replace("]", r"\]")):
        load_registry(path, s.limits_dir)
