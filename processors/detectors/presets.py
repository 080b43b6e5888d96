"""Detector presets: channel configurations kept as data (JSON files beside this module), and their checks.

A channel runs one detector over one parameter (or, for a vector detector, a group of them)::

    {"detector": "spike", "columns": ["pH"], "params": {"threshold": 12.0, ...}}

A channel without `columns` runs on every parameter of the station; one without `params` takes the
worker's `QUANTRAC_DETECT_DETECTOR_PARAMS` and the parameter's resolution (`quantrac.domain.DetectorChannel`).

There is one preset per station kind (`wastewater`, `emission`, `drinking_water`, `surface_water`);
a station may name another one (`detector_preset`) or give its own channels (`channels`), see
`station_channels` and docs/detection.md "Presets". Each file says where its numbers come from
(`provenance`, or `tuning` for a preset written by a tuner: `drinking_water.json` is tuned by
`bench/tune_gecco.py` on the first part of the GECCO 2018 training set only).
"""

from __future__ import annotations

import functools
import inspect
import json
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from processors.detectors.base import Detector
from quantrac.domain import DetectorChannel
from quantrac.presets import PRESETS_DIR, preset_names, preset_path

if TYPE_CHECKING:
    from quantrac.domain import Station

__all__ = ["PRESETS_DIR", "Preset", "build", "check_detection", "load_preset", "params_of", "preset", "preset_names",
           "preset_path", "station_channels"]


class Preset(BaseModel):
    """A named set of detector channels and where their numbers come from."""

    model_config = ConfigDict(frozen=True)

    name: str
    provenance: str
    channels: tuple[DetectorChannel, ...]


def load_preset(name: str) -> dict[str, Any]:
    """The preset file `name` as written (`{"channels": [...], "provenance" or "tuning": ...}`), checked."""
    preset(name)
    loaded: dict[str, Any] = json.loads(preset_path(name).read_text(encoding="utf-8"))
    return loaded


def _provenance(raw: dict[str, Any]) -> str:
    if "provenance" in raw:
        return str(raw["provenance"])
    tuning = raw.get("tuning") or {}
    if not tuning:
        return ""
    return f"tuned by {tuning.get('by')} on {tuning.get('data')}; method: {tuning.get('method')}"


@functools.cache
def preset(name: str) -> Preset:
    """The preset `name`, its channels checked; ValueError naming the file and the fix when it is wrong."""
    path = preset_path(name)
    if not path.is_file():
        raise ValueError(f"no detector preset {name!r}; known: {preset_names()}")
    raw = json.loads(path.read_text(encoding="utf-8"))
    provenance = _provenance(raw)
    if not provenance:
        raise ValueError(f"{path.name}: says nowhere where its numbers come from; add \"provenance\"")
    channels = tuple(DetectorChannel.model_validate(c) for c in raw["channels"])
    for channel in channels:
        problem = channel_problem(channel)
        if problem:
            raise ValueError(f"{path.name}: channel {channel.detector} on {list(channel.columns or ['every parameter'])}: {problem}")
    return Preset(name=name, provenance=provenance, channels=channels)


def station_channels(station: "Station") -> tuple[DetectorChannel, ...]:
    """The channels a station runs: its own, else the preset it names, else its kind's preset."""
    if station.channels is not None:
        return station.channels
    return preset(station.detector_preset or station.kind.value).channels


@functools.cache
def hyperparameters(detector: str) -> tuple[str, ...]:
    from processors.detectors import DETECTORS

    return tuple(p for p in inspect.signature(DETECTORS[detector].__init__).parameters if p != "self")


def channel_problem(channel: DetectorChannel) -> str | None:
    """What is wrong with a channel taken alone (detector, shape, hyperparameter names and values), with the fix; None if nothing."""
    from processors.detectors import DETECTORS

    cls = DETECTORS.get(channel.detector)
    if cls is None:
        return f"unknown detector {channel.detector!r}; use one of {sorted(DETECTORS)}"
    vector = cls.input_kind == "vector"
    if vector and not channel.columns:
        return f"{channel.detector} scores a group of parameters; list them in columns"
    if not vector and channel.columns is not None and len(channel.columns) != 1:
        return f"{channel.detector} runs on one parameter; give one column per channel, or none for every parameter"
    if channel.params is None:
        return None
    known = hyperparameters(channel.detector)
    unknown = sorted(set(channel.params) - set(known))
    if unknown:
        return f"{channel.detector} has no hyperparameter {unknown}; its hyperparameters are {list(known)}"
    if vector and "names" in channel.params and list(channel.params["names"]) != list(channel.columns or ()):
        return f"params.names {channel.params['names']} differ from columns {list(channel.columns or ())}; leave names out"
    try:
        build(channel)
    except (TypeError, ValueError) as exc:
        return f"its hyperparameters are refused: {exc}; fix them"
    return None


def check_detection(station: "Station") -> None:
    """ValueError naming the station, the parameter and the fix when its own channels cannot run.

    The domain model has already checked what needs no detector (the preset exists, the columns
    are the station's parameters); this checks the detectors and their hyperparameters.
    """
    for channel in station.channels or ():
        problem = channel_problem(channel)
        if problem:
            where = f"station {station.id}, parameter {', '.join(channel.columns) if channel.columns else '(every)'}"
            raise ValueError(f"{where}: {problem}")


def params_of(channel: DetectorChannel, defaults: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments a channel's detector is built with: its own params, else `defaults`; a group's names."""
    from processors.detectors import DETECTORS

    params = dict(channel.params) if channel.params is not None else dict(defaults)
    if DETECTORS[channel.detector].input_kind == "vector":
        params.setdefault("names", list(channel.columns or ()))
    return params


def build(channel: DetectorChannel | dict[str, Any], **defaults: Any) -> Detector:
    """A fresh detector for one channel, as the bench and the worker build it (`params_of`)."""
    from processors.detectors import DETECTORS

    if isinstance(channel, dict):
        channel = DetectorChannel.model_validate(channel)
    return DETECTORS[channel.detector](**params_of(channel, defaults))
