"""`processors.rate_span` over many series at once: the rate-of-change bins as arrays, the same levels."""

from __future__ import annotations

from typing import Any

import numpy as np

from processors.engine.common import row_medians
from processors.rate_span import BINS_PER_SPAN, HEAD_MIN_AGE_BINS, KEEP_BINS, TAIL_MAX_AGE_BINS

__all__ = ["RateRows"]

WIDTH = KEEP_BINS + 2
"""Bins a row can hold: those at most `KEEP_BINS` older than the newest, and the newest."""


class RateRows:
    """Per series, its rate-of-change bins (`rate_span.add`'s `[index, count, sum_t, sum_value]`), oldest first."""

    def __init__(self, span_s: np.ndarray) -> None:
        self.span_s = span_s.astype(np.float64)
        n = self.span_s.size
        self.index = np.zeros((n, WIDTH), dtype=np.int64)
        self.count = np.zeros((n, WIDTH), dtype=np.int64)
        self.sum_t = np.zeros((n, WIDTH))
        self.sum_v = np.zeros((n, WIDTH))
        self.size = np.zeros(n, dtype=np.int64)

    def load(self, row: int, bins: list[list[Any]]) -> None:
        """Row `row` from `rate_span.add`'s bins."""
        bins = bins[-WIDTH:]
        self.size[row] = len(bins)
        for j, (index, count, sum_t, sum_v) in enumerate(bins):
            self.index[row, j], self.count[row, j], self.sum_t[row, j], self.sum_v[row, j] = index, count, sum_t, sum_v

    def bins(self, row: int) -> list[list[Any]]:
        """Row `row` in `rate_span.add`'s form."""
        return [[int(self.index[row, j]), int(self.count[row, j]), float(self.sum_t[row, j]), float(self.sum_v[row, j])]
                for j in range(int(self.size[row]))]

    def add(self, rows: np.ndarray, t: np.ndarray, value: np.ndarray) -> None:
        """`rate_span.add` of one valid, in-order reading for each of `rows` (distinct)."""
        index = (t // (self.span_s[rows] / BINS_PER_SPAN)).astype(np.int64)
        j = np.arange(WIDTH)[None, :]
        used = j < self.size[rows, None]
        old = used & (self.index[rows] < (index - KEEP_BINS)[:, None])
        drop = old.sum(axis=1)
        order = np.minimum(j + drop[:, None], WIDTH - 1)
        for name in ("index", "count", "sum_t", "sum_v"):
            column = getattr(self, name)
            column[rows] = np.take_along_axis(column[rows], order, axis=1)
        size = self.size[rows] - drop
        last = np.maximum(size - 1, 0)
        same = (size > 0) & (self.index[rows, last] == index)
        r, at = rows[same], last[same]
        self.count[r, at] += 1
        self.sum_t[r, at] += t[same]
        self.sum_v[r, at] += value[same]
        r, at = rows[~same], size[~same]
        self.index[r, at], self.count[r, at], self.sum_t[r, at], self.sum_v[r, at] = index[~same], 1, t[~same], value[~same]
        self.size[rows] = np.where(same, size, size + 1)

    def levels(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """`rate_span.levels` per row: (found, from_t, from_level, to_t, to_level); where not found, the rest is NaN."""
        j = np.arange(WIDTH)[None, :]
        size = self.size[rows]
        used = j < size[:, None]
        index = self.index[rows]
        newest = index[np.arange(rows.size), np.maximum(size - 1, 0)]
        count = np.where(used, self.count[rows], 1)
        mean_t, mean_v = self.sum_t[rows] / count, self.sum_v[rows] / count
        head = used & (index <= (newest - HEAD_MIN_AGE_BINS)[:, None])
        tail = used & (index >= (newest - TAIL_MAX_AGE_BINS)[:, None])
        n_head, n_tail = head.sum(axis=1), tail.sum(axis=1)
        found = (size > 0) & (n_head > 0) & (n_tail > 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            from_t = np.cumsum(np.where(head, mean_t, 0.0), axis=1)[:, -1] / n_head
            to_t = np.cumsum(np.where(tail, mean_t, 0.0), axis=1)[:, -1] / n_tail
        from_level = row_medians(np.where(head, mean_v, np.inf), np.maximum(n_head, 1))
        to_level = row_medians(np.where(tail, mean_v, np.inf), np.maximum(n_tail, 1))
        nan = np.full(rows.size, np.nan)
        return (found, np.where(found, from_t, nan), np.where(found, from_level, nan), np.where(found, to_t, nan),
                np.where(found, to_level, nan))
