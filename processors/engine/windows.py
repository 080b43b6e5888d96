"""`processors.windows` over many series at once: the open 5-min, 1-h and day buckets as arrays, the same means.

Per series and basis, the open buckets sit in slots sorted by start (as `windows.due` visits them).
A series' buckets change only by `add` (a reading counted) and `due` (means judged at a watermark,
closed buckets dropped), the two calls `processors.detection` makes, so a series fed the same calls
holds the same buckets and gives the same means, in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from processors import windows

__all__ = ["Means", "WindowRows"]

BASES = tuple(windows.BASES)
_FIELDS = ("start", "sum", "valid", "total", "dirty", "end", "expected")
JUDGE, LAST_SLOT = windows.JUDGE, windows.LAST_SLOT


@dataclass(frozen=True)
class Means:
    """Means judged by one `due` call, in `windows.due`'s order per row: column `at` is the row's position in the call."""

    at: np.ndarray
    basis: np.ndarray
    start: np.ndarray
    end: np.ndarray
    mean: np.ndarray
    n_valid: np.ndarray
    n_total: np.ndarray
    expected: np.ndarray


def _bounds(t: np.ndarray, basis: str) -> tuple[np.ndarray, np.ndarray]:
    """[start, end) in epoch seconds of each instant's bucket, as `processors.windows.bucket_bounds`."""
    bucket = windows.BASES[basis]
    width = windows.FIXED_WIDTH_S.get(bucket)
    if width is not None:
        start = t // width * width
        return start, start + width
    days = windows.day_table(t)
    return days[:, 0], days[:, 1]


class WindowRows:
    """Per series (with its station's reporting interval), the open buckets of every basis."""

    def __init__(self, interval_s: np.ndarray, slots: int = 4) -> None:
        self.interval_s = interval_s.astype(np.int64)
        n = self.interval_s.size
        self.touched = np.zeros(n, dtype=bool)
        self.count = {b: np.zeros(n, dtype=np.int64) for b in BASES}
        self.slots = {b: self._empty(n, slots) for b in BASES}

    @staticmethod
    def _empty(n: int, width: int) -> dict[str, np.ndarray]:
        ints = ("valid", "total", "dirty", "expected")
        return {f: np.zeros((n, width), dtype=np.int64 if f in ints else np.float64) for f in _FIELDS}

    def _grow(self, basis: str) -> None:
        slots = self.slots[basis]
        n, width = slots["start"].shape
        wider = self._empty(n, 2 * width)
        for f in _FIELDS:
            wider[f][:, :width] = slots[f]
        self.slots[basis] = wider

    def load(self, row: int, state: dict[str, Any]) -> None:
        """Row `row` from a parameter's `windows` dict."""
        self.touched[row] = bool(state)
        for basis in BASES:
            buckets = sorted((state.get(basis) or {}).items(), key=lambda kv: int(kv[0]))
            while len(buckets) > self.slots[basis]["start"].shape[1]:
                self._grow(basis)
            for j, (key, entry) in enumerate(buckets):
                values = (float(int(key)), *entry)
                for f, v in zip(_FIELDS, values, strict=True):
                    self.slots[basis][f][row, j] = v
            self.count[basis][row] = len(buckets)

    def state(self, row: int) -> dict[str, Any]:
        """Row `row` as a parameter's `windows` dict."""
        if not self.touched[row]:
            return {}
        out: dict[str, Any] = {}
        for basis in BASES:
            s = self.slots[basis]
            out[basis] = {str(int(s["start"][row, j])): [float(s["sum"][row, j]), int(s["valid"][row, j]),
                                                         int(s["total"][row, j]), int(s["dirty"][row, j]),
                                                         float(s["end"][row, j]), int(s["expected"][row, j])]
                          for j in range(int(self.count[basis][row]))}
        return out

    def add(self, rows: np.ndarray, t: np.ndarray, value: np.ndarray) -> None:
        """`windows.add` of one reading for each of `rows` (distinct); a NaN value (invalid) counts only in the total."""
        self.touched[rows] = True
        valid = ~np.isnan(value)
        for basis in BASES:
            start, end = _bounds(t, basis)
            at = self._slot(basis, rows, start, end)
            s = self.slots[basis]
            s["sum"][rows[valid], at[valid]] += value[valid]
            s["valid"][rows[valid], at[valid]] += 1
            s["total"][rows, at] += 1
            reached = (s["dirty"][rows, at] & LAST_SLOT) | np.where(t >= windows.last_slot_start(end, self.interval_s[rows]),
                                                                    LAST_SLOT, 0)
            s["dirty"][rows, at] = JUDGE | reached

    def _slot(self, basis: str, rows: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
        """Each row's slot of the bucket starting at `start`, opened (in start order) where it is new."""
        if (self.count[basis][rows] == self.slots[basis]["start"].shape[1]).any():
            self._grow(basis)
        s, count = self.slots[basis], self.count[basis][rows]
        j = np.arange(s["start"].shape[1])[None, :]
        used = j < count[:, None]
        match = used & (s["start"][rows] == start[:, None])
        known = match.any(axis=1)
        position = np.where(known, np.argmax(match, axis=1), (used & (s["start"][rows] < start[:, None])).sum(axis=1))
        new = ~known
        if new.any():
            r, p = rows[new], position[new]
            inside = p < count[new]
            if inside.any():
                shifted = np.maximum(j - (j > p[inside, None]), 0)
                for f in _FIELDS:
                    s[f][r[inside]] = np.take_along_axis(s[f][r[inside]], shifted, axis=1)
            expected = np.maximum(1, ((end[new] - start[new]) // self.interval_s[r]).astype(np.int64))  # readings_in
            for f, v in zip(_FIELDS, (start[new], 0.0, 0, 0, 0, end[new], expected), strict=True):
                s[f][r, p] = v
            self.count[basis][r] += 1
        return position

    def due(self, rows: np.ndarray, watermark: np.ndarray, min_coverage: float) -> Means:
        """`windows.due` for each of `rows` (distinct) at its watermark: the means judged; closed buckets are dropped."""
        found: list[tuple[np.ndarray, ...]] = []
        for b, basis in enumerate(BASES):
            s, count = self.slots[basis], self.count[basis][rows]
            j = np.arange(s["start"].shape[1])[None, :]
            used = j < count[:, None]
            closed = used & (s["end"][rows] <= watermark[:, None])
            dirty = s["dirty"][rows]
            complete = (s["total"][rows] >= s["expected"][rows]) & ((dirty & LAST_SLOT) > 0)
            judged = used & ((dirty & JUDGE) > 0) & (closed | complete)
            s["dirty"][rows] = np.where(judged, dirty & LAST_SLOT, dirty)
            expected, valid = s["expected"][rows], s["valid"][rows]
            emit = judged & (expected > 1) & (valid > 0) & (valid >= np.ceil(min_coverage * expected))
            at, slot = np.nonzero(emit)
            r = rows[at]
            found.append((at, np.full(at.size, b), s["start"][r, slot], s["end"][r, slot], s["sum"][r, slot] / valid[at, slot],
                          valid[at, slot], s["total"][r, slot], expected[at, slot]))
            if closed.any():
                order = np.argsort(closed, axis=1, kind="stable")
                for f in _FIELDS:
                    s[f][rows] = np.take_along_axis(s[f][rows], order, axis=1)
                self.count[basis][rows] = count - closed.sum(axis=1)
        columns = [np.concatenate(c) for c in zip(*found, strict=True)]
        order = np.lexsort((columns[2], columns[1], columns[0]))
        return Means(*(c[order] for c in columns))
