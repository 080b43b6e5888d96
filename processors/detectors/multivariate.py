"""Broken correlations: Mahalanobis distance from an exponentially weighted mean and covariance."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np

from processors.detectors.base import Detector, Verdict, fmt

__all__ = ["Mahalanobis"]



def squared_distance(cov: np.ndarray, diff: np.ndarray) -> float:
    """``diff' cov^-1 diff``; through the pseudo-inverse when ``cov`` is singular.

    Parameters that move exactly together (one a multiple of the other) with no shrinkage and a
    tiny ``eps`` make the learned covariance singular to machine precision; ``solve`` then raises,
    and the station's batch would fail. The pseudo-inverse scores the vector over the directions
    the baseline has seen. The engine (`processors.engine.multivariate`) falls back the same way.
    """
    try:
        return float(diff @ np.linalg.solve(cov, diff))
    except np.linalg.LinAlgError:
        return float(diff @ (np.linalg.pinv(cov) @ diff))

class Mahalanobis(Detector):
    """Multivariate detector over a station's correlated parameters.

    Keeps an exponentially weighted mean and covariance (Finch's recursion,
    ``C <- (1 - a) * (C + a * d d^T)`` with ``a = max(alpha, 1 / n)``, so the start is a
    plain average) and scores each vector by its
    Mahalanobis distance under the regularised covariance
    ``(1 - shrinkage) * C + shrinkage * diag(C) + diag(eps**2)``. A value that breaks the
    usual relation between parameters is far even when each parameter is within its own
    range. Missing or non-finite parameters are left out of the score (the distance uses
    the observed ones) and such a vector is not learned. Only non-anomalous, complete
    vectors update the baseline.

    Parameters
    ----------
    names
        Ordered parameter names; a vector input follows this order.
    alpha
        EW weight of the newest vector for the mean and covariance.
    threshold
        Mahalanobis distance above which a vector is anomalous.
    grace_period
        Number of complete vectors learned before any verdict can be anomalous.
    shrinkage
        Weight in [0, 1] moved from the covariance to its diagonal.
    eps
        Floor added to each parameter's standard deviation (in its unit), one for all or one
        per name; about the sensor resolution.
    relearn_after
        Consecutive anomalies after which the baseline is rebuilt; None never rebuilds.
    threshold_off
        Hysteresis: once a vector is anomalous, the following ones stay anomalous while their
        distance is above ``threshold_off`` (None: ``threshold``), so one excursion is one anomaly.
    learn_clip
        Bounded influence (Huber): a vector learned at a distance above ``learn_clip`` is learned as if
        it lay at ``learn_clip``, along the same direction. The edges of an excursion (readings
        just under the threshold) then cannot inflate the covariance, which would hide the next
        excursion of the same kind. None: every learned vector counts in full.

    Examples
    --------
    >>> from datetime import datetime, timezone
    >>> ts = datetime(2026, 1, 1, tzinfo=timezone.utc)
    >>> det = Mahalanobis(["a", "b"], alpha=0.05, threshold=4.0, grace_period=20)
    >>> for i in range(200):
    ...     a = float(i % 7 - 3)
    ...     _ = det.update({"a": a, "b": 2 * a + 0.1 * (i % 3 - 1)}, ts)
    >>> det.update({"a": 1.0, "b": 2.0}, ts).is_anomaly
    False
    >>> v = det.update({"a": 2.0, "b": -4.0}, ts)
    >>> v.is_anomaly, v.kind
    (True, 'multivariate')
    """

    name = "multivariate"
    input_kind = "vector"

    def __init__(
        self,
        names: Sequence[str],
        alpha: float = 0.01,
        threshold: float = 6.0,
        grace_period: int = 60,
        shrinkage: float = 0.01,
        eps: float | Sequence[float] = 1e-6,
        relearn_after: int | None = None,
        threshold_off: float | None = None,
        learn_clip: float | None = None,
    ) -> None:
        if len(names) < 1 or len(set(names)) != len(names):
            raise ValueError("names must be a non-empty list of distinct names")
        if not 0.0 < alpha <= 1.0 or threshold <= 0 or grace_period < 0 or not 0.0 <= shrinkage <= 1.0:
            raise ValueError("0 < alpha <= 1, threshold > 0, grace_period >= 0 and 0 <= shrinkage <= 1 are required")
        if threshold_off is not None and not 0 < threshold_off <= threshold:
            raise ValueError("0 < threshold_off <= threshold is required")
        if learn_clip is not None and learn_clip <= 0:
            raise ValueError("learn_clip > 0 is required")
        self.names = names
        self.alpha = alpha
        self.threshold = threshold
        self.grace_period = grace_period
        self.shrinkage = shrinkage
        self.eps = eps
        self.relearn_after = relearn_after
        self.threshold_off = threshold_off
        self.learn_clip = learn_clip
        self._names = tuple(names)
        floor = np.broadcast_to(np.asarray(eps, dtype=np.float64), (len(names),))
        if np.any(floor < 0):
            raise ValueError("eps must be non-negative")
        self._floor2 = floor**2
        self._reset()

    @classmethod
    def _unit_test_params(cls) -> dict[str, Any]:
        return {"names": ["a", "b", "c"], "alpha": 0.05, "threshold": 4.0, "grace_period": 10, "relearn_after": 10,
                "threshold_off": 3.0, "learn_clip": 3.0}

    def _reset(self) -> None:
        d = len(self._names)
        self._n = 0
        self._run = 0
        self._mean = np.zeros(d)
        self._cov = np.zeros((d, d))

    def _vector(self, values: Mapping[str, float] | Sequence[float] | np.ndarray) -> np.ndarray:
        if isinstance(values, Mapping):
            raw = [values.get(name) for name in self._names]
        else:
            raw = list(np.asarray(values, dtype=np.float64).reshape(-1))
            if len(raw) != len(self._names):
                raise ValueError(f"expected {len(self._names)} values, got {len(raw)}")
        return np.array([np.nan if v is None else float(v) for v in raw], dtype=np.float64)

    def regularised_covariance(self) -> np.ndarray:
        """The covariance used for scoring."""
        diag = np.diag(np.diag(self._cov))
        return (1.0 - self.shrinkage) * self._cov + self.shrinkage * diag + np.diag(self._floor2)

    def update(self, value: Mapping[str, float] | Sequence[float] | np.ndarray, ts: datetime) -> Verdict:
        """Score a vector by its Mahalanobis distance from the baseline; a complete, normal vector is learned."""
        x = self._vector(value)
        seen = np.isfinite(x)
        complete = bool(seen.all())
        if not seen.any():
            return self._skip("ignored: no finite parameter value")
        if self._n < self.grace_period or self._n == 0:
            if not complete:
                return self._skip("ignored incomplete vector during warm-up")
            self._learn(x)
            return self._warming(self._n, self.grace_period)
        diff = (x - self._mean)[seen]
        cov = self.regularised_covariance()[np.ix_(seen, seen)]
        score = math.sqrt(max(0.0, squared_distance(cov, diff)))
        z = diff / np.sqrt(np.diag(cov))
        names = [n for n, s in zip(self._names, seen, strict=True) if s]
        top = sorted(zip(names, z.tolist(), strict=True), key=lambda p: -abs(p[1]))[:3]
        detail = (
            f"Mahalanobis distance {score:.4g} (threshold {fmt(self.threshold)}) over {len(names)} parameters; "
            + ", ".join(f"{n} {zi:+.3g} std" for n, zi in top)
        )
        bar = self.threshold_off if self._run and self.threshold_off is not None else self.threshold
        if score > bar:
            self._run += 1
            if self.relearn_after is not None and self._run >= self.relearn_after:
                self._reset()
                if complete:
                    self._learn(x)
                detail += f"; {self.relearn_after} anomalies in a row, baseline rebuilt from here"
            return Verdict(True, score, self.name, detail)
        self._run = 0
        if complete:
            self._learn(x, score)
        else:
            detail += "; incomplete vector not learned"
        return Verdict(False, score, self.name, detail)

    def _learn(self, x: np.ndarray, distance: float = 0.0) -> None:
        self._n += 1
        a = max(self.alpha, 1.0 / self._n)
        d = x - self._mean
        if self.learn_clip is not None and distance > self.learn_clip:
            d = d * (self.learn_clip / distance)
        self._mean = self._mean + a * d
        self._cov = (1.0 - a) * (self._cov + a * np.outer(d, d))

    @property
    def mean(self) -> dict[str, float]:
        """The baseline mean by parameter name."""
        return dict(zip(self._names, self._mean.tolist(), strict=True))

    def state(self) -> dict[str, Any]:
        """The baseline mean and covariance with their counts, as JSON for `from_state`."""
        return {"n": self._n, "run": self._run, "mean": self._mean.tolist(), "cov": self._cov.tolist()}

    def load_state(self, state: dict[str, Any]) -> None:
        """Resume from `state()`; a state of another group size is refused."""
        d = len(self._names)
        mean = np.array(state["mean"], dtype=np.float64)
        cov = np.array(state["cov"], dtype=np.float64)
        if mean.shape != (d,) or cov.shape != (d, d):
            raise ValueError(f"state does not match {d} parameters")
        self._n = int(state["n"])
        self._run = int(state["run"])
        self._mean = mean
        self._cov = cov
