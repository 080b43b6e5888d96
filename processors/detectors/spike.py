"""Spikes: distance from the rolling median in units of the rolling MAD."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np

from processors.detectors.base import Detector, RingBuffer, StepEstimate, Verdict, fmt, is_finite, median

__all__ = ["RobustSpike"]

MAD_TO_SIGMA = 1.4826


class RobustSpike(Detector):
    """Robust spike detector: ``|x - median| / (max(1.4826 * MAD, resolution) + eps) > threshold``.

    Median and MAD (median absolute deviation) are taken over the last ``window``
    values that were learned; an anomalous value is scored but not learned, so a spike
    never shifts the baseline. If ``relearn_after`` consecutive values are anomalous the
    detector accepts that the level has changed: it forgets its window and warms up again
    from the current value.

    Parameters
    ----------
    window
        Number of recent non-anomalous values the median and MAD are computed over.
    threshold
        Score above which a value is anomalous (robust z-score).
    grace_period
        Number of values learned before any verdict can be anomalous.
    eps
        Added to the scale (a numerical guard; the resolution is the floor that matters).
    relearn_after
        Consecutive anomalies after which the baseline is rebuilt; None never rebuilds.
        After a level shift this is when the new level is accepted, and the verdict says so.
    center_window
        Number of the most recent learned values whose median is the level a value is compared
        with; None: the whole window. A short one follows a slow trend (a temperature rising
        through the day), which the median of a long window lags behind and would take for a
        spike; the scale stays the MAD of the whole window.
    resolution
        Smallest step the instrument reports; floors the scale so that a quantised, almost
        constant signal (MAD 0) does not turn every step into a spike. None: learned from the
        data (half the smallest non-zero change between consecutive learned values, see
        ``StepEstimate``).

    Examples
    --------
    >>> from datetime import datetime, timezone
    >>> ts = datetime(2026, 1, 1, tzinfo=timezone.utc)
    >>> det = RobustSpike(window=30, threshold=5.0, grace_period=10)
    >>> for x in [10.0, 10.2, 9.8, 10.1, 9.9] * 4:
    ...     _ = det.update(x, ts)
    >>> v = det.update(14.0, ts)
    >>> v.is_anomaly, v.kind, round(v.score, 1)
    (True, 'spike', 27.0)
    >>> v.detail
    'value 14 is 26.98 MADs above the rolling median 10 (scale 0.1483)'
    """

    name = "spike"

    def __init__(
        self,
        window: int = 60,
        threshold: float = 6.0,
        grace_period: int = 30,
        eps: float = 1e-9,
        relearn_after: int | None = None,
        resolution: float | None = None,
        center_window: int | None = None,
    ) -> None:
        if window < 1 or grace_period < 0 or threshold <= 0 or eps < 0 or (resolution is not None and resolution < 0):
            raise ValueError("window >= 1, grace_period >= 0, threshold > 0, eps >= 0 and resolution >= 0 are required")
        self.window = window
        self.threshold = threshold
        self.grace_period = grace_period
        self.eps = eps
        self.relearn_after = relearn_after
        self.resolution = resolution
        self.center_window = center_window
        self._step = StepEstimate()
        self._buffer = RingBuffer(window)
        self._n = 0
        self._run = 0

    @classmethod
    def _unit_test_params(cls) -> dict[str, Any]:
        return {"window": 20, "threshold": 4.0, "grace_period": 5, "eps": 1e-6, "relearn_after": 15, "resolution": None,
                "center_window": None}

    def median_mad(self) -> tuple[float, float]:
        """Median and MAD of the current window (NaN when empty)."""
        values = self._buffer.unordered()
        if values.size == 0:
            return float("nan"), float("nan")
        center = median(values)
        return center, median(np.abs(values - center))

    def update(self, value: float, ts: datetime) -> Verdict:
        if not is_finite(value):
            return self._skip(f"ignored non-finite value {value!r}")
        x = float(value)
        if self._n < self.grace_period or len(self._buffer) == 0:
            self._learn(x)
            return self._warming(self._n, self.grace_period)
        center, mad = self.median_mad()
        if self.center_window is not None and len(self._buffer) > self.center_window:
            center = median(np.asarray(self._buffer.to_list()[-self.center_window:]))
        floor = self._step.floor(self.resolution)
        if mad == 0.0 and floor == 0.0 and x != center:
            # A constant window and no step learned yet: nothing tells how large a change is; the first one sets the step.
            self._run = 0
            self._learn(x)
            return Verdict(False, 0.0, self.name, f"value {fmt(x)} is the first change from a constant {fmt(center)}; "
                                                  "its size is learned as the instrument's step")
        scale = max(MAD_TO_SIGMA * mad, floor) + self.eps
        score = abs(x - center) / scale
        direction = "above" if x >= center else "below"
        detail = f"value {fmt(x)} is {score:.4g} MADs {direction} the rolling median {fmt(center)} (scale {fmt(scale)})"
        if score > self.threshold:
            self._run += 1
            if self.relearn_after is not None and self._run >= self.relearn_after:
                self._reset()
                self._learn(x)
                detail += f"; {self.relearn_after} anomalies in a row: new level accepted, baseline rebuilt from here"
            return Verdict(True, score, self.name, detail)
        self._run = 0
        self._learn(x)
        return Verdict(False, score, self.name, detail)

    def _learn(self, x: float) -> None:
        self._buffer.append(x)
        self._step.update(x)
        self._n += 1

    def relearn(self, gap_s: float | None = None) -> None:
        """Warm up again from the next value; the learned step is kept."""
        self._reset()

    def _reset(self) -> None:
        self._buffer = RingBuffer(self.window)
        self._n = 0
        self._run = 0

    def state(self) -> dict[str, Any]:
        return {"buffer": self._buffer.to_list(), "n": self._n, "run": self._run, "step": self._step.state()}

    def load_state(self, state: dict[str, Any]) -> None:
        self._buffer = RingBuffer.from_list(self.window, state["buffer"])
        self._n = int(state["n"])
        self._run = int(state["run"])
        self._step = StepEstimate()
        self._step.load_state(state.get("step"))
