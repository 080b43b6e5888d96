"""Stuck sensors: the value has not moved for too many consecutive samples."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from processors.detectors.base import Detector, Verdict, fmt, is_finite
from processors.detectors.stats import EWMean

__all__ = ["Flatline"]


RUN_MEMORY = 16
"""How many values' longest normal stretches are remembered."""


class Flatline(Detector):
    """Flatline (stuck sensor) detector, judged against the instrument's normal variability.

    A run starts at an anchor value; every following value within ``tolerance`` of the
    anchor extends the run by one interval, any other value becomes the new anchor.
    Comparing with the anchor rather than the previous value also catches a creep smaller
    than ``tolerance`` per step. A run is *stuck* once it reaches its limit, and stays stuck
    (one alarm for the stretch) until the value moves. The limit is the largest of:

    - ``n_intervals``;
    - the run length that the series' own repeats make rarer than ``rarity``: a quantised
      series (pH to 0.01, counts) repeats its value with a learned probability ``p``, and a run
      of ``n`` happens by chance with probability about ``p**n``, so the limit is
      ``log(rarity) / log(p)``; ``p`` is learned from completed runs only, so a stretch in
      progress never raises its own limit;
    - twice the longest stretch this very value has held before and then left (the value 7.00
      of a pH reported to 0.01 that mostly reads 7.00; Flow 0 through the night): a constant
      value the series has shown to be a normal state alarms only when it lasts clearly longer
      than before. The longest runs of the last ``RUN_MEMORY`` values held longest are kept.

    The score is the run length scaled so that the limit maps onto ``n_intervals``.

    Parameters
    ----------
    n_intervals
        Number of consecutive unchanged intervals that make a flatline at the least.
    tolerance
        Largest change from the anchor still counted as unchanged.
    grace_period
        Number of values seen before any verdict can be anomalous.
    rarity
        Chance per reading below which a run of repeats is not taken as normal variability.
    alpha
        EW weight with which the repeat probability learns each reading of a completed run.

    Examples
    --------
    >>> from datetime import datetime, timezone
    >>> ts = datetime(2026, 1, 1, tzinfo=timezone.utc)
    >>> det = Flatline(n_intervals=3)
    >>> [det.update(x, ts).is_anomaly for x in (1.0, 2.0, 2.0, 2.0, 2.0, 2.0, 3.0)]
    [False, False, False, False, True, True, False]

    A value held that long before and left again is a normal state the next time:

    >>> [det.update(x, ts).is_anomaly for x in (2.0,) * 7 + (3.0,)]
    [False, False, False, False, False, False, False, False]
    """

    name = "flatline"

    def __init__(self, n_intervals: int = 30, tolerance: float = 0.0, grace_period: int = 0, rarity: float = 1e-7,
                 alpha: float = 0.01) -> None:
        if n_intervals < 1 or tolerance < 0 or grace_period < 0 or not 0.0 < rarity < 1.0 or not 0.0 < alpha <= 1.0:
            raise ValueError("n_intervals >= 1, tolerance >= 0, grace_period >= 0, 0 < rarity < 1 and 0 < alpha <= 1 are required")
        self.n_intervals = n_intervals
        self.tolerance = tolerance
        self.grace_period = grace_period
        self.rarity = rarity
        self.alpha = alpha
        self._anchor: float | None = None
        self._run = 0
        self._n = 0
        self._stuck = False
        self._repeat = EWMean(alpha)
        self._held: dict[str, int] = {}

    @classmethod
    def _unit_test_params(cls) -> dict[str, Any]:
        return {"n_intervals": 4, "tolerance": 0.0, "grace_period": 3, "rarity": 1e-7, "alpha": 0.01}

    @staticmethod
    def _key(anchor: float) -> str:
        return f"{anchor:.9g}"

    def limit(self) -> int:
        """The run length (intervals) from which the current run is stuck."""
        limit = self.n_intervals
        p = self._repeat.mean if self._repeat.n else 0.0
        if p >= 1.0:
            return 2**31
        if p > 0.0:
            limit = max(limit, math.ceil(math.log(self.rarity) / math.log(p)))
        held = self._held.get(self._key(self._anchor)) if self._anchor is not None else None
        if held is not None:
            limit = max(limit, 2 * held + 1)
        return limit

    def update(self, value: float, ts: datetime) -> Verdict:
        """Extend or end the current run of unchanged values and say whether it has been stuck too long."""
        if not is_finite(value):
            return self._skip(f"ignored non-finite value {value!r}")
        x = float(value)
        self._n += 1
        if self._anchor is not None and abs(x - self._anchor) <= self.tolerance:
            self._run += 1
        else:
            if self._anchor is not None:
                self._end_run()
            self._anchor, self._run = x, 0
        if self._n <= self.grace_period:
            return self._warming(self._n, self.grace_period)
        limit = self.limit()
        stuck = self._run >= limit
        self._stuck = self._stuck or stuck
        score = float(self._run) * self.n_intervals / limit
        detail = (
            f"value {fmt(x)} within {fmt(self.tolerance)} of {fmt(self._anchor)} "
            f"for {self._run} consecutive intervals (stuck from {limit}: "
            f"{'the minimum' if limit == self.n_intervals else 'longer than this series normally holds a value'})"
        )
        return Verdict(stuck, score, self.name, detail)

    def relearn(self, gap_s: float | None = None) -> None:
        """Start a new run at the next value (a gap breaks a stretch); the repeat probability and held values are kept."""
        self._anchor, self._run, self._stuck = None, 0, False

    def _end_run(self) -> None:
        """Learn a completed run: its repeats into the repeat probability (unless it was stuck), its length per value.

        A stretch that was stuck and then left is remembered for its value too: a sensor cannot tell a
        repaired fault from a normal state (Flow 0 at night), and the next stretch must be twice as long.
        """
        if not self._stuck:
            for _ in range(min(self._run, 4096)):
                self._repeat.update(1.0)
            self._repeat.update(0.0)
        if self._anchor is not None:
            key = self._key(self._anchor)
            self._held[key] = max(self._held.get(key, 0), self._run)
            if len(self._held) > RUN_MEMORY:
                del self._held[min((k for k in self._held if k != key), key=lambda k: self._held[k])]
        self._stuck = False

    def state(self) -> dict[str, Any]:
        """The open run, the repeat probability and the values held longest, as JSON for `from_state`."""
        return {"anchor": self._anchor, "run": self._run, "n": self._n, "stuck": self._stuck,
                "repeat": self._repeat.state(), "held": dict(self._held)}

    def load_state(self, state: dict[str, Any]) -> None:
        """Resume from `state()`."""
        self._anchor = None if state["anchor"] is None else float(state["anchor"])
        self._run = int(state["run"])
        self._n = int(state["n"])
        self._stuck = bool(state.get("stuck", False))
        self._repeat = EWMean(self.alpha)
        if "repeat" in state:
            self._repeat.load_state(state["repeat"])
        self._held = {str(k): int(v) for k, v in state.get("held", {}).items()}
