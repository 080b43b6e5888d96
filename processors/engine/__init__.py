"""A columnar detection engine: the streaming detectors over many series at once, from numpy columns and array state.

A bank either takes a batch in steps (the k-th value of every series at once, numpy across series)
or, compiled with numba, in one pass in arrival order (`BatchBank`). The scalar River-style classes
of `processors.detectors` are the reference: a bank of this
package gives, reading for reading, the verdicts (flag, score and, on request, the detail text)
that the scalar class gives, and converts its rows to and from those classes' states
(`from_detectors`, `detector`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from processors.engine.common import BatchVerdicts, steps

__all__ = ["Bank", "BatchBank", "BatchVerdicts", "Verdicts", "advance", "flagged_since"]

MEASURING = 0
"""The status code (Status.MEASURING, "00") of a reading the detectors judge; 01 and 02 runs are not judged."""


class Bank(Protocol):
    """What `advance` needs of a bank: one value per distinct row at a time (or a whole batch: `BatchBank`)."""

    def step(self, rows: np.ndarray, x: np.ndarray, t: np.ndarray, explain: np.ndarray | None = None,
             flagged: bool = False) -> tuple[np.ndarray, np.ndarray, list[str | None] | None]:
        """Flags and scores of one value for each of `rows`, and the details of those `explain` marks (and, with
        `flagged`, of those it flags)."""
        ...

    def relearn(self, rows: np.ndarray, gap_s: np.ndarray | None = None) -> None:
        """`Detector.relearn(gap_s)` on each of `rows`."""
        ...


@runtime_checkable
class BatchBank(Protocol):
    """A bank that takes a whole batch in one call, each row's values in their order (a compiled pass)."""

    def run_batch(self, rows: np.ndarray, x: np.ndarray, t: np.ndarray,
                  relearn_gap_s: np.ndarray | None = None) -> BatchVerdicts:
        """The verdicts of `x[i]` on row `rows[i]` at `t[i]` in turn; where `relearn_gap_s` is not NaN, the row relearns
        after that gap just before (`Detector.relearn(gap)`)."""
        ...


@dataclass(frozen=True)
class Verdicts:
    """Per reading of a batch: whether a detector judged it, and its verdict's flag, score and detail (if asked)."""

    judged: np.ndarray
    flag: np.ndarray
    score: np.ndarray
    detail: list[str | None]
    """The verdict's detail text where `advance` was asked to explain, else None."""


def advance(bank: Bank, series: np.ndarray, t: np.ndarray, value: np.ndarray, status: np.ndarray | None = None,
            relearn_gap_s: np.ndarray | None = None, explain: np.ndarray | None = None, flagged: bool = False) -> Verdicts:
    """Advance `bank` over a batch of columns, each series' readings in arrival order.

    `series` holds the bank's row of each reading, `t` its event time (epoch seconds), `value` its
    value (NaN: none) and `status` its status code (none: all measuring). A reading whose status is
    not measuring is not judged (flag False, score 0), as the worker never hands it to a detector; a
    NaN value is judged and skipped, as the scalar detector skips it. Where `relearn_gap_s` is not
    NaN, the series relearns (`Detector.relearn(gap)`) just before that reading, as the worker does
    on the first reading after a long gap. Where `explain` is True, the verdict's detail is formatted
    (the worker needs it only for the conditions it builds). With `flagged`, the details of every flagged
    reading are formatted too, and of every later reading of a series once it flagged.
    """
    judged = np.ones(series.size, dtype=bool) if status is None else status == MEASURING
    flag = np.zeros(series.size, dtype=bool)
    score = np.zeros(series.size)
    detail: list[str | None] = [None] * series.size
    picked = np.flatnonzero(judged)
    if isinstance(bank, BatchBank):
        _whole_batch(bank, series[picked], t[picked], value[picked], picked, relearn_gap_s, explain, flagged, flag, score,
                     detail)
        return Verdicts(judged, flag, score, detail)
    hot = np.zeros(int(series.max()) + 1 if series.size else 0, dtype=bool)
    for idx in steps(series[picked]):
        at = picked[idx]
        if relearn_gap_s is not None:
            gap = relearn_gap_s[at]
            after = ~np.isnan(gap)
            if after.any():
                bank.relearn(series[at][after], gap[after])
        rows = series[at]
        asked = None if explain is None else explain[at]
        if flagged:
            asked = hot[rows] if asked is None else asked | hot[rows]
            flag[at], score[at], said = bank.step(rows, value[at], t[at], asked, flagged=True)
            hot[rows[flag[at]]] = True
        else:
            flag[at], score[at], said = bank.step(rows, value[at], t[at], asked)
        if said is not None:
            for i, text in enumerate(said):
                if text is not None:
                    detail[int(at[i])] = text
    return Verdicts(judged, flag, score, detail)


def _whole_batch(bank: BatchBank, rows: np.ndarray, t: np.ndarray, value: np.ndarray, picked: np.ndarray,
                 relearn_gap_s: np.ndarray | None, explain: np.ndarray | None, flagged: bool, flag: np.ndarray,
                 score: np.ndarray, detail: list[str | None]) -> None:
    """`advance` of a `BatchBank`: the judged readings (`picked`) in one call, their details as the steps give them."""
    out = bank.run_batch(rows, value, t, None if relearn_gap_s is None else relearn_gap_s[picked])
    flag[picked], score[picked] = out.flag, out.score
    asked = np.zeros(rows.size, dtype=bool) if explain is None else explain[picked]
    if flagged and out.flag.any():
        asked = asked | flagged_since(rows, out.flag)
    for k in np.flatnonzero(asked).tolist():
        detail[int(picked[k])] = out.detail(k)


def flagged_since(rows: np.ndarray, flag: np.ndarray) -> np.ndarray:
    """Per value: whether it or an earlier value of its row (in this batch) was flagged.

    Examples
    --------
    >>> flagged_since(np.array([1, 2, 1, 2, 1]), np.array([False, True, True, False, False])).tolist()
    [False, True, True, True, True]
    """
    order = np.argsort(rows, kind="stable")
    counted = np.cumsum(flag[order])
    first = np.ones(rows.size, dtype=bool)
    first[1:] = rows[order][1:] != rows[order][:-1]
    start = np.maximum.accumulate(np.where(first, np.arange(rows.size), 0))
    before = counted[start] - flag[order][start]
    since = np.zeros(rows.size, dtype=bool)
    since[order] = counted - before > 0
    return since
