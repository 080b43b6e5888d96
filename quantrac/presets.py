"""Where the detector presets are kept, and which there are: registry data, like the station seed.

A preset file (`quantrac/data/presets/<name>.json`) names detector channels and says where its
numbers come from. The domain model checks that a station names a preset that exists; what a
channel's detector and hyperparameters mean is checked where the detectors live
(`processors.detectors.presets`).
"""

from __future__ import annotations

from pathlib import Path

PRESETS_DIR = Path(__file__).resolve().parent / "data" / "presets"


def preset_path(name: str) -> Path:
    """The file of preset `name` (it may not exist)."""
    return PRESETS_DIR / f"{name}.json"


def preset_names() -> list[str]:
    """Every preset there is, by name."""
    return sorted(p.stem for p in PRESETS_DIR.glob("*.json"))
