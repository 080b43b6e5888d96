"""Shared pieces of the columnar engine: a batch cut into steps across series, optional numbers as arrays, rings and medians.

Each detector's recursion is sequential within a series, but independent across series. A step
takes the k-th reading of every series that has one in the batch, so every numpy operation of a
step runs over many series at once, and each series still sees its readings in arrival order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Protocol, Self

import numpy as np
import orjson

from processors.detectors.base import Detector
from processors.engine.row_json import cells, ragged

__all__ = ["BatchVerdicts", "OnePassRows", "Ring", "Rows", "StepArrays", "explained", "opt", "row_medians", "steps",
           "take_rows", "unopt"]


def opt(x: float | None) -> float:
    """An optional number as a float, None as NaN (the engine's arrays hold no None)."""
    return np.nan if x is None else float(x)


def unopt(x: Any) -> float | None:
    """A float of an array back as an optional number: NaN is None."""
    value = float(x)
    return None if np.isnan(value) else value


def explained(explain: np.ndarray | None, flag: np.ndarray, flagged: bool) -> np.ndarray | None:
    """The values of a step to give a detail for: those `explain` marks, and with `flagged` those flagged too."""
    if not flagged:
        return explain
    return flag if explain is None else explain | flag


def steps(series: np.ndarray) -> list[np.ndarray]:
    """Indices of a batch's readings in steps: step k holds the k-th reading (arrival order) of every series that has one.

    Examples
    --------
    >>> [s.tolist() for s in steps(np.array([3, 1, 3, 3, 1]))]
    [[1, 0], [4, 2], [3]]
    """
    n = series.size
    if n == 0:
        return []
    order = np.argsort(series, kind="stable")
    ordered = series[order]
    first = np.ones(n, dtype=bool)
    first[1:] = ordered[1:] != ordered[:-1]
    rank = np.arange(n) - np.maximum.accumulate(np.where(first, np.arange(n), 0))
    by_rank = np.argsort(rank, kind="stable")
    bounds = np.searchsorted(rank[by_rank], np.arange(int(rank.max()) + 2))
    return [order[by_rank[bounds[k]:bounds[k + 1]]] for k in range(int(rank.max()) + 1)]


def row_medians(values: np.ndarray, size: np.ndarray) -> np.ndarray:
    """Per row, the median of its first ``size`` values once sorted, where every unused slot holds +inf.

    Equal to `processors.detectors.base.median` of those values (the two middle values summed and halved).
    """
    ordered = np.sort(values, axis=1)
    half = size // 2
    rows = np.arange(values.shape[0])
    hi = ordered[rows, half]
    lo = ordered[rows, np.maximum(half - 1, 0)]
    return np.where(size % 2 == 1, hi, (lo + hi) / 2.0)


class Ring:
    """Rows of `processors.detectors.base.RingBuffer`: per row a capacity, a start and a size over a shared width."""

    def __init__(self, capacity: np.ndarray) -> None:
        self.capacity = capacity.astype(np.int64)
        width = int(self.capacity.max()) if self.capacity.size else 1
        self.data = np.zeros((self.capacity.size, max(width, 1)))
        self.start = np.zeros(self.capacity.size, dtype=np.int64)
        self.size = np.zeros(self.capacity.size, dtype=np.int64)

    def to_list(self, row: int) -> list[float]:
        """Row `row`'s values, oldest first."""
        idx = (self.start[row] + np.arange(self.size[row])) % self.capacity[row]
        return self.data[row, idx].tolist()

    def _ordered(self, rows: np.ndarray) -> np.ndarray:
        """Each of `rows`' slots, oldest first (its first `size` hold its values)."""
        idx = (self.start[rows, None] + np.arange(self.data.shape[1])[None, :]) % np.maximum(self.capacity[rows, None], 1)
        return self.data[rows[:, None], idx]

    def to_lists(self, rows: np.ndarray) -> list[list[float]]:
        """`to_list` of each of `rows`, from one gather."""
        return [values[:size] for values, size in zip(self._ordered(rows).tolist(), self.size[rows].tolist(), strict=True)]

    def json(self, rows: np.ndarray) -> list[bytes]:
        """`to_list` of each of `rows` as JSON text (`processors.engine.row_json`)."""
        return ragged(self._ordered(rows), self.size[rows])

    def load(self, row: int, values: list[float]) -> None:
        """Row `row` holds the last ``capacity`` of ``values`` (oldest first), as `RingBuffer.from_list`."""
        kept = [float(v) for v in values][-int(self.capacity[row]):]
        self.data[row, : len(kept)] = kept
        self.start[row] = 0
        self.size[row] = len(kept)


class StepArrays:
    """Rows of `processors.detectors.base.StepEstimate`: the smallest non-zero change seen and the last value (NaN: none)."""

    def __init__(self, n: int) -> None:
        self.step = np.full(n, np.nan)
        self.prev = np.full(n, np.nan)

    def state(self, row: int) -> dict[str, Any]:
        """Row `row` as `StepEstimate.state()`."""
        return {"step": unopt(self.step[row]), "prev": unopt(self.prev[row])}

    def states(self, rows: np.ndarray) -> list[dict[str, Any]]:
        """`state` of each of `rows`."""
        return [{"step": None if step != step else step, "prev": None if prev != prev else prev}
                for step, prev in zip(self.step[rows].tolist(), self.prev[rows].tolist(), strict=True)]

    def json(self, rows: np.ndarray) -> list[bytes]:
        """`state` of each of `rows` as JSON text (`processors.engine.row_json`)."""
        return [b'{"step":%b,"prev":%b}' % pair for pair in zip(cells(self.step[rows]), cells(self.prev[rows]), strict=True)]

    def load(self, row: int, state: dict[str, Any] | None) -> None:
        """Row `row` from a `StepEstimate.state()` (None: nothing learned)."""
        state = state or {}
        self.step[row] = opt(state.get("step"))
        self.prev[row] = opt(state.get("prev"))


def take_rows(new: object, old: object, old_n: int, new_n: int) -> None:
    """Copy `old`'s per-row state into the first `old_n` rows of `new`, which has `new_n` rows, the same layout and the
    same hyperparameters for those rows: every array whose first axis is the rows (its length `old_n` in `old`,
    `new_n` in `new`), also inside the bank's parts (rings, steps, levels, tails), each into the first columns of its
    counterpart; the parts' caches (dicts) are shared. A bank grows this way instead of through every row's `state()`
    and `load`, which cost as much again for each row already there (the worker adds stations' rows batch by batch
    as their partitions first come)."""
    for name, value in vars(old).items():
        into = getattr(new, name, None)
        if isinstance(value, np.ndarray):
            if (value.ndim and isinstance(into, np.ndarray) and into.ndim == value.ndim and value.shape[0] == old_n
                    and into.shape[0] == new_n):
                into[(slice(0, old_n), *(slice(0, size) for size in value.shape[1:]))] = value
        elif isinstance(value, dict) and name.startswith("_") and isinstance(into, dict):
            into.update(value)
        elif type(value).__module__.startswith("processors.engine") and type(into) is type(value):
            take_rows(into, value, old_n, new_n)


class Rows:
    """Base of the banks: one row per series, each with its detector's hyperparameters, convertible both ways.

    A bank is built from scalar detectors (`from_detectors`: their hyperparameters and learned
    state) and reads a row back as one (`detector`), so the worker can move between the scalar
    classes and the engine without losing what was learned.
    """

    scalar: ClassVar[type[Detector]]

    def __init__(self, params: Sequence[dict[str, Any]]) -> None:
        self.params = [dict(p) for p in params]

    def __len__(self) -> int:
        return len(self.params)

    def column(self, name: str, default: Any, dtype: Any = np.float64) -> np.ndarray:
        """Hyperparameter `name` of every row (`default` where a row does not give it)."""
        return np.array([p.get(name, default) for p in self.params], dtype=dtype)

    def optional(self, name: str, default: float | None = None) -> np.ndarray:
        """An optional hyperparameter of every row, None as NaN."""
        return np.array([opt(p.get(name, default)) for p in self.params])

    @staticmethod
    def params_of(detector: Detector) -> dict[str, Any]:
        """The hyperparameters a row is built with."""
        return detector._get_params()

    @classmethod
    def from_detectors(cls, detectors: Sequence[Detector]) -> Self:
        """A bank whose row i is detector i: its hyperparameters and learned state."""
        bank = cls([cls.params_of(d) for d in detectors])
        for i, det in enumerate(detectors):
            bank.load(i, det.state())
        return bank

    def grown(self, params: Sequence[dict[str, Any]]) -> Self:
        """This bank with rows added: `params` begins with this bank's rows' (in order), whose learned state the new bank
        keeps (`take_rows`); the rows after them are fresh."""
        bank = type(self)(params)
        take_rows(bank, self, len(self), len(bank))
        return bank

    def load(self, row: int, state: dict[str, Any]) -> None:
        """Row `row` from the scalar detector's `state()`."""
        raise NotImplementedError

    def state(self, row: int) -> dict[str, Any]:
        """Row `row` as the scalar detector's `state()`."""
        raise NotImplementedError

    def states(self, rows: np.ndarray) -> list[dict[str, Any]]:
        """`state` of each of `rows` (a bank may gather them column by column)."""
        return [self.state(row) for row in rows.tolist()]

    def states_json(self, rows: np.ndarray) -> list[bytes]:
        """`orjson.dumps` of each of `rows`' `state` (a bank may write them column by column, `processors.engine.row_json`)."""
        return [orjson.dumps(state) for state in self.states(rows)]

    def detector(self, row: int) -> Detector:
        """Row `row` as a scalar detector."""
        return self.scalar.from_state(self.state(row), **self.params[row])


class BatchVerdicts(Protocol):
    """A whole batch's verdicts from a compiled pass (`OnePassRows.run_batch`): per value its flag and score, and its
    detail on request."""

    @property
    def flag(self) -> np.ndarray:
        """Per value: whether it is anomalous."""
        ...

    @property
    def score(self) -> np.ndarray:
        """Per value: its score."""
        ...

    def detail(self, i: int) -> str:
        """The detail of value `i`."""
        ...


class OnePassRows(Rows):
    """A bank that judges a whole batch in one compiled pass (`run_batch`); a step is that pass over one value a row."""

    def run_batch(self, rows: np.ndarray, x: np.ndarray, t: np.ndarray | None = None,
                  relearn_gap_s: np.ndarray | None = None) -> BatchVerdicts:
        """The verdicts of `x[i]` on row `rows[i]` at `t[i]` in turn, after a relearn where `relearn_gap_s` is not NaN."""
        raise NotImplementedError

    def step(self, rows: np.ndarray, x: np.ndarray, t: np.ndarray | None = None, explain: np.ndarray | None = None,
             flagged: bool = False) -> tuple[np.ndarray, np.ndarray, list[str | None] | None]:
        """One value for each of `rows` (distinct): flags, scores and, where `explain` is True (and, with `flagged`, where
        flagged), details, as the scalar class gives them."""
        out = self.run_batch(rows, x, t)
        explain = explained(explain, out.flag, flagged)
        if explain is None:
            return out.flag, out.score, None
        details: list[str | None] = [None] * rows.size
        for i in np.flatnonzero(explain).tolist():
            details[i] = out.detail(i)
        return out.flag, out.score, details
