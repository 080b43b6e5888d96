"""Stuck sensors: the value has not moved for too many consecutive samples."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from processors.detectors.base import Detector, Verdict, fmt, is_finite

__all__ = ["Flatline"]


class Flatline(Detector):
    """Flatline (stuck sensor) detector.

    A run starts at an anchor value; every following value within ``tolerance`` of the
    anchor extends the run by one interval, any other value becomes the new anchor. The
    value that completes ``n_intervals`` unchanged intervals, and every one after it, is
    anomalous. The score is the run length in intervals, compared with ``n_intervals``.
    Comparing with the anchor rather than the previous value also catches a creep smaller
    than ``tolerance`` per step.

    Parameters
    ----------
    n_intervals
        Number of consecutive unchanged intervals that make a flatline.
    tolerance
        Largest change from the anchor still counted as unchanged.
    grace_period
        Number of values seen before any verdict can be anomalous.

    Examples
    --------
    >>> from datetime import datetime, timezone
    >>> ts = datetime(2026, 1, 1, tzinfo=timezone.utc)
    >>> det = Flatline(n_intervals=3)
    >>> [det.update(x, ts).is_anomaly for x in (1.0, 2.0, 2.0, 2.0, 2.0, 2.0, 3.0)]
    [False, False, False, False, True, True, False]
    """

    name = "flatline"

    def __init__(self, n_intervals: int = 30, tolerance: float = 0.0, grace_period: int = 0) -> None:
        if n_intervals < 1 or tolerance < 0 or grace_period < 0:
            raise ValueError("n_intervals >= 1, tolerance >= 0 and grace_period >= 0 are required")
        self.n_intervals = n_intervals
        self.tolerance = tolerance
        self.grace_period = grace_period
        self._anchor: float | None = None
        self._run = 0
        self._n = 0

    @classmethod
    def _unit_test_params(cls) -> dict[str, Any]:
        return {"n_intervals": 4, "tolerance": 0.0, "grace_period": 3}

    def update(self, value: float, ts: datetime) -> Verdict:
        if not is_finite(value):
            return self._skip(f"ignored non-finite value {value!r}")
        x = float(value)
        self._n += 1
        if self._anchor is not None and abs(x - self._anchor) <= self.tolerance:
            self._run += 1
        else:
            self._anchor, self._run = x, 0
        if self._n <= self.grace_period:
            return self._warming(self._n, self.grace_period)
        score = float(self._run)
        detail = (
            f"value {fmt(x)} within {fmt(self.tolerance)} of {fmt(self._anchor)} "
            f"for {self._run} consecutive intervals (limit {self.n_intervals})"
        )
        return Verdict(self._run >= self.n_intervals, score, self.name, detail)

    def state(self) -> dict[str, Any]:
        return {"anchor": self._anchor, "run": self._run, "n": self._n}

    def load_state(self, state: dict[str, Any]) -> None:
        self._anchor = None if state["anchor"] is None else float(state["anchor"])
        self._run = int(state["run"])
        self._n = int(state["n"])
