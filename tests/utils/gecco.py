"""The GECCO 2018 drinking-water archive for tests: found where the detection bench finds it, never skipped."""

from __future__ import annotations

import csv
from pathlib import Path

from quantrac.domain import ParameterSpec, Station, StationKind

RANGES = {"Tp": (0, 40, "°C"), "Cl": (0, 5, "mg/L"), "pH": (0, 14, "-"), "Redox": (-1000, 1000, "mV"),
          "Leit": (0, 5000, "µS/cm"), "Trueb": (0, 100, "NTU"), "Cl_2": (0, 5, "mg/L"), "Fm": (0, 10000, "m3/h"),
          "Fm_2": (0, 10000, "m3/h")}


def gecco_data() -> Path:
    """The training CSV (bench/detection.py GECCO_DATA); a clear failure when it is missing."""
    from bench.detection import GECCO_DATA
    assert GECCO_DATA.is_file(), (f"the GECCO 2018 training CSV is not at {GECCO_DATA}; it comes with the shared folder "
                                  "beside the repository, a parent folder or the checkout this one was cloned from (shared/data/gecco2018/), "
                                  "or in ~/.cache/quantrac/gecco2018/ "
                                  "from an earlier run; or set QUANTRAC_GECCO_DATA")
    return GECCO_DATA


def gecco_station(station_id: str, preset: str | None = "drinking_water") -> Station:
    """An archive station of the GECCO columns, naming `preset`; history only, with a retention reaching 2016."""
    return Station(id=station_id, name="GECCO 2018 drinking water (archive)", zone="Archive", facility="Fernwasser",
                   kind=StationKind.DRINKING_WATER, expected_interval_s=60, retention_days=4000, history_only=True,
                   detector_preset=preset,
                   parameters={c: ParameterSpec(symbol=c, unit=u, range_min=lo, range_max=hi) for c, (lo, hi, u) in RANGES.items()})


def write_gecco_slice(path: Path, start: int, stop: int) -> int:
    """Rows [start, stop) of the archive as a wide CSV without the label column; returns the readings written."""
    readings = 0
    with gecco_data().open(newline="") as src, path.open("w", newline="", encoding="utf-8") as out:
        rows = csv.reader(src)
        header = next(rows)
        keep = [i for i, name in enumerate(header) if name != "EVENT"]
        w = csv.writer(out)
        w.writerow([header[i] for i in keep])
        for n, row in enumerate(rows):
            if start <= n < stop:
                w.writerow([row[i] for i in keep])
                readings += sum(1 for i in keep[1:] if row[i] != "")
            elif n >= stop:
                break
    return readings
