"""Streaming anomaly detectors and incremental statistics, River-style: small classes, no I/O.

Every detector is built from hyperparameters only, learns one value at a time with
``update(value, ts) -> Verdict`` (score first, learn only what is not anomalous), keeps
its learned state as a plain JSON dict (``state()`` / ``load_state()`` / ``from_state()``)
and has a warm-up ``grace_period`` during which it never flags.
"""

from __future__ import annotations

from typing import Any

from processors.detectors.base import Detector, RingBuffer, Verdict
from processors.detectors.drift import CusumDrift
from processors.detectors.flatline import Flatline
from processors.detectors.multivariate import Mahalanobis
from processors.detectors.spike import RobustSpike
from processors.detectors.stats import EWMean, EWVar, RollingMean

__all__ = [
    "DETECTORS",
    "CusumDrift",
    "Detector",
    "EWMean",
    "EWVar",
    "Flatline",
    "Mahalanobis",
    "RingBuffer",
    "RobustSpike",
    "RollingMean",
    "Verdict",
    "default_params",
]

DETECTORS: dict[str, type[Detector]] = {
    cls.name: cls for cls in (RobustSpike, CusumDrift, Flatline, Mahalanobis)
}
"""Every detector by its ``name`` (the ``kind`` of its verdicts)."""


def default_params(name: str) -> dict[str, Any]:
    """Constructor keyword arguments giving a small, quick instance of detector ``name`` (for tests)."""
    return DETECTORS[name]._unit_test_params()
