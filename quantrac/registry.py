"""The station registry: stations, their parameters and the limits that apply to them.

The registry is data (a YAML seed in the repo, loaded into PostgreSQL). Limits are computed here
once from the regulation tables under `alerts/limits/` and each station's column and factors,
so every later stage just reads `station.parameters[symbol].limit`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, NamedTuple, TypeVar

import structlog
import yaml

from quantrac.domain import Limit, ParameterSpec, Station
from quantrac.failures import RateLimitedLog
from quantrac.station_input import LimitIn

log = structlog.get_logger(__name__)
_log = RateLimitedLog(log)
T = TypeVar("T")


class RegistryError(ValueError):
    """The registry seed or a limit table is inconsistent; the message names the station and the fix."""


def load_limit_tables(limits_dir: Path) -> dict[str, dict[str, Any]]:
    """Every regulation table in `limits_dir`, keyed by file stem (e.g. `qcvn40_2011`)."""
    return {path.stem: yaml.safe_load(path.read_text(encoding="utf-8")) for path in sorted(limits_dir.glob("*.yaml"))}


def regulatory_limit(table: dict[str, Any], symbol: str, column: str, factors: dict[str, float]) -> Limit | None:
    """Cmax for one parameter: C x the product of the regulation's factors, unless the table exempts it."""
    entry = table["parameters"].get(symbol)
    if entry is None:
        return None
    value = entry[column]
    multiplier = 1.0
    factor_text = ""
    if entry.get("apply_factors", True):
        for name in table["factors"]:
            multiplier *= float(factors[name])
        factor_text = "".join(f" x {name} {factors[name]}" for name in table["factors"])
    source = f"{table['regulation']} col. {column}{factor_text}; {entry['source']}"
    if isinstance(value, list):
        low, high = value
        return Limit(low=float(low), high=float(high), source=source)
    return Limit(high=round(float(value) * multiplier, 6), source=source)


STATION_FIELDS = ("id", "name", "zone", "facility", "kind", "expected_interval_s", "offline_grace_s", "clock_lag_alert_s",
                  "regulation", "column", "retention_days", "history_only", "detector_preset", "channels")
"""A seed station's keys taken as the `Station` fields of the same name."""
SEED_STATION_KEYS = frozenset(STATION_FIELDS) | {"profile", "extra_parameters", "factors", "permit_limits"}
SEED_PARAMETER_KEYS = frozenset({"unit", "range", "max_rate_per_min", "resolution", "rate_span_s"})


def _unknown_keys(where: str, found: Iterable[str], known: Iterable[str]) -> None:
    """A key the seed does not read is a mistake to name, not to drop: `permit_limit:` (singular) had left a station
    on the regulation's limits instead of its permit's."""
    unknown = sorted(set(found) - set(known))
    if unknown:
        raise RegistryError(f"{where}: unknown keys {unknown} in the registry seed; use some of {sorted(known)}")


def _permit_limit(station_id: str, symbol: str, given: Any) -> Limit:
    try:
        return LimitIn.model_validate(given)
    except ValueError as exc:
        raise RegistryError(f"station {station_id}, parameter {symbol!r}: permit limit {given!r} is not a limit "
                            f"(high, low, source): {exc}") from None


def _station_from_seed(raw: dict[str, Any], catalogue: dict[str, Any], profiles: dict[str, list[str]],
                       tables: dict[str, dict[str, Any]]) -> Station:
    station_id = raw["id"]
    _unknown_keys(f"station {station_id}", raw, SEED_STATION_KEYS)
    symbols = list(profiles[raw["profile"]]) if "profile" in raw else []
    symbols += [s for s in raw.get("extra_parameters", []) if s not in symbols]
    table = tables.get(raw.get("regulation", ""))
    if raw.get("regulation") and table is None:
        raise RegistryError(f"station {station_id}: regulation {raw['regulation']!r} has no table in the limits folder; add it or fix the name")
    factors = raw.get("factors", {})
    if table is not None:
        missing = [name for name in table["factors"] if name not in factors]
        if missing:
            raise RegistryError(f"station {station_id}: factors {missing} are required by {table['regulation']}; add them under 'factors'")
    overrides = raw.get("permit_limits", {})
    _unknown_keys(f"station {station_id}, permit_limits", overrides, symbols)
    parameters: dict[str, ParameterSpec] = {}
    for symbol in symbols:
        if symbol not in catalogue:
            raise RegistryError(f"station {station_id}: parameter {symbol!r} is not in the parameter catalogue; add it under 'parameters'")
        spec = catalogue[symbol]
        _unknown_keys(f"parameter {symbol!r} of the catalogue", spec, SEED_PARAMETER_KEYS)
        limit = _permit_limit(station_id, symbol, overrides[symbol]) if symbol in overrides else (
            regulatory_limit(table, symbol, raw["column"], factors) if table is not None else None)
        low, high = spec.get("range", (None, None))
        parameters[symbol] = ParameterSpec(symbol=symbol, unit=spec["unit"], limit=limit, range_min=low, range_max=high,
                                           max_rate_per_min=spec.get("max_rate_per_min"), resolution=spec.get("resolution"),
                                           rate_span_s=spec.get("rate_span_s"))
    fields = {k: raw[k] for k in STATION_FIELDS if k in raw}
    return Station(**fields, factors={k: float(v) for k, v in factors.items()}, parameters=parameters)


def load_registry(registry_file: Path, limits_dir: Path) -> dict[str, Station]:
    """Stations of the seed file with their effective limits, keyed by station id."""
    seed = yaml.safe_load(registry_file.read_text(encoding="utf-8"))
    tables = load_limit_tables(limits_dir)
    stations = [_station_from_seed(raw, seed["parameters"], seed.get("profiles", {}), tables) for raw in seed["stations"]]
    by_id = {s.id: s for s in stations}
    if len(by_id) != len(stations):
        raise RegistryError("station ids in the registry seed are not unique")
    return by_id


