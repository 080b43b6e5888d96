"""How heavy a series' tail is: upper quantiles of a detector's scores from a log-spaced histogram."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["TailQuantile"]

LOWEST = 0.25
"""Lower edge of the second bin; every smaller score falls in the first."""
BINS_PER_OCTAVE = 4
"""Bins per doubling of the score: a quantile is known to within 2**(1/8) (9 %) of its true value."""
BINS = 48
"""Bins up to 0.25 * 2**12 = 1024; larger scores fall in the last."""
FEWEST = 3.0
"""A quantile is never read above the third largest score: one or two outliers among few readings are not the tail."""


class TailQuantile:
    """Upper quantiles of the scores a detector learned, with a state of fixed size.

    A robust z-score (distance from the median in MADs) has the same distribution on every
    Gaussian-like series, so one threshold serves them; heavy-tailed noise (Student's t with 3
    degrees of freedom, bursts) crosses that threshold every few hundred readings. The scores of
    learned values are counted in log-spaced bins (``BINS_PER_OCTAVE`` a doubling), and
    :meth:`quantile` reads an upper quantile back: the series' own "one reading in a thousand".
    When the counts reach ``memory``, all are halved, so old readings fade and the state stays
    bounded. Deterministic: integer bins of ``log2``, plain sums.

    Examples
    --------
    >>> t = TailQuantile()
    >>> for s in [0.5] * 2990 + [6.0] * 10:
    ...     t.update(s)
    >>> round(t.quantile(0.001), 2), round(t.quantile(0.5), 2)
    (6.17, 0.55)
    """

    __slots__ = ("counts", "total", "memory", "_top")

    def __init__(self, memory: float = 10080.0) -> None:
        self.memory = memory
        self.counts = [0.0] * BINS
        self.total = 0.0
        self._top = 0

    @staticmethod
    def _bin(score: float) -> int:
        if score < LOWEST:
            return 0
        return min(BINS - 1, 1 + int(math.floor(math.log2(score / LOWEST) * BINS_PER_OCTAVE)))

    def update(self, score: float) -> None:
        """Count one learned score (non-negative)."""
        k = self._bin(score)
        self.counts[k] += 1.0
        self._top = max(self._top, k)
        self.total += 1.0
        if self.total >= self.memory:
            self.counts = [c / 2.0 for c in self.counts]
            self.total /= 2.0

    def quantile(self, p: float) -> float:
        """The score exceeded by a share `p` of the counted ones, at the middle of its bin (0.0 when empty).

        With fewer than ``FEWEST / p`` counted, it is the bin of the third largest score seen.
        """
        if self.total <= 0.0:
            return 0.0
        need = max(p * self.total, FEWEST)
        above = 0.0
        for k in range(self._top, -1, -1):
            above += self.counts[k]
            if above >= need - 1e-9:
                return 0.0 if k == 0 else LOWEST * 2.0 ** ((k - 0.5) / BINS_PER_OCTAVE)
        return 0.0

    def state(self) -> dict[str, Any]:
        """The histogram's counts and total, as JSON."""
        return {"counts": list(self.counts), "total": self.total}

    def load_state(self, state: dict[str, Any] | None) -> None:
        """Resume from `state()`; a missing or differently binned histogram starts empty."""
        state = state or {}
        counts = state.get("counts")
        self.counts = [float(c) for c in counts] if counts and len(counts) == BINS else [0.0] * BINS
        self.total = float(state.get("total", 0.0)) if counts else 0.0
        self._top = max((k for k, c in enumerate(self.counts) if c > 0.0), default=0)
