"""Detector presets: tuned channel configurations kept as data (JSON files beside this module).

A channel runs one detector over one parameter (or, for a vector detector, a group of them)::

    {"detector": "spike", "columns": ["pH"], "params": {"threshold": 12.0, ...}}

`drinking_water.json` is the default for drinking-water-like series (chlorine, pH, redox,
conductivity, turbidity at one-minute resolution), tuned by `bench/tune_gecco.py` on the first
part of the GECCO 2018 training set only; the file says how it was made.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from processors.detectors.base import Detector

__all__ = ["PRESETS_DIR", "build", "load_preset", "preset_path"]

PRESETS_DIR = Path(__file__).resolve().parent


def preset_path(name: str) -> Path:
    return PRESETS_DIR / f"{name}.json"


def load_preset(name: str) -> dict[str, Any]:
    """The preset `name` (`{"channels": [...], "tuning": {...}}`); a channel naming an unknown detector is refused."""
    from processors.detectors import DETECTORS

    path = preset_path(name)
    preset: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    for channel in preset["channels"]:
        if channel["detector"] not in DETECTORS:
            raise ValueError(f"{path.name}: channel on {channel['columns']} names unknown detector {channel['detector']!r}; "
                             f"known: {sorted(DETECTORS)}")
    return preset


def build(channel: dict[str, Any]) -> Detector:
    """A fresh detector for one channel."""
    from processors.detectors import DETECTORS

    return DETECTORS[channel["detector"]](**channel["params"])
