"""Incremental statistics with explicit JSON state: a time-windowed mean and exponentially weighted moments."""

from __future__ import annotations

import bisect
import math
from datetime import datetime, timedelta
from typing import Any

from processors.detectors.base import Parametrised, epoch_seconds

__all__ = ["EWMean", "EWVar", "RollingMean"]


class RollingMean(Parametrised):
    """Mean of the values whose event time lies within ``window`` of the newest timestamp.

    The window is the half-open interval ``(newest - window, newest]``. Values may arrive
    out of order; a value older than the window is refused and a newer one evicts what
    falls out. The mean is computed exactly (``math.fsum``) over the kept values.

    Parameters
    ----------
    window
        Width of the event-time window.

    Examples
    --------
    >>> from datetime import datetime, timedelta, timezone
    >>> t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    >>> m = RollingMean(timedelta(minutes=10))
    >>> for i, x in enumerate([1.0, 2.0, 3.0]):
    ...     _ = m.update(x, t0 + timedelta(minutes=5 * i))
    >>> m.get()
    2.5
    """

    def __init__(self, window: timedelta) -> None:
        if window <= timedelta(0):
            raise ValueError("window must be positive")
        self.window = window
        self._width = window.total_seconds()
        self._ts: list[float] = []
        self._values: list[float] = []

    def __len__(self) -> int:
        return len(self._values)

    def update(self, value: float, ts: datetime) -> bool:
        """Insert ``value`` at ``ts``; return False (and keep nothing) if it is older than the window."""
        t = epoch_seconds(ts)
        if self._ts and t <= self._ts[-1] - self._width:
            return False
        i = bisect.bisect_right(self._ts, t)
        self._ts.insert(i, t)
        self._values.insert(i, float(value))
        cut = bisect.bisect_right(self._ts, self._ts[-1] - self._width)
        if cut:
            del self._ts[:cut]
            del self._values[:cut]
        return True

    def get(self) -> float | None:
        """The mean of the values in the window, or None when it is empty."""
        if not self._values:
            return None
        return math.fsum(self._values) / len(self._values)

    def state(self) -> dict[str, Any]:
        """The window's times and values, as JSON."""
        return {"ts": list(self._ts), "values": list(self._values)}

    def load_state(self, state: dict[str, Any]) -> None:
        """Resume from `state()`."""
        self._ts = [float(t) for t in state["ts"]]
        self._values = [float(v) for v in state["values"]]


class EWMean(Parametrised):
    """Exponentially weighted mean: ``m <- m + a_n * (x - m)`` with ``a_n = max(alpha, 1 / n)``.

    The rate ``1 / n`` for the first ``1 / alpha`` values makes the start a plain average
    instead of a mean biased towards the first value; after that the weights decay
    geometrically.

    Parameters
    ----------
    alpha
        Weight of the newest value, in (0, 1].

    Examples
    --------
    >>> m = EWMean(alpha=0.5)
    >>> for x in (1.0, 3.0, 5.0):
    ...     m.update(x)
    >>> m.get()
    3.5
    """

    def __init__(self, alpha: float) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ValueError("alpha must be in (0, 1]")
        self.alpha = alpha
        self.n = 0
        self.mean = 0.0

    def update(self, x: float) -> None:
        """Learn ``x``."""
        x = float(x)
        self.n += 1
        self.mean += max(self.alpha, 1.0 / self.n) * (x - self.mean)

    def get(self) -> float:
        """The current mean (0.0 before any value)."""
        return self.mean

    def state(self) -> dict[str, Any]:
        """The count and mean, as JSON."""
        return {"n": self.n, "mean": self.mean}

    def load_state(self, state: dict[str, Any]) -> None:
        """Resume from `state()`."""
        self.n = int(state["n"])
        self.mean = float(state["mean"])


class EWVar(Parametrised):
    """Exponentially weighted variance (Finch 2009), with its mean.

    With ``d = x - m`` and ``a_n = max(alpha, 1 / n)``: ``m <- m + a_n * d`` and
    ``v <- (1 - a_n) * (v + a_n * d**2)``. This is the weighted population variance where
    value ``i`` has weight ``a_i * prod_{j > i} (1 - a_j)``: for the first ``1 / alpha``
    values exactly Welford's mean and population variance, then exponentially fading.

    Parameters
    ----------
    alpha
        Weight of the newest value, in (0, 1].

    Examples
    --------
    >>> v = EWVar(alpha=0.5)
    >>> for x in (1.0, 3.0):
    ...     v.update(x)
    >>> v.mean, v.get()
    (2.0, 1.0)

    References
    ----------
    Finch, T. (2009). Incremental calculation of weighted mean and variance.
    """

    def __init__(self, alpha: float) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ValueError("alpha must be in (0, 1]")
        self.alpha = alpha
        self.n = 0
        self.mean = 0.0
        self.var = 0.0

    def update(self, x: float) -> None:
        """Learn ``x``."""
        x = float(x)
        self.n += 1
        a = max(self.alpha, 1.0 / self.n)
        d = x - self.mean
        incr = a * d
        self.mean += incr
        self.var = (1.0 - a) * (self.var + d * incr)

    def get(self) -> float:
        """The current variance (0.0 before two values)."""
        return self.var

    def state(self) -> dict[str, Any]:
        """The count, mean and variance, as JSON."""
        return {"n": self.n, "mean": self.mean, "var": self.var}

    def load_state(self, state: dict[str, Any]) -> None:
        """Resume from `state()`."""
        self.n = int(state["n"])
        self.mean = float(state["mean"])
        self.var = float(state["var"])
