"""The levels a series returns to: a pump's on and off, a process's day and night regimes."""

from __future__ import annotations

from typing import Any

__all__ = ["KnownLevels", "MAD_TO_SIGMA"]

MAD_TO_SIGMA = 1.4826


class KnownLevels:
    """The last few levels a series held for a whole window and then left, each as (median, MAD).

    A flow that reads 0 every night and 40 by day switches at 06:00 and 22:00. The first switch
    is news; the detector accepts the new level after some readings. From then on the series
    moves between levels it has held before, and a value back at one of them (within
    ``threshold`` of its scale) is a known change of state, not an anomaly. Only a level held for
    a whole window is remembered, so a short excursion (a spill of an hour) does not become
    normal. At most ``capacity`` levels are kept, the most recently left first.

    Examples
    --------
    >>> levels = KnownLevels(2)
    >>> levels.remember(40.0, 2.0, threshold=8.0, floor=0.1)
    >>> levels.match(43.0, threshold=8.0, floor=0.1), levels.match(0.0, threshold=8.0, floor=0.1)
    (0, None)
    """

    __slots__ = ("capacity", "levels")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.levels: list[list[float]] = []

    @staticmethod
    def _distance(x: float, level: list[float], floor: float) -> float:
        """How far `x` is from `level`, in the level's scales (its MAD as a standard deviation, floored)."""
        scale = max(MAD_TO_SIGMA * level[1], floor)
        return abs(x - level[0]) / scale if scale > 0.0 else (0.0 if x == level[0] else float("inf"))

    def _near(self, x: float, level: list[float], threshold: float, floor: float) -> bool:
        return self._distance(x, level, floor) <= threshold

    def match(self, x: float, threshold: float, floor: float) -> int | None:
        """Index of the remembered level nearest `x` (in its scales) if within `threshold` of it, else None."""
        near = [(self._distance(x, level, floor), i) for i, level in enumerate(self.levels)]
        best = min(near, default=None)
        return best[1] if best is not None and best[0] <= threshold else None

    def remember(self, center: float, mad: float, threshold: float, floor: float) -> None:
        """Keep the level (median `center`, MAD `mad`) first, replacing one it matches; the oldest goes beyond capacity."""
        if self.capacity < 1:
            return
        self.levels = [lv for lv in self.levels if not self._near(center, lv, threshold, floor)]
        self.levels.insert(0, [center, mad])
        del self.levels[self.capacity:]

    def pop(self, i: int) -> tuple[float, float]:
        """Forget level `i` and return its (median, MAD): the series went back to it."""
        center, mad = self.levels.pop(i)
        return center, mad

    def state(self) -> list[list[float]]:
        """The remembered levels, oldest first, as [median, MAD] pairs."""
        return [list(lv) for lv in self.levels]

    def load_state(self, state: Any) -> None:
        """Resume from `state()`, keeping at most `capacity` levels."""
        self.levels = [[float(c), float(m)] for c, m in (state or [])][: max(self.capacity, 0)]
