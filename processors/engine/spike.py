"""`RobustSpike` over many series at once: the same verdicts from array state, in one compiled pass over a batch
(`processors.engine.spike_pass`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from processors.detectors.base import fmt
from processors.detectors.spike import RobustSpike
from processors.engine.common import OnePassRows, Ring, StepArrays, unopt
from processors.engine.levels_tail import LevelRows, TailRows
from processors.engine.row_json import cells
from processors.engine.spike_pass import FIRST, NONE, NOT_FINITE, WARMING, relearn_row, run, sort_rows

__all__ = ["SpikeBank"]

def _int_or_none(x: int | None) -> int:
    return NONE if x is None else int(x)


class SpikeBank(OnePassRows):
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
        self.ordered = np.zeros_like(self.ring.data)
        """Each row's window sorted (`processors.engine.spike_pass`), rebuilt from the ring when a row is loaded."""
        self._int_params = np.stack([self.window, self.grace, self.relearn_after, self.center_window, self.reseed_after,
                                     self.levels.capacity], axis=1) if n else np.zeros((0, 6), dtype=np.int64)
        self._float_params = np.stack([self.threshold, self.eps, self.resolution, self.threshold_off, self.tail_p,
                                       self.tail_ref, self.tail_fit, self.tail_power], axis=1) if n else np.zeros((0, 8))

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
        ring = self.ring
        sort_rows(ring.data, ring.start, ring.size, ring.capacity, self.ordered, np.array([row], dtype=np.int64))

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
        for row in rows.tolist():
            relearn_row(row, self.window, self.reseed_after, self.ring.size, self.ring.start, self.ordered, self.n,
                        self.run, self.over, self.seeded, self.scale)

    def run_batch(self, rows: np.ndarray, x: np.ndarray, t: np.ndarray | None = None,
                  relearn_gap_s: np.ndarray | None = None) -> SpikeRun:
        """`RobustSpike.update` of each value in turn (`rows[i]` takes `x[i]`; a row may come many times), after
        `RobustSpike.relearn` where `relearn_gap_s` is not NaN: one compiled pass over the batch
        (`processors.engine.spike_pass.run`)."""
        n = rows.size
        out = SpikeRun(self, rows, x, flag=np.zeros(n, dtype=bool), score=np.zeros(n), kind=np.zeros(n, dtype=np.int8),
                       count=np.zeros(n, dtype=np.int64), center=np.zeros(n), scale=np.zeros(n), level=np.full(n, np.nan),
                       bar=np.full(n, np.nan), rebuilt=np.zeros(n, dtype=bool), run=np.zeros(n, dtype=np.int64))
        gaps = np.full(n, np.nan) if relearn_gap_s is None else relearn_gap_s.astype(np.float64, copy=False)
        ring, tail, levels = self.ring, self.tail, self.levels
        run(rows.astype(np.int64, copy=False), x.astype(np.float64, copy=False), gaps, self._int_params,
            self._float_params, self.tail_blend, ring.data, ring.start, ring.size, self.ordered, self.stepper.step,
            self.stepper.prev, levels.center, levels.mad, levels.count, tail.counts, tail.total, tail.memory, self.n,
            self.run, self.over, self.scale, self.seeded, out.flag, out.score, out.kind, out.count, out.center,
            out.scale, out.level, out.bar, out.rebuilt, out.run)
        return out



@dataclass(frozen=True)
class SpikeRun:
    """A batch's verdicts from `SpikeBank.run_batch`, per value, with what their details need."""

    bank: SpikeBank
    rows: np.ndarray
    x: np.ndarray
    flag: np.ndarray
    score: np.ndarray
    kind: np.ndarray
    """How `RobustSpike.update` took the value (`processors.engine.spike_pass`: not finite, warming up, the first
    change from a constant window, judged)."""
    count: np.ndarray
    """The row's count of values after one learned while warming up."""
    center: np.ndarray
    scale: np.ndarray
    level: np.ndarray
    """The known level switched to (NaN: none)."""
    bar: np.ndarray
    rebuilt: np.ndarray
    run: np.ndarray
    """The row's run of anomalies with an anomalous value."""

    def detail(self, i: int) -> str:
        """`RobustSpike.update`'s detail of value `i`."""
        row, x, kind, bank = int(self.rows[i]), float(self.x[i]), int(self.kind[i]), self.bank
        if kind == NOT_FINITE:
            return f"ignored non-finite value {x!r}"
        if kind == WARMING:
            return f"warming up ({int(self.count[i])}/{int(bank.grace[row])} samples)"
        center = float(self.center[i])
        if kind == FIRST:
            return (f"value {fmt(x)} is the first change from a constant {fmt(center)}; "
                    "its size is learned as the instrument's step")
        direction = "above" if x >= center else "below"
        detail = (f"value {fmt(x)} is {float(self.score[i]):.4g} MADs {direction} the rolling median {fmt(center)} "
                  f"(scale {fmt(float(self.scale[i]))})")
        if not np.isnan(self.level[i]):
            return (f"{detail}; back at level {fmt(float(self.level[i]))}, which this series has held before: "
                    "a known change of state, baseline switched to it")
        if self.rebuilt[i]:
            return f"{detail}; {bank.params[row]['relearn_after']} anomalies in a row: new level accepted, baseline rebuilt from here"
        if self.flag[i] and self.bar[i] > bank.threshold[row] and self.run[i] == 1:
            return f"{detail}; threshold {fmt(float(self.bar[i]))} follows this series' heavy tail"
        return detail
