"""`Flatline` over many series at once: the same verdicts from array state."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson

from processors.detectors.base import fmt
from processors.detectors.flatline import RUN_MEMORY, Flatline
from processors.engine.common import Rows, explained, opt, unopt
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


class FlatlineBank(Rows):
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
        self._limits(np.array([row]))

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

    def _limits(self, rows: np.ndarray) -> None:
        """The limit each row's repeat probability sets (`Flatline.limit` without the held values).

        numpy's log may differ from `math.log` in the last bit, which moves the ceiling only when the
        ratio is next to an integer: those rows are recomputed with `math.log`.
        """
        n = self.repeat_n[rows]
        p = np.where(n > 0, self.repeat[rows], 0.0)
        some = (p > 0.0) & (p < 1.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(some, np.log(self.rarity[rows]) / np.log(np.where(some, p, 0.5)), 0.0)
        near = some & (np.abs(ratio - np.rint(ratio)) <= 1e-9 * np.maximum(1.0, np.abs(ratio)))
        for i in np.flatnonzero(near).tolist():
            ratio[i] = math.log(float(self.rarity[rows[i]])) / math.log(float(p[i]))
        limit = np.where(some, np.maximum(self.n_intervals[rows], np.ceil(ratio).astype(np.int64)), self.n_intervals[rows])
        self.base_limit[rows] = np.where(p >= 1.0, -1, limit)

    def _learn_repeats(self, rows: np.ndarray) -> None:
        """`Flatline._end_run`'s repeat probability: each repeat of the run, then the change, into an EW mean."""
        count = np.minimum(self.run[rows], 4096)
        for j in range(int(count.max()) if rows.size else 0):
            self._repeat(rows[j < count], 1.0)
        self._repeat(rows, 0.0)
        self._limits(rows)

    def _repeat(self, rows: np.ndarray, x: float) -> None:
        self.repeat_n[rows] += 1
        self.repeat[rows] += np.maximum(self.alpha[rows], 1.0 / self.repeat_n[rows]) * (x - self.repeat[rows])

    def _end_run(self, rows: np.ndarray) -> None:
        """`Flatline._end_run` on `rows`, whose anchor is set."""
        self._learn_repeats(rows[~self.stuck[rows]])
        key, run = self.anchor_key[rows], self.run[rows]
        width = self.held.shape[1]
        used = np.arange(width)[None, :] < self.held_count[rows, None]
        match = used & (self.held_key[rows] == key[:, None])
        known = match.any(axis=1)
        at = np.argmax(match, axis=1)
        r = rows[known]
        self.held[r, at[known]] = np.maximum(self.held[r, at[known]], run[known])
        r, slot = rows[~known], self.held_count[rows[~known]]
        self.held_key[r, slot], self.held[r, slot] = key[~known], run[~known]
        self.held_count[r] += 1
        over = self.held_count[rows] > RUN_MEMORY
        if over.any():
            self._evict(rows[over], key[over])
        self.stuck[rows] = False

    def _evict(self, rows: np.ndarray, key: np.ndarray) -> None:
        """Drop each row's value held least long (the first such in insertion order), other than `key`."""
        held = np.where(self.held_key[rows] == key[:, None], np.iinfo(np.int64).max, self.held[rows])
        victim = np.argmin(held, axis=1)
        j = np.arange(held.shape[1])[None, :]
        order = np.minimum(j + (j >= victim[:, None]), held.shape[1] - 1)
        self.held_key[rows] = np.take_along_axis(self.held_key[rows], order, axis=1)
        self.held[rows] = np.take_along_axis(self.held[rows], order, axis=1)
        self.held_count[rows] -= 1

    def _limit(self, rows: np.ndarray) -> np.ndarray:
        """`Flatline.limit` per row."""
        width = self.held.shape[1]
        used = np.arange(width)[None, :] < self.held_count[rows, None]
        match = used & (self.held_key[rows] == self.anchor_key[rows, None])
        held = np.where(match.any(axis=1), 2 * self.held[rows, np.argmax(match, axis=1)] + 1, 0)
        base = self.base_limit[rows]
        return np.where(base < 0, ALWAYS, np.maximum(base, held))

    def step(self, rows: np.ndarray, x: np.ndarray, t: np.ndarray | None = None,
             explain: np.ndarray | None = None, flagged: bool = False
             ) -> tuple[np.ndarray, np.ndarray, list[str | None] | None]:
        """One value for each of `rows` (distinct): flags, scores and, where `explain` is True, details, as
        `Flatline.update` gives them."""
        flag = np.zeros(rows.size, dtype=bool)
        score = np.zeros(rows.size)
        finite = np.flatnonzero(np.isfinite(x))
        r, xv = rows[finite], x[finite]
        self.n[r] += 1
        anchor = self.anchor[r]
        anchored = ~np.isnan(anchor)
        same = anchored & (np.abs(xv - anchor) <= self.tolerance[r])
        self.run[r[same]] += 1
        self._end_run(r[anchored & ~same])
        fresh = r[~same]
        self.anchor[fresh], self.run[fresh], self.anchor_key[fresh] = xv[~same], 0, _keys(xv[~same])
        judged = self.n[r] > self.grace[r]
        r = r[judged]
        limit = self._limit(r)
        run = self.run[r]
        stuck = run >= limit
        self.stuck[r] |= stuck
        flag[finite[judged]] = stuck
        score[finite[judged]] = run.astype(np.float64) * self.n_intervals[r] / limit
        explain = explained(explain, flag, flagged)
        if explain is None:
            return flag, score, None
        limits = np.zeros(rows.size, dtype=np.int64)
        limits[finite[judged]] = limit
        details: list[str | None] = [None] * rows.size
        for i in np.flatnonzero(explain).tolist():
            details[i] = self._detail(int(rows[i]), float(x[i]), int(limits[i]))
        return flag, score, details

    def _detail(self, row: int, x: float, limit: int) -> str:
        """`Flatline.update`'s detail for row `row` after value `x` (`limit`: its limit, 0 when not judged)."""
        if not math.isfinite(x):
            return f"ignored non-finite value {x!r}"
        if not limit:
            return f"warming up ({int(self.n[row])}/{int(self.grace[row])} samples)"
        minimum = int(self.n_intervals[row])
        return (f"value {fmt(x)} within {fmt(float(self.tolerance[row]))} of {fmt(float(self.anchor[row]))} "
                f"for {int(self.run[row])} consecutive intervals (stuck from {limit}: "
                f"{'the minimum' if limit == minimum else 'longer than this series normally holds a value'})")