class RegistrySnapshot(NamedTuple):
    """The active stations and the ids of the retired ones, as read in one go."""

    stations: Mapping[str, Station]
    retired_ids: frozenset[str] = frozenset()


class RegistryCache(Mapping[str, Station]):
    """The registry as a read-only mapping that reloads itself.

    It reloads every `refresh_s`. Asked for a station it does not know, it looks again at once (at most every
    `miss_reload_s`), so a station registered a moment ago is accepted without a restart: through `changes` (the
    stations added, changed or retired lately: one small query) when given, else by a whole reload. A gateway that
    keeps sending for unknown stations then costs one small query a second, not a reload of every station a second
    in the bridge's network thread, which on a large registry starved the MQTT keep-alive and held up every
    gateway's messages. A failed load keeps what is known. When `load` returns a `RegistrySnapshot`, `retired_ids`
    tells a retired station from one never registered, so a rejection can say which.
    """

    def __init__(self, load: Callable[[], Mapping[str, Station] | RegistrySnapshot], refresh_s: float = 30.0,
                 miss_reload_s: float = 1.0, clock: Callable[[], float] = time.monotonic,
                 changes: Callable[[], RegistrySnapshot] | None = None) -> None:
        self._load = load
        self._changes = changes
        self.retired_ids: frozenset[str] = frozenset()
        self._refresh_s = refresh_s
        self._miss_reload_s = miss_reload_s
        self._clock = clock
        self._stations: Mapping[str, Station] = {}
        self._loaded_at = float("-inf")
        self._looked_at = float("-inf")
        self.reload()

    def reload(self) -> None:
        """Load the registry now; a failed load is logged and keeps the previous one (the next reload still waits `refresh_s`)."""
        loaded = self._fetch(self._load)
        if isinstance(loaded, RegistrySnapshot):
            self._stations, self.retired_ids = loaded
        elif loaded is not None:
            self._stations = loaded
        self._loaded_at = self._looked_at = self._clock()

    def _merge_changes(self, changes: Callable[[], RegistrySnapshot]) -> None:
        """Add the stations `changes` reports to what is known (a retired one leaves the active stations)."""
        changed = self._fetch(changes)
        if changed is not None:
            stations = {**self._stations, **changed.stations}
            for station_id in changed.retired_ids:
                stations.pop(station_id, None)
            self._stations = stations
            self.retired_ids = (self.retired_ids - changed.stations.keys()) | changed.retired_ids
        self._looked_at = self._clock()

    @staticmethod
    def _fetch(load: Callable[[], T]) -> T | None:
        """`load()`, or None when it fails (logged at most every 10 s: a database outage repeats it every miss)."""
        try:
            return load()
        except Exception as exc:
            _log("warning", "registry.reload_failed", key=type(exc).__name__, error=str(exc),
                 action="keeping the previous registry")
            return None

    def _maybe_reload(self, missing: bool) -> None:
        now = self._clock()
        if now - self._loaded_at >= self._refresh_s:
            self.reload()
        elif missing and now - self._looked_at >= self._miss_reload_s:
            if self._changes is None:
                self.reload()
            else:
                self._merge_changes(self._changes)

    def __getitem__(self, station_id: str) -> Station:
        self._maybe_reload(missing=station_id not in self._stations)
        return self._stations[station_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._stations)

    def __len__(self) -> int:
        return len(self._stations)

    def __contains__(self, station_id: object) -> bool:
        return isinstance(station_id, str) and self.get(station_id) is not None


def load_catalogue(registry_file: Path) -> dict[str, Any]:
    """The parameter catalogue of the seed (symbol → unit, range): the national symbols as configured."""
    return dict(yaml.safe_load(registry_file.read_text(encoding="utf-8")).get("parameters", {}))


def check_station(station: Station, catalogue: Mapping[str, Any], detector_names: Iterable[str]) -> None:
    """Raise RegistryError naming the station, the parameter and the fix when an administered record is inconsistent.

    A symbol of the catalogue keeps its catalogue unit (gateways convert exact factors to it); any other
    symbol (chlorine dioxide, redox, ...) is allowed with the unit, range, limit and detectors it is given.
    """
    known = set(detector_names)
    for key, spec in station.parameters.items():
        where = f"station {station.id}, parameter {key!r}"
        if key != spec.symbol:
            raise RegistryError(f"{where}: the key differs from its symbol {spec.symbol!r}; use the symbol as the key")
        if not key.strip() or any(c in key for c in "/+#\t\n"):
            raise RegistryError(f"{where}: a symbol must be non-empty without '/', '+', '#' or whitespace controls; rename it")
        entry = catalogue.get(key)
        if entry is not None and spec.unit != entry["unit"]:
            raise RegistryError(f"{where}: national symbol in {spec.unit!r}, but the catalogue unit is {entry['unit']!r}; "
                                f"use {entry['unit']!r} (gateways sending another unit are converted when the factor is exact)")
        if spec.range_min is not None and spec.range_max is not None and spec.range_min >= spec.range_max:
            raise RegistryError(f"{where}: range_min {spec.range_min} is not below range_max {spec.range_max}; fix the range")
        if spec.limit is not None and spec.limit.low is not None and spec.limit.high is not None \
                and spec.limit.low > spec.limit.high:
            raise RegistryError(f"{where}: limit low {spec.limit.low} is above high {spec.limit.high}; fix the limit")
        unknown = sorted(set(spec.detectors or ()) - known)
        if unknown:
            raise RegistryError(f"{where}: unknown detectors {unknown}; use some of {sorted(known)} or leave detectors out")
