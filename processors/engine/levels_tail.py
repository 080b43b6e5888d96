"""Rows of the spike detector's known levels (`KnownLevels`) and tail histogram (`TailQuantile`), as arrays: their
state; `processors.engine.spike_pass` updates and reads them."""

from __future__ import annotations

from typing import Any

import numpy as np

from processors.detectors.tail import BINS, TailQuantile
from processors.engine.row_json import cells, ragged

__all__ = ["LevelRows", "TailRows"]


class LevelRows:
    """Per row, up to ``capacity`` remembered levels (median, MAD), the most recently left first."""

    def __init__(self, capacity: np.ndarray) -> None:
        self.capacity = capacity.astype(np.int64)
        width = max(int(self.capacity.max()) if self.capacity.size else 1, 1)
        self.center = np.zeros((self.capacity.size, width))
        self.mad = np.zeros((self.capacity.size, width))
        self.count = np.zeros(self.capacity.size, dtype=np.int64)

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


class TailRows:
    """Per row, a `TailQuantile` histogram of scores."""

    def __init__(self, n: int, memory: float = TailQuantile().memory) -> None:
        self.memory = memory
        self.counts = np.zeros((n, BINS))
        self.total = np.zeros(n)

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
