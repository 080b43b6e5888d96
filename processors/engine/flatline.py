"""`Flatline` over many series at once: the same verdicts from array state, in one compiled pass over a batch.

A flatline's run, repeat probability and held values change at nearly every value, one series at a
time; as numpy steps across series it cost about 50 array operations a step. `_run` takes the batch's
values in arrival order and updates each one's row, compiled with numba (`BatchBank`), as the scalar
class would, value by value; the equivalence tests hold it to `Flatline` verdict for verdict.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
import orjson

from processors.detectors.base import fmt
from processors.detectors.flatline import RUN_MEMORY, Flatline
from processors.engine.common import OnePassRows, opt, unopt
from processors.engine.kernels import ew_mean_update
from processors.engine.row_json import cells

__all__ = ["FlatlineBank"]

ALWAYS = 2**31
"""The limit when the series has only ever repeated its value (`Flatline.limit` with p >= 1)."""


_POW10 = 10.0 ** np.arange(23)
"""The powers of ten a float holds exactly."""
_SPELT_BELOW = 64
"""Fewer values than this are spelt one by one: the arithmetic's fixed cost is about that of 64 spellings."""


def _spelt(x: np.ndarray) -> np.ndarray:
    """Each value through the text of its nine significant digits, as `Flatline._key` spells it."""
    return np.array([float(f"{v:.9g}") for v in x.tolist()], dtype=np.float64)


