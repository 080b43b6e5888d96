"""Rows of the spike detector's known levels (`KnownLevels`) and tail histogram (`TailQuantile`), as arrays."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from processors.detectors.levels import MAD_TO_SIGMA
from processors.detectors.tail import BINS, BINS_PER_OCTAVE, FEWEST, LN2_PER_BIN, LOWEST, TRIMMED, TailQuantile
from processors.engine.row_json import cells, ragged

__all__ = ["LevelRows", "TailRows"]

_MIDDLES = np.array([0.0] + [LOWEST * 2.0 ** ((k - 0.5) / BINS_PER_OCTAVE) for k in range(1, BINS)])
"""The score each bin reads back as, computed as `TailQuantile.quantile` does."""
_EDGES = [LOWEST * 2.0 ** ((k - 1) / BINS_PER_OCTAVE) for k in range(BINS)]
"""The lower edge of each bin (from bin 1), computed as `TailQuantile.extrapolated` does; the power of the
extrapolation is taken with Python's float too, as numpy's may differ from it in the last bit."""


class LevelRows:
    """Per row, up to ``capacity`` remembered levels (median, MAD), the most recently left first."""

    def __init__(self, capacity: np.ndarray) -> None:
        self.capacity = capacity.astype(np.int64)
        width = max(int(self.capacity.max()) if self.capacity.size else 1, 1)
        self.center = np.zeros((self.capacity.size, width))
        self.mad = np.zeros((self.capacity.size, width))
        self.count = np.zeros(self.capacity.size, dtype=np.int64)

    def _distances(self, rows: np.ndarray, x: np.ndarray, floor: np.ndarray) -> np.ndarray:
        """`KnownLevels._distance` of each row's value from each of its levels; +inf in unused slots."""
        center, mad = self.center[rows], self.mad[rows]
        scale = np.maximum(MAD_TO_SIGMA * mad, floor[:, None])
        off = np.abs(x[:, None] - center)
        with np.errstate(divide="ignore", invalid="ignore"):
            dist = np.where(scale > 0.0, off / scale, np.where(x[:, None] == center, 0.0, np.inf))
        used = np.arange(center.shape[1])[None, :] < self.count[rows, None]
        return np.where(used, dist, np.inf)

    def match(self, rows: np.ndarray, x: np.ndarray, threshold: np.ndarray, floor: np.ndarray) -> np.ndarray:
        """`KnownLevels.match` per row: the index of the nearest level within `threshold`, else -1."""
        dist = self._distances(rows, x, floor)
        best = np.argmin(dist, axis=1)
        near = dist[np.arange(rows.size), best] <= threshold
        return np.where(near, best, -1)

    def _shift(self, rows: np.ndarray, order: np.ndarray) -> None:
        self.center[rows] = np.take_along_axis(self.center[rows], order, axis=1)
        self.mad[rows] = np.take_along_axis(self.mad[rows], order, axis=1)

    def pop(self, rows: np.ndarray, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Forget level `index` of each row and return its (median, MAD)."""
        center, mad = self.center[rows, index], self.mad[rows, index]
        j = np.arange(self.center.shape[1])[None, :]
        self._shift(rows, np.minimum(j + (j >= index[:, None]), self.center.shape[1] - 1))
        self.count[rows] -= 1
        return center, mad

    def remember(self, rows: np.ndarray, center: np.ndarray, mad: np.ndarray, threshold: np.ndarray,
                 floor: np.ndarray) -> None:
        """`KnownLevels.remember` per row: drop the levels near `center`, put it first, keep at most the capacity."""
        some = self.capacity[rows] >= 1
        rows, center, mad, threshold, floor = rows[some], center[some], mad[some], threshold[some], floor[some]
        if rows.size == 0:
            return
        keep = self._distances(rows, center, floor) > threshold[:, None]
        keep &= np.arange(keep.shape[1])[None, :] < self.count[rows, None]
        order = np.argsort(~keep, axis=1, kind="stable")
        self._shift(rows, order)
        self.center[rows] = np.concatenate([center[:, None], self.center[rows, :-1]], axis=1)
        self.mad[rows] = np.concatenate([mad[:, None], self.mad[rows, :-1]], axis=1)
        self.count[rows] = np.minimum(keep.sum(axis=1) + 1, self.capacity[rows])

    def state(self, row: int) -> list[list[float]]:
        """Row `row` as `KnownLevels.state()`."""
        count = int(self.count[row])
        return [list(pair) for pair in zip(self.center[row, :count].tolist(), self.mad[row, :count].tolist(), strict=True)]

    def states(self, rows: np.ndarray) -> list[list[list[float]]]:
        """`state` of each of `rows`."""
        return [[list(pair) for pair in zip(center[:count], mad[:count], strict=True)]
                for center, mad, count in zip(self.center[rows].tolist(), self.mad[rows].tolist(),
                                              self.count[rows].tolist(), strict=True)]

    def json(self, rows: np.ndarray) -> list[bytes]:
        """`state` of each of `rows` as JSON text (`processors.engine.row_json`)."""
        return ragged(np.stack([self.center[rows], self.mad[rows]], axis=2), self.count[rows])

    def load(self, row: int, state: Any) -> None:
        """Row `row` from a `KnownLevels.state()`."""
        levels = [[float(c), float(m)] for c, m in (state or [])][: max(int(self.capacity[row]), 0)]
        for j, (c, m) in enumerate(levels):
            self.center[row, j], self.mad[row, j] = c, m
        self.count[row] = len(levels)


def _bins(scores: np.ndarray) -> np.ndarray:
    """`TailQuantile._bin` of each score; where numpy's log2 may differ from `math.log2` in the last bit next to a bin
    edge, with `math.log2`."""
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled = np.log2(scores / LOWEST) * BINS_PER_OCTAVE
        near = (scores >= LOWEST) & (np.abs(scaled - np.rint(scaled)) <= 1e-9 * np.maximum(1.0, np.abs(scaled)))
    for i in np.flatnonzero(near).tolist():
        scaled[i] = math.log2(float(scores[i]) / LOWEST) * BINS_PER_OCTAVE
    bins = np.minimum(BINS - 1, 1 + np.floor(np.where(scores >= LOWEST, scaled, 0.0)).astype(np.int64))
    return np.where(scores < LOWEST, 0, bins)


class TailRows:
    """Per row, a `TailQuantile` histogram of scores."""

    def __init__(self, n: int, memory: float = TailQuantile().memory) -> None:
        self.memory = memory
        self.counts = np.zeros((n, BINS))
        self.total = np.zeros(n)

    def update(self, rows: np.ndarray, scores: np.ndarray) -> None:
        """Count one score in each of `rows` (distinct), halving a row's counts when they reach the memory."""
        if rows.size == 0:
            return
        self.counts[rows, _bins(scores)] += 1.0
        self.total[rows] += 1.0
        full = rows[self.total[rows] >= self.memory]
        self.counts[full] /= 2.0
        self.total[full] /= 2.0

    def locate(self, rows: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`TailQuantile._locate` per row: the bin (-1: none), the share of its counts above the quantile, summed from the
        top bin down as the class sums."""
        total = self.total[rows]
        need = np.maximum(p * total, FEWEST)
        counts = self.counts[rows, ::-1]
        above = np.cumsum(counts, axis=1)
        hit = above >= (need - 1e-9)[:, None]
        j = np.argmax(hit, axis=1)
        idx = np.arange(rows.size)
        below = np.where(j > 0, above[idx, np.maximum(j - 1, 0)], 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            share = np.minimum(1.0, (need - below) / counts[idx, j])
        return np.where(hit.any(axis=1) & (total > 0.0), BINS - 1 - j, -1), share

    @staticmethod
    def quantile_at(k: np.ndarray) -> np.ndarray:
        """`quantile` from `locate`'s bins."""
        return np.where(k > 0, _MIDDLES[np.maximum(k, 0)], 0.0)

    @staticmethod
    def interpolated_at(k: np.ndarray, share: np.ndarray) -> np.ndarray:
        """`TailQuantile.interpolated(p)` from `locate`'s bins and shares, the power taken with Python's float as the
        class takes it."""
        return np.array([LOWEST * 2.0 ** ((b - s) / BINS_PER_OCTAVE) if b > 0 else 0.0
                         for b, s in zip(k.tolist(), share.tolist(), strict=True)])

    @staticmethod
    def blend(interpolated: np.ndarray, extrapolated: np.ndarray) -> np.ndarray:
        """`TailQuantile.blended` from its two estimates."""
        return np.array([math.sqrt(v) for v in (interpolated * extrapolated).tolist()])

    def extrapolated(self, rows: np.ndarray, p: np.ndarray, fit: np.ndarray, quantile: np.ndarray) -> np.ndarray:
        """`TailQuantile.extrapolated(p, fit)` per row, summed in the same order so that it is the same float;
        `quantile`: the rows' `TailQuantile.quantile(p)` (`quantile_at`), what a row with too few scores gives."""
        total = self.total[rows]
        counts = self.counts[rows, ::-1]
        seen = np.cumsum(counts, axis=1)
        trimmed = np.minimum(seen, TRIMMED)
        keep = counts - (trimmed - np.concatenate([np.zeros((rows.size, 1)), trimmed[:, :-1]], axis=1))
        kept = np.cumsum(keep, axis=1)
        weighted = np.cumsum(keep * (np.arange(BINS - 1, -1, -1) + 0.5), axis=1)
        need = np.maximum(fit * total, 3.0 * FEWEST)
        reached = (seen >= (need - 1e-9)[:, None]) & (np.arange(BINS) < BINS - 1)[None, :]
        j = np.argmax(reached, axis=1)
        k = BINS - 1 - j
        idx = np.arange(rows.size)
        a, w = kept[idx, j], weighted[idx, j]
        with np.errstate(divide="ignore", invalid="ignore"):
            share = seen[idx, j] / total
            fitted = reached.any(axis=1) & (p < share) & (a > 0.0)
            gamma = (w / a - k) * LN2_PER_BIN
        q = quantile.copy()
        at = np.flatnonzero(fitted)
        if at.size:
            q[at] = [_EDGES[b] * (s / pp) ** g for b, s, pp, g in
                     zip(k[at].tolist(), share[at].tolist(), p[at].tolist(), gamma[at].tolist(), strict=True)]
        return q

    def state(self, row: int) -> dict[str, Any]:
        """Row `row` as `TailQuantile.state()`."""
        return {"counts": self.counts[row].tolist(), "total": float(self.total[row])}

    def states(self, rows: np.ndarray) -> list[dict[str, Any]]:
        """`state` of each of `rows`."""
        return [{"counts": counts, "total": total}
                for counts, total in zip(self.counts[rows].tolist(), self.total[rows].tolist(), strict=True)]

    def json(self, rows: np.ndarray) -> list[bytes]:
        """`state` of each of `rows` as JSON text (`processors.engine.row_json`)."""
        counts = self.counts[rows]
        return [b'{"counts":%b,"total":%b}' % pair for pair in zip(
            ragged(counts, np.full(rows.size, counts.shape[1])), cells(self.total[rows]), strict=True)]

    def load(self, row: int, state: dict[str, Any] | None) -> None:
        """Row `row` from a `TailQuantile.state()`."""
        tail = TailQuantile()
        tail.load_state(state)
        self.counts[row] = tail.counts
        self.total[row] = tail.total
