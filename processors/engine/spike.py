"""`RobustSpike` over many series at once: the same verdicts from array state."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from processors.detectors.base import fmt
from processors.detectors.levels import MAD_TO_SIGMA
from processors.detectors.spike import RobustSpike
from processors.engine.common import Ring, Rows, StepArrays, explained, row_medians, unopt
from processors.engine.levels_tail import LevelRows, TailRows
from processors.engine.row_json import cells

__all__ = ["SpikeBank"]

_NONE = -1
"""An integer hyperparameter that is None (`relearn_after`, `center_window`)."""


def _int_or_none(x: int | None) -> int:
    return _NONE if x is None else int(x)


class SpikeBank(Rows):
    """Rows of `RobustSpike`, one per series, with per-row hyperparameters; `step` gives the scalar class's verdicts.

    Build it from detectors (`from_detectors`), advance it with `step` (each row at most once per
    call), and read a row back as a detector (`detector`), so the worker can move between the
    scalar classes and the engine without losing what was learned.
    """

    scalar = RobustSpike

    def __init__(self, params: Sequence[dict[str, Any]]) -> None:
        super().__init__(params)
        get = self.column
        self.window = get("window", 60, np.int64)
        self.threshold = get("threshold", 6.0)
        self.grace = get("grace_period", 30, np.int64)
        self.eps = get("eps", 1e-9)
        self.relearn_after = np.array([_int_or_none(p.get("relearn_after")) for p in self.params], dtype=np.int64)
        self.resolution = self.optional("resolution")
        self.center_window = np.array([_int_or_none(p.get("center_window")) for p in self.params], dtype=np.int64)
        self.threshold_off = self.optional("threshold_off")
        self.tail_p = get("tail_p", 0.001)
        self.tail_ref = self.optional("tail_ref", 6.5)
        self.tail_fit = self.optional("tail_fit")
        self.tail_power = get("tail_power", 2.0)
        self.tail_blend = get("tail_blend", False, bool)
        self.reseed_after = np.array([_int_or_none(p.get("reseed_after")) for p in self.params], dtype=np.int64)
        n = len(self.params)
        self.ring = Ring(self.window)
        self.stepper = StepArrays(n)
        self.levels = LevelRows(get("levels", 4, np.int64))
        self.tail = TailRows(n)
        self.n = np.zeros(n, dtype=np.int64)
        self.run = np.zeros(n, dtype=np.int64)
        self.over = np.zeros(n, dtype=bool)
        self.scale = np.full(n, np.nan)
        """`RobustSpike._scale`: the pending reseed's scale, NaN for none."""
        self.seeded = np.zeros(n, dtype=bool)
        """`RobustSpike._seeded`."""

    def load(self, row: int, state: dict[str, Any]) -> None:
        """Row `row` from a `RobustSpike.state()`."""
        self.ring.load(row, state["buffer"])
        self.n[row] = int(state["n"])
        self.run[row] = int(state["run"])
        self.over[row] = bool(state.get("over", False))
        self.stepper.load(row, state.get("step"))
        self.levels.load(row, state.get("levels"))
        self.tail.load(row, state.get("tail"))
        scale = state.get("scale")
        self.scale[row] = np.nan if scale is None else float(scale)
        self.seeded[row] = bool(state.get("seeded", False))

    def state(self, row: int) -> dict[str, Any]:
        """Row `row` as `RobustSpike.state()`."""
        return {"buffer": self.ring.to_list(row), "n": int(self.n[row]), "run": int(self.run[row]),
                "over": bool(self.over[row]), "step": self.stepper.state(row), "levels": self.levels.state(row),
                "tail": self.tail.state(row), "scale": unopt(self.scale[row]), "seeded": bool(self.seeded[row])}

    def states(self, rows: np.ndarray) -> list[dict[str, Any]]:
        """`state` of each of `rows`, gathered column by column."""
        return [{"buffer": buffer, "n": n, "run": run, "over": over, "step": step, "levels": levels, "tail": tail,
                 "scale": unopt(scale), "seeded": seeded}
                for buffer, n, run, over, step, levels, tail, scale, seeded in zip(
                    self.ring.to_lists(rows), self.n[rows].tolist(), self.run[rows].tolist(), self.over[rows].tolist(),
                    self.stepper.states(rows), self.levels.states(rows), self.tail.states(rows), self.scale[rows].tolist(),
                    self.seeded[rows].tolist(), strict=True)]

    def states_json(self, rows: np.ndarray) -> list[bytes]:
        """`states` as JSON text, column by column (`processors.engine.row_json`)."""
        return [b'{"buffer":%b,"n":%b,"run":%b,"over":%b,"step":%b,"levels":%b,"tail":%b,"scale":%b,"seeded":%b}' % parts
                for parts in zip(self.ring.json(rows), cells(self.n[rows]), cells(self.run[rows]), cells(self.over[rows]),
                                 self.stepper.json(rows), self.levels.json(rows), self.tail.json(rows),
                                 cells(self.scale[rows]), cells(self.seeded[rows]), strict=True)]

    def relearn(self, rows: np.ndarray, gap_s: np.ndarray | None = None) -> None:
        """`RobustSpike.relearn` on `rows`: warm up again, keeping the step, the known levels and the tail; a row with
        `reseed_after` and a full or seeded window keeps that window's MAD for its reseed."""
        known = rows[(self.reseed_after[rows] != _NONE) & ((self.ring.size[rows] == self.window[rows]) | self.seeded[rows])]
        if known.size:
            self.scale[known] = self._center(known)[1]
        self._reset(rows)

    def _reseed(self, rows: np.ndarray) -> None:
        """`RobustSpike._reseed` on `rows`: the window seeded around the values learned since the gap."""
        center, mad, _ = self._center(rows)
        scale = np.maximum(mad, self.scale[rows])
        self._reset(rows)
        self._seed(rows, center, scale)
        self.scale[rows] = np.nan

    def _reset(self, rows: np.ndarray) -> None:
        self.ring.clear(rows)
        self.n[rows] = 0
        self.run[rows] = 0
        self.over[rows] = False
        self.seeded[rows] = False

    def _learn(self, rows: np.ndarray, x: np.ndarray) -> None:
        self.ring.append(rows, x)
        self.stepper.update(rows, x)
        self.n[rows] += 1

    def _leave(self, rows: np.ndarray, center: np.ndarray, mad: np.ndarray, floor: np.ndarray) -> None:
        """Remember the level each row leaves, if it held it for a whole window (`center`, `mad`: its full window)."""
        whole = self.ring.size[rows] == self.window[rows]
        self.levels.remember(rows[whole], center[whole], mad[whole], self.threshold[rows[whole]], floor[whole])

    def _seed(self, rows: np.ndarray, center: np.ndarray, mad: np.ndarray) -> None:
        """Fill the emptied rows with values whose median and MAD are the level's (`RobustSpike._switch`)."""
        seeded = np.minimum(self.window[rows], 3 * np.maximum(1, -(-self.grace[rows] // 3)))
        width = int(seeded.max()) if rows.size else 0
        k = np.arange(width)
        values = center[:, None] + (k % 3 - 1).astype(np.float64)[None, :] * mad[:, None]
        for j in range(width):
            more = j < seeded
            self.ring.append(rows[more], values[more, j])
        self.n[rows] = seeded
        self.seeded[rows] = True

    def _bar(self, rows: np.ndarray) -> np.ndarray:
        """`RobustSpike._bar` per row."""
        threshold = self.threshold[rows]
        ref = self.tail_ref[rows]
        fit = self.tail_fit[rows]
        p = self.tail_p[rows]
        k, share = self.tail.locate(rows, p)
        q = self.tail.quantile_at(k)
        if not np.isnan(fit).all():
            fitted = np.nan_to_num(fit, nan=0.5)
            extrapolated = self.tail.extrapolated(rows, p, fitted, q)
            q = np.where(np.isnan(fit), q, extrapolated)
            blend = self.tail_blend[rows]
            if blend.any():
                q[blend] = self.tail.blend(self.tail.interpolated_at(k[blend], share[blend]), extrapolated[blend])
        with np.errstate(invalid="ignore"):
            adaptive = np.where(np.isnan(ref), threshold, threshold * np.maximum(1.0, q / ref) ** self.tail_power[rows])
        off = self.threshold_off[rows]
        return np.where((self.run[rows] > 0) & ~np.isnan(off), off, adaptive)

    def _center(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per row: the median and MAD of the whole window, and the median it compares with (of the last `center_window`)."""
        values = self.ring.values(rows)
        size = self.ring.size[rows]
        center = row_medians(values, size)
        mad = row_medians(np.where(np.isfinite(values), np.abs(values - center[:, None]), np.inf), size)
        cw = self.center_window[rows]
        short = (cw != _NONE) & (size > cw)
        compared = center.copy()
        if short.any():
            count = np.where(cw[short] == 0, size[short], cw[short])
            compared[short] = row_medians(self.ring.last(rows[short], count), count)
        return center, mad, compared

    def step(self, rows: np.ndarray, x: np.ndarray, t: np.ndarray | None = None,
             explain: np.ndarray | None = None, flagged: bool = False
             ) -> tuple[np.ndarray, np.ndarray, list[str | None] | None]:
        """One value for each of `rows` (distinct): the verdicts' flags, scores and, where `explain` is True, details,
        as `RobustSpike.update` gives them."""
        flag = np.zeros(rows.size, dtype=bool)
        score = np.zeros(rows.size)
        finite = np.isfinite(x)
        r, xv = rows[finite], x[finite]
        warm = (self.n[r] < self.grace[r]) | (self.ring.size[r] == 0)
        learn = warm.copy()
        judged = np.flatnonzero(~warm)
        judgement = None
        if judged.size:
            judgement = self._judge(r[judged], xv[judged])
            sub = np.flatnonzero(finite)[judged]
            score[sub], flag[sub] = judgement.score, judgement.anomalous
            learn[judged] = judgement.learned
        self._learn(r[learn], xv[learn])
        warmed = r[warm]
        due = warmed[~np.isnan(self.scale[warmed]) & (self.n[warmed] == self.reseed_after[warmed])]
        if due.size:
            self._reseed(due)
        explain = explained(explain, flag, flagged)
        if explain is None:
            return flag, score, None
        details: list[str | None] = [None] * rows.size
        position = np.full(rows.size, -1)
        position[np.flatnonzero(finite)[judged]] = np.arange(judged.size)
        for i in np.flatnonzero(explain).tolist():
            if not finite[i]:
                details[i] = f"ignored non-finite value {float(x[i])!r}"
            elif position[i] < 0:
                details[i] = f"warming up ({int(self.n[rows[i]])}/{int(self.grace[rows[i]])} samples)"
            elif judgement is not None:
                details[i] = self._detail(judgement, int(position[i]), int(rows[i]), float(x[i]))
        return flag, score, details

    def _detail(self, j: _Judgement, k: int, row: int, x: float) -> str:
        """`RobustSpike.update`'s detail for judged value `k` (of row `row`)."""
        center = float(j.compared[k])
        if j.first[k]:
            return (f"value {fmt(x)} is the first change from a constant {fmt(center)}; "
                    "its size is learned as the instrument's step")
        direction = "above" if x >= center else "below"
        detail = (f"value {fmt(x)} is {float(j.score[k]):.4g} MADs {direction} the rolling median {fmt(center)} "
                  f"(scale {fmt(float(j.scale[k]))})")
        if not np.isnan(j.level[k]):
            return (f"{detail}; back at level {fmt(float(j.level[k]))}, which this series has held before: "
                    "a known change of state, baseline switched to it")
        if j.rebuilt[k]:
            return f"{detail}; {self.params[row]['relearn_after']} anomalies in a row: new level accepted, baseline rebuilt from here"
        if j.anomalous[k] and j.bar[k] > self.threshold[row] and j.run[k] == 1:
            return f"{detail}; threshold {fmt(float(j.bar[k]))} follows this series' heavy tail"
        return detail

    def _judge(self, rows: np.ndarray, x: np.ndarray) -> _Judgement:
        """Score values past warm-up and make every state change but the learning."""
        center, mad, compared = self._center(rows)
        floor = self.stepper.floor(rows, self.resolution[rows])
        first = (mad == 0.0) & (floor == 0.0) & (x != compared)
        self.run[rows[first]] = 0
        scale = np.maximum(MAD_TO_SIGMA * mad, floor) + self.eps[rows]
        with np.errstate(divide="ignore", invalid="ignore"):
            score = np.where(first, 0.0, np.abs(x - compared) / scale)
        threshold = self.threshold[rows]
        over = score > threshold
        fresh = (MAD_TO_SIGMA * mad >= floor) & ~(over & self.over[rows])
        self.over[rows] = over
        known = np.full(rows.size, -1)
        candidates = ~first & (score > threshold) & (self.levels.count[rows] > 0)
        if candidates.any():
            known[candidates] = self.levels.match(rows[candidates], x[candidates], threshold[candidates], floor[candidates])
        switch = known >= 0
        rest = ~first & ~switch
        anomalous = np.zeros(rows.size, dtype=bool)
        bar = np.full(rows.size, np.nan)
        off = self.threshold_off[rows]
        least = np.where((self.run[rows] > 0) & ~np.isnan(off), off, threshold)
        # A row's bar is `threshold_off` during a run, else at least `threshold` (or NaN, which flags nothing): a score
        # at or under that is not anomalous whatever the row's tail, which is then not looked at (most values).
        asked = rest & ~(score <= least)
        if asked.any():
            bar[asked] = self._bar(rows[asked])
            anomalous[asked] = score[asked] > bar[asked]
        normal = rest & ~anomalous
        self.run[rows[normal]] = 0
        self.run[rows[anomalous]] += 1
        run = self.run[rows]
        opens = anomalous & (run == 1)
        counted = (opens | normal) & (~self.tail_blend[rows] | fresh)
        self.tail.update(rows[counted], score[counted])
        limit = self.relearn_after[rows]
        rebuilt = anomalous & (limit != _NONE) & (run >= limit)
        level = np.full(rows.size, np.nan)
        if switch.any():
            level[switch], level_mad = self.levels.pop(rows[switch], known[switch])
        leaving = switch | rebuilt
        if leaving.any():
            self._leave(rows[leaving], center[leaving], mad[leaving], floor[leaving])
            self._reset(rows[leaving])
        if switch.any():
            self._seed(rows[switch], level[switch], level_mad)
        return _Judgement(score, anomalous, first | switch | rebuilt | normal, compared, scale, first, level, bar, rebuilt, run)


@dataclass(frozen=True)
class _Judgement:
    """What `SpikeBank._judge` found for values past warm-up (per value), and what their details need."""

    score: np.ndarray
    anomalous: np.ndarray
    learned: np.ndarray
    compared: np.ndarray
    scale: np.ndarray
    first: np.ndarray
    level: np.ndarray
    """The known level switched to (NaN: none)."""
    bar: np.ndarray
    rebuilt: np.ndarray
    run: np.ndarray