def _keys(x: np.ndarray) -> np.ndarray:
    """`Flatline._key` of each value (nine significant digits), as the bits of the float it spells: one integer per key.

    In arithmetic where that is exact: a value scaled by a power of ten into [1e8, 1e9) and rounded gives the nine
    digits, unless the scaling's one rounding error could have moved it across a half (those are spelt), and the
    digits divided (multiplied) by the exact power are the correctly rounded float of their decimal, as `float` reads
    it. Zeros keep their sign ("-0"); what is not finite, or too large or small for an exact power, is spelt."""
    if x.size < _SPELT_BELOW:
        return _spelt(x).view(np.int64)
    out = np.array(x, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        k = 8 - np.floor(np.log10(np.abs(out)))
        exact = np.isfinite(k) & (np.abs(k) <= 22)
        power = np.where(exact, k, 0).astype(np.int64)
        scale = _POW10[np.abs(power)]
        up = power >= 0
        scaled = np.where(up, out * scale, out / scale)
        digits = np.rint(scaled)
        exact &= (np.abs(scaled) >= 1e8) & (np.abs(scaled) < 1e9) & (np.abs(np.abs(scaled - np.trunc(scaled)) - 0.5) > 1e-6)
        out = np.where(exact, np.where(up, digits / scale, digits * scale), out)
    spelt = np.flatnonzero(~exact & (out != 0))
    if spelt.size:
        out[spelt] = _spelt(x[spelt])
    return out.view(np.int64)


@numba.njit(cache=True, inline="always")
def _base_limit(repeat_n: int, repeat: float, rarity: float, n_intervals: int) -> int:
    """The limit a row's repeat probability sets (`Flatline.limit` without the held values); -1: `ALWAYS`."""
    p = repeat if repeat_n > 0 else 0.0
    if p >= 1.0:
        return -1
    if p > 0.0:
        return max(n_intervals, math.ceil(math.log(rarity) / math.log(p)))
    return n_intervals


@numba.njit(cache=True, inline="always")
def _end_run(r: int, length: int, alpha: np.ndarray, rarity: np.ndarray, n_intervals: np.ndarray,
             anchor_key: np.ndarray, stuck: np.ndarray, repeat_n: np.ndarray, repeat: np.ndarray, base_limit: np.ndarray,
             held_key: np.ndarray, held: np.ndarray, held_count: np.ndarray) -> None:
    """`Flatline._end_run` of row `r`, whose run of `length` repeats ends: its repeats into the repeat
    probability (unless it was stuck), its length kept for its value (the dict's insertion order kept)."""
    if not stuck[r]:
        for _ in range(min(length, 4096)):
            ew_mean_update(repeat_n, repeat, r, alpha[r], 1.0)
        ew_mean_update(repeat_n, repeat, r, alpha[r], 0.0)
        base_limit[r] = _base_limit(repeat_n[r], repeat[r], rarity[r], n_intervals[r])
    key, count = anchor_key[r], held_count[r]
    at = -1
    for j in range(count):
        if held_key[r, j] == key:
            at = j
            break
    if at >= 0:
        held[r, at] = max(held[r, at], length)
    else:
        held_key[r, count], held[r, count] = key, length
        count += 1
        if count > RUN_MEMORY:  # drop the value held least long (the first such), other than this one
            victim, least = -1, 0
            for j in range(count):
                if held_key[r, j] != key and (victim < 0 or held[r, j] < least):
                    victim, least = j, held[r, j]
            for j in range(victim, count - 1):
                held_key[r, j], held[r, j] = held_key[r, j + 1], held[r, j + 1]
            count -= 1
        held_count[r] = count
    stuck[r] = False


@numba.njit(cache=True)
def _run(rows: np.ndarray, x: np.ndarray, keys: np.ndarray, relearn: np.ndarray, tolerance: np.ndarray,
         grace: np.ndarray, n_intervals: np.ndarray, rarity: np.ndarray, alpha: np.ndarray, anchor: np.ndarray,
         anchor_key: np.ndarray, run: np.ndarray, n: np.ndarray, stuck: np.ndarray, repeat_n: np.ndarray,
         repeat: np.ndarray, base_limit: np.ndarray, held_key: np.ndarray, held: np.ndarray, held_count: np.ndarray,
         flag: np.ndarray, score: np.ndarray, limit_out: np.ndarray, run_out: np.ndarray, anchor_out: np.ndarray,
         n_out: np.ndarray) -> None:
    """`Flatline.update` of each value in turn on its row's arrays (`keys`: each value's `_keys`); per value its flag,
    score, limit (0 warming up, -1 not finite), and the row's run, anchor and count after it."""
    for i in range(rows.size):
        r = rows[i]
        if relearn[i]:
            anchor[r], run[r], stuck[r] = np.nan, 0, False
        value = x[i]
        if not math.isfinite(value):
            limit_out[i] = -1
            continue
        n[r] += 1
        if not math.isnan(anchor[r]) and abs(value - anchor[r]) <= tolerance[r]:
            run[r] += 1
        else:
            if not math.isnan(anchor[r]):
                _end_run(r, run[r], alpha, rarity, n_intervals, anchor_key, stuck, repeat_n, repeat, base_limit,
                         held_key, held, held_count)
            anchor[r], run[r], anchor_key[r] = value, 0, keys[i]
        run_out[i], anchor_out[i], n_out[i] = run[r], anchor[r], n[r]
        if n[r] <= grace[r]:
            continue
        limit = base_limit[r]
        if limit < 0:
            limit = ALWAYS
        else:
            for j in range(held_count[r]):
                if held_key[r, j] == anchor_key[r]:
                    limit = max(limit, 2 * held[r, j] + 1)
                    break
        if run[r] >= limit:
            stuck[r] = flag[i] = True
        score[i] = run[r] * n_intervals[r] / limit
        limit_out[i] = limit


@dataclass(frozen=True)
class FlatlineRun:
    """A batch's verdicts from `FlatlineBank.run_batch`, per value, with what their details need."""

    bank: FlatlineBank
    rows: np.ndarray
    x: np.ndarray
    flag: np.ndarray
    score: np.ndarray
    limit: np.ndarray
    """The run length from which the row was stuck (0: warming up; -1: the value was not finite)."""
    run: np.ndarray
    anchor: np.ndarray
    count: np.ndarray
    """The row's run, anchor and count of values after this one."""

    def detail(self, i: int) -> str:
        """`Flatline.update`'s detail of value `i`."""
        return self.bank._detail(int(self.rows[i]), float(self.x[i]), int(self.limit[i]), int(self.count[i]),
                                 float(self.anchor[i]), int(self.run[i]))


class FlatlineBank(OnePassRows):
    """Rows of `Flatline`, one per series, with per-row hyperparameters; `step` gives the scalar class's verdicts.

    The values a row has held longest (`Flatline._held`, keyed by the value's nine-digit text) are
    kept in insertion order as integer keys, so eviction picks the same one as the dict does.
    """

    scalar = Flatline

    def __init__(self, params: Sequence[dict[str, Any]]) -> None:
        super().__init__(params)
        n = len(self.params)
        self.n_intervals = np.array([p.get("n_intervals", 30) for p in self.params], dtype=np.int64)
        self.tolerance = np.array([p.get("tolerance", 0.0) for p in self.params], dtype=np.float64)
        self.grace = np.array([p.get("grace_period", 0) for p in self.params], dtype=np.int64)
        self.rarity = np.array([p.get("rarity", 1e-7) for p in self.params], dtype=np.float64)
        self.alpha = np.array([p.get("alpha", 0.01) for p in self.params], dtype=np.float64)
        self.anchor = np.full(n, np.nan)
        self.anchor_key = np.zeros(n, dtype=np.int64)
        self.run = np.zeros(n, dtype=np.int64)
        self.n = np.zeros(n, dtype=np.int64)
        self.stuck = np.zeros(n, dtype=bool)
        self.repeat_n = np.zeros(n, dtype=np.int64)
        self.repeat = np.zeros(n)
        self.base_limit = self.n_intervals.copy()
        self.held_key = np.zeros((n, RUN_MEMORY + 1), dtype=np.int64)
        self.held = np.zeros((n, RUN_MEMORY + 1), dtype=np.int64)
        self.held_count = np.zeros(n, dtype=np.int64)
        self._held_text: dict[int, str] = {}
        """The nine-digit text of held values by key, kept between `states` calls: held values change slowly."""

    def load(self, row: int, state: dict[str, Any]) -> None:
        """Row `row` from a `Flatline.state()`."""
        self.anchor[row] = opt(state["anchor"])
        if state["anchor"] is not None:
            self.anchor_key[row] = _keys(self.anchor[[row]])[0]
        self.run[row], self.n[row] = int(state["run"]), int(state["n"])
        self.stuck[row] = bool(state.get("stuck", False))
        repeat = state.get("repeat", {"n": 0, "mean": 0.0})
        self.repeat_n[row], self.repeat[row] = int(repeat["n"]), float(repeat["mean"])
        held = {str(k): int(v) for k, v in state.get("held", {}).items()}
        self.held_count[row] = len(held)
        self.held_key[row, : len(held)] = np.array([float(k) for k in held], dtype=np.float64).view(np.int64)
        self.held[row, : len(held)] = list(held.values())
        self.base_limit[row] = _base_limit(self.repeat_n[row], self.repeat[row], self.rarity[row], self.n_intervals[row])

    def state(self, row: int) -> dict[str, Any]:
        """Row `row` as `Flatline.state()`."""
        count = int(self.held_count[row])
        return {"anchor": unopt(self.anchor[row]), "run": int(self.run[row]), "n": int(self.n[row]),
                "stuck": bool(self.stuck[row]), "repeat": {"n": int(self.repeat_n[row]), "mean": float(self.repeat[row])},
                "held": {f"{k:.9g}": v for k, v in zip(self.held_key[row, :count].view(np.float64).tolist(),
                                                       self.held[row, :count].tolist(), strict=True)}}

    def _held(self, rows: np.ndarray) -> list[dict[str, int]]:
        """Each of `rows`' held values as `Flatline.state()` gives them; a value's text is made once (`_held_text`)."""
        keys, counts = self.held_key[rows], self.held_count[rows]
        text = self._held_text
        if len(text) > 4 * keys.size:
            text.clear()
        used = np.unique(keys[np.arange(keys.shape[1])[None, :] < counts[:, None]])
        text.update((k, f"{v:.9g}") for k, v in zip(used.tolist(), used.view(np.float64).tolist(), strict=True)
                    if k not in text)
        return [{text[k]: v for k, v in zip(key[:count], held[:count], strict=True)}
                for key, held, count in zip(keys.tolist(), self.held[rows].tolist(), counts.tolist(), strict=True)]

    def states(self, rows: np.ndarray) -> list[dict[str, Any]]:
        """`state` of each of `rows`, gathered column by column."""
        return [{"anchor": None if anchor != anchor else anchor, "run": run, "n": n, "stuck": stuck,
                 "repeat": {"n": repeat_n, "mean": repeat}, "held": held}
                for anchor, run, n, stuck, repeat_n, repeat, held in zip(
                    self.anchor[rows].tolist(), self.run[rows].tolist(), self.n[rows].tolist(), self.stuck[rows].tolist(),
                    self.repeat_n[rows].tolist(), self.repeat[rows].tolist(), self._held(rows), strict=True)]

    def states_json(self, rows: np.ndarray) -> list[bytes]:
        """`states` as JSON text, column by column (`processors.engine.row_json`)."""
        return [b'{"anchor":%b,"run":%b,"n":%b,"stuck":%b,"repeat":{"n":%b,"mean":%b},"held":%b}' % parts
                for parts in zip(cells(self.anchor[rows]), cells(self.run[rows]), cells(self.n[rows]),
                                 cells(self.stuck[rows]), cells(self.repeat_n[rows]), cells(self.repeat[rows]),
                                 map(orjson.dumps, self._held(rows)), strict=True)]

    def relearn(self, rows: np.ndarray, gap_s: np.ndarray | None = None) -> None:
        """`Flatline.relearn` on `rows`: a new run at the next value; the repeat probability and held values are kept."""
        self.anchor[rows] = np.nan
        self.run[rows] = 0
        self.stuck[rows] = False

    def run_batch(self, rows: np.ndarray, x: np.ndarray, t: np.ndarray | None = None,
                  relearn_gap_s: np.ndarray | None = None) -> FlatlineRun:
        """`Flatline.update` of each value in turn (`rows[i]` takes `x[i]`; a row may come many times), after
        `Flatline.relearn` where `relearn_gap_s` is not NaN: one compiled pass over the batch (`_run`)."""
        n = rows.size
        out = FlatlineRun(self, rows, x, np.zeros(n, dtype=bool), np.zeros(n), np.zeros(n, dtype=np.int64),
                          np.zeros(n, dtype=np.int64), np.zeros(n), np.zeros(n, dtype=np.int64))
        fresh = np.zeros(n, dtype=bool) if relearn_gap_s is None else ~np.isnan(relearn_gap_s)
        finite = np.isfinite(x)
        keys = np.zeros(n, dtype=np.int64)
        keys[finite] = _keys(x[finite])
        _run(rows.astype(np.int64, copy=False), x.astype(np.float64, copy=False), keys, fresh, self.tolerance, self.grace,
             self.n_intervals, self.rarity, self.alpha, self.anchor, self.anchor_key, self.run, self.n, self.stuck,
             self.repeat_n, self.repeat, self.base_limit, self.held_key, self.held, self.held_count,
             out.flag, out.score, out.limit, out.run, out.anchor, out.count)
        return out


    def _detail(self, row: int, x: float, limit: int, n: int, anchor: float, run: int) -> str:
        """`Flatline.update`'s detail for row `row` after value `x`: `limit` is its limit (0 when not judged), `n`,
        `anchor` and `run` the row's count, anchor and run after it."""
        if not math.isfinite(x):
            return f"ignored non-finite value {x!r}"
        if not limit:
            return f"warming up ({n}/{int(self.grace[row])} samples)"
        minimum = int(self.n_intervals[row])
        return (f"value {fmt(x)} within {fmt(float(self.tolerance[row]))} of {fmt(anchor)} "
                f"for {run} consecutive intervals (stuck from {limit}: "
                f"{'the minimum' if limit == minimum else 'longer than this series normally holds a value'})")
