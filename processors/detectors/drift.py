"""Slow drifts: a two-sided CUSUM on values standardised against an EWMA baseline."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from processors.detectors.base import Detector, Verdict, fmt, is_finite
from processors.detectors.stats import EWVar

__all__ = ["CusumDrift"]


class CusumDrift(Detector):
    """Two-sided CUSUM drift detector.

    Each value is standardised against the exponentially weighted baseline,
    ``z = (x - mean) / (std + eps)``, and accumulated as
    ``S+ <- max(0, S+ + z - k)`` and ``S- <- max(0, S- - z - k)``. The value is
    anomalous when ``max(S+, S-) > h``; the sums are then reset. Only non-anomalous
    values update the baseline. During the ``grace_period`` the baseline learns and
    the sums stay at zero. If ``relearn_after`` consecutive values are anomalous, the
    baseline is rebuilt from the current value.

    Parameters
    ----------
    alpha
        EWMA weight of the newest value for the baseline mean and variance; small values
        make the baseline slow, so that a drift shows up against it.
    k
        Slack in standard deviations subtracted at each step; drifts smaller than ``k``
        are not accumulated.
    h
        Decision threshold on the cumulative sums.
    grace_period
        Number of values learned before any verdict can be anomalous.
    eps
        Added to the baseline standard deviation (about the sensor resolution).
    relearn_after
        Consecutive anomalies after which the baseline is rebuilt; None never rebuilds.

    Examples
    --------
    >>> from datetime import datetime, timezone
    >>> ts = datetime(2026, 1, 1, tzinfo=timezone.utc)
    >>> det = CusumDrift(alpha=0.01, k=0.5, h=5.0, grace_period=20)
    >>> for x in [1.0, -1.0] * 50:
    ...     _ = det.update(x, ts)
    >>> [det.update(2.0, ts).is_anomaly for _ in range(4)]
    [False, False, False, True]
    """

    name = "drift"

    def __init__(
        self,
        alpha: float = 0.01,
        k: float = 0.5,
        h: float = 8.0,
        grace_period: int = 60,
        eps: float = 1e-9,
        relearn_after: int | None = None,
    ) -> None:
        if not 0.0 < alpha <= 1.0 or k < 0 or h <= 0 or grace_period < 0 or eps < 0:
            raise ValueError("0 < alpha <= 1, k >= 0, h > 0, grace_period >= 0 and eps >= 0 are required")
        self.alpha = alpha
        self.k = k
        self.h = h
        self.grace_period = grace_period
        self.eps = eps
        self.relearn_after = relearn_after
        self._baseline = EWVar(alpha)
        self._pos = 0.0
        self._neg = 0.0
        self._run = 0

    @classmethod
    def _unit_test_params(cls) -> dict[str, Any]:
        return {"alpha": 0.05, "k": 0.5, "h": 4.0, "grace_period": 5, "eps": 1e-6, "relearn_after": 10}

    @property
    def sums(self) -> tuple[float, float]:
        """The upper and lower cumulative sums."""
        return self._pos, self._neg

    def update(self, value: float, ts: datetime) -> Verdict:
        if not is_finite(value):
            return self._skip(f"ignored non-finite value {value!r}")
        x = float(value)
        if self._baseline.n < self.grace_period or self._baseline.n == 0:
            self._baseline.update(x)
            return self._warming(self._baseline.n, self.grace_period)
        mean = self._baseline.mean
        std = math.sqrt(self._baseline.var)
        z = (x - mean) / (std + self.eps)
        pos = max(0.0, self._pos + z - self.k)
        neg = max(0.0, self._neg - z - self.k)
        score = max(pos, neg)
        side = "upward" if pos >= neg else "downward"
        detail = (
            f"{side} CUSUM {score:.4g} (threshold {fmt(self.h)}); value {fmt(x)} is {z:+.3g} std "
            f"from the baseline mean {fmt(mean)} (std {fmt(std)})"
        )
        if score > self.h:
            self._pos = self._neg = 0.0
            self._run += 1
            if self.relearn_after is not None and self._run >= self.relearn_after:
                self._baseline = EWVar(self.alpha)
                self._baseline.update(x)
                self._run = 0
                detail += f"; {self.relearn_after} alarms in a row, baseline rebuilt from here"
            return Verdict(True, score, self.name, detail)
        self._pos, self._neg = pos, neg
        self._run = 0
        self._baseline.update(x)
        return Verdict(False, score, self.name, detail)

    def state(self) -> dict[str, Any]:
        return {"baseline": self._baseline.state(), "pos": self._pos, "neg": self._neg, "run": self._run}

    def load_state(self, state: dict[str, Any]) -> None:
        self._baseline = EWVar(self.alpha)
        self._baseline.load_state(state["baseline"])
        self._pos = float(state["pos"])
        self._neg = float(state["neg"])
        self._run = int(state["run"])
