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
LN2_PER_BIN = math.log(2.0) / BINS_PER_OCTAVE
"""The natural log of one bin's width."""
FEWEST = 3.0
"""A quantile is never read above the third largest score: one or two outliers among few readings are not the tail."""
TRIMMED = 2.0
"""The largest scores left out of a fitted tail's index, for the same reason (`TailQuantile.extrapolated`)."""


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

    def _locate(self, p: float) -> tuple[int, float]:
        """The bin holding the score exceeded by a share `p` (-1 when empty), and the share of that bin's counts above it."""
        if self.total <= 0.0:
            return -1, 0.0
        need = max(p * self.total, FEWEST)
        above = 0.0
        for k in range(self._top, -1, -1):
            below = above
            above += self.counts[k]
            if above >= need - 1e-9:
                return k, min(1.0, (need - below) / self.counts[k])
        return -1, 0.0

    def quantile(self, p: float) -> float:
        """The score exceeded by a share `p` of the counted ones, at the middle of its bin (0.0 when empty).

        With fewer than ``FEWEST / p`` counted, it is the bin of the third largest score seen.
        """
        k, _ = self._locate(p)
        return 0.0 if k <= 0 else LOWEST * 2.0 ** ((k - 0.5) / BINS_PER_OCTAVE)

    def interpolated(self, p: float) -> float:
        """:meth:`quantile`, read within its bin rather than at its middle: the bin's counts taken as spread evenly
        over the bin's log width, so the quantile sits as far below the bin's upper edge as the share of its counts
        above it. A bin is 19 % wide; read at its middle, ``q`` moves in 19 % steps and a threshold that squares
        it in 41 % steps, between weeks of the same noise."""
        k, share = self._locate(p)
        return 0.0 if k <= 0 else LOWEST * 2.0 ** ((k - share) / BINS_PER_OCTAVE)

    def blended(self, p: float, fit: float) -> float:
        """The geometric mean of :meth:`interpolated` and :meth:`extrapolated`: two estimates of the same quantile whose
        errors differ (the read one rests on the few largest scores, the fitted one on a power law over the top
        `fit` share), so their mean swings less than either and leans on neither's assumption alone."""
        return math.sqrt(self.interpolated(p) * self.extrapolated(p, fit))

    def extrapolated(self, p: float, fit: float) -> float:
        """The score exceeded by a share `p`, extrapolated from a power-law tail fitted to the top share `fit`.

        Reading a rare quantile straight off the histogram rests on the few largest scores, so it swings
        between series of the same noise. Hill's estimator uses all the scores in the top `fit` share:
        ``gamma`` is their mean log excess over ``u``, the lower edge of the bin where that share starts;
        Weissman's extrapolation ``u * (share / p) ** gamma`` reads the quantile at `p` from it. The
        ``TRIMMED`` largest scores are left out of ``gamma`` (a trimmed Hill estimator, after Bhattacharya,
        Kallitsis and Stoev 2019): a couple of outliers of another kind, such as a pump's first switch on
        and off (hundreds of MADs) among a day of flow readings, would otherwise make the tail look far
        heavier than the noise is. With fewer than ``3 * FEWEST`` scores in the top share, or `p` not rarer than
        it, :meth:`quantile`. Summed bin by bin from the top, in the order `TailRows.extrapolated` sums.
        """
        need = max(fit * self.total, 3.0 * FEWEST)
        seen = kept = weighted = dropped = 0.0
        for k in range(self._top, 0, -1):
            seen += self.counts[k]
            trimmed = min(seen, TRIMMED)
            keep = self.counts[k] - (trimmed - dropped)
            dropped = trimmed
            kept += keep
            weighted += keep * (k + 0.5)
            if seen >= need - 1e-9:
                share = seen / self.total
                if p >= share or kept <= 0.0:
                    break
                gamma = (weighted / kept - k) * LN2_PER_BIN
                return LOWEST * 2.0 ** ((k - 1) / BINS_PER_OCTAVE) * (share / p) ** gamma
        return self.quantile(p)

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
