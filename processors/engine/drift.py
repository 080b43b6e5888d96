"""`CusumDrift` over many series at once: the same verdicts from array state, in one compiled pass over a batch
(`_run`, as `processors.engine.flatline`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np

from processors.detectors.base import fmt
from processors.detectors.drift import BIN_SPREAD_SHARE, DAY_S, MAX_RHO, CusumDrift
from processors.engine.common import OnePassRows, StepArrays, opt, unopt
from processors.engine.kernels import ew_var_update, step_floor, step_update
from processors.engine.row_json import cells, ragged

__all__ = ["DriftBank"]


class DriftBank(OnePassRows):
    """Rows of `CusumDrift`, one per series, with per-row hyperparameters; `step` gives the scalar class's verdicts."""

    scalar = CusumDrift

    def __init__(self, params: Sequence[dict[str, Any]]) -> None:
        super().__init__(params)
        get = self.column
        self.alpha, self.k, self.h = get("alpha", 0.01), get("k", 0.5), get("h", 8.0)
        self.grace = get("grace_period", 60, np.int64)
        self.eps = get("eps", 1e-9)
        self.relearn_after = np.array([-1 if p.get("relearn_after") is None else int(p["relearn_after"])
                                       for p in self.params], dtype=np.int64)
        self.season_s = self.optional("season_s", DAY_S)
        self.bins = get("season_bins", 48, np.int64)
        self.season_alpha = get("season_alpha", 0.05)
        self.decorrelate = get("decorrelate", True, bool)
        clip = self.optional("clip")
        self.cap = np.where(np.isnan(clip), self.h / 2.0, np.minimum(clip, self.h / 2.0))
        self.resolution = self.optional("resolution")
        self.spread = get("seasonal_spread", True, bool)
        self.learn_clip = self.optional("learn_clip")
        n, width = len(self.params), max(int(self.bins.max()) if self.params else 1, 1)
        self.stepper = StepArrays(n)
        self.count = np.zeros(n, dtype=np.int64)
        self.mean = np.zeros(n)
        self.var = np.zeros(n)
        self.lag_cov = np.zeros(n)
        self.prev = np.full(n, np.nan)
        self.pos = np.zeros(n)
        self.neg = np.zeros(n)
        self.run = np.zeros(n, dtype=np.int64)
        self.profile = np.zeros((n, width))
        self.profile_n = np.zeros((n, width), dtype=np.int64)
        self.profile_var = np.zeros((n, width))
        self.first = np.full(n, np.nan)

    def load(self, row: int, state: dict[str, Any]) -> None:
        """Row `row` from a `CusumDrift.state()` (through the class, so an old state is migrated as it would be)."""
        det = CusumDrift.from_state(state, **self.params[row])
        state = det.state()
        baseline = state["baseline"]
        self.count[row], self.mean[row], self.var[row] = int(baseline["n"]), baseline["mean"], baseline["var"]
        self.lag_cov[row], self.prev[row] = state["lag_cov"], opt(state["prev"])
        self.pos[row], self.neg[row], self.run[row] = state["pos"], state["neg"], state["run"]
        bins = int(self.bins[row])
        self.profile[row, :bins] = state["profile"]
        self.profile_n[row, :bins] = state["profile_n"]
        self.profile_var[row, :bins] = state["profile_var"]
        self.first[row] = opt(state["first"])
        self.stepper.load(row, state["step"])

    def state(self, row: int) -> dict[str, Any]:
        """Row `row` as `CusumDrift.state()`."""
        bins = int(self.bins[row])
        return {"baseline": {"n": int(self.count[row]), "mean": float(self.mean[row]), "var": float(self.var[row])},
                "lag_cov": float(self.lag_cov[row]), "prev": unopt(self.prev[row]),
                "pos": float(self.pos[row]), "neg": float(self.neg[row]), "run": int(self.run[row]),
                "profile": self.profile[row, :bins].tolist(),
                "profile_n": self.profile_n[row, :bins].tolist(),
                "profile_var": self.profile_var[row, :bins].tolist(),
                "first": unopt(self.first[row]), "step": self.stepper.state(row)}

    def states(self, rows: np.ndarray) -> list[dict[str, Any]]:
        """`state` of each of `rows`, gathered column by column."""
        columns = zip(self.bins[rows].tolist(), self.count[rows].tolist(), self.mean[rows].tolist(), self.var[rows].tolist(),
                      self.lag_cov[rows].tolist(), self.prev[rows].tolist(), self.pos[rows].tolist(),
                      self.neg[rows].tolist(), self.run[rows].tolist(), self.profile[rows].tolist(),
                      self.profile_n[rows].tolist(), self.profile_var[rows].tolist(), self.first[rows].tolist(),
                      self.stepper.states(rows), strict=True)
        return [{"baseline": {"n": n, "mean": mean, "var": var}, "lag_cov": lag_cov, "prev": None if prev != prev else prev,
                 "pos": pos, "neg": neg, "run": run, "profile": profile[:bins], "profile_n": profile_n[:bins],
                 "profile_var": profile_var[:bins], "first": None if first != first else first, "step": step}
                for bins, n, mean, var, lag_cov, prev, pos, neg, run, profile, profile_n, profile_var, first, step
                in columns]

    def states_json(self, rows: np.ndarray) -> list[bytes]:
        """`states` as JSON text, column by column (`processors.engine.row_json`)."""
        bins = self.bins[rows]
        return [b'{"baseline":{"n":%b,"mean":%b,"var":%b},"lag_cov":%b,"prev":%b,"pos":%b,"neg":%b,"run":%b,'
                b'"profile":%b,"profile_n":%b,"profile_var":%b,"first":%b,"step":%b}' % parts for parts in zip(
                    cells(self.count[rows]), cells(self.mean[rows]), cells(self.var[rows]), cells(self.lag_cov[rows]),
                    cells(self.prev[rows]), cells(self.pos[rows]), cells(self.neg[rows]), cells(self.run[rows]),
                    ragged(self.profile[rows], bins), ragged(self.profile_n[rows], bins),
                    ragged(self.profile_var[rows], bins), cells(self.first[rows]), self.stepper.json(rows), strict=True)]

    def relearn(self, rows: np.ndarray, gap_s: np.ndarray | None = None) -> None:
        """`CusumDrift.relearn` on `rows`: after a gap of a period or more (or unknown) rebuild the baseline, else forget the lag."""
        gaps = np.full(rows.size, np.inf) if gap_s is None else np.asarray(gap_s, dtype=np.float64)
        for row, gap in zip(rows.tolist(), gaps.tolist(), strict=True):
            _relearn(row, gap, self.season_s, self.count, self.mean, self.var, self.lag_cov, self.prev, self.pos, self.neg,
                     self.run)

    def run_batch(self, rows: np.ndarray, x: np.ndarray, t: np.ndarray | None = None,
                  relearn_gap_s: np.ndarray | None = None) -> DriftRun:
        """`CusumDrift.update` of each value in turn (`rows[i]` takes `x[i]` at `t[i]`; a row may come many times), after
        `CusumDrift.relearn(gap)` where `relearn_gap_s` is not NaN: one compiled pass over the batch (`_run`)."""
        if t is None:
            raise ValueError("a drift needs each value's event time (its daily profile's bin)")
        n = rows.size
        out = DriftRun(self, rows, x, t, flag=np.zeros(n, dtype=bool), score=np.zeros(n), kind=np.zeros(n, dtype=np.int8),
                       count=np.zeros(n, dtype=np.int64), learned_s=np.zeros(n), mean=np.zeros(n), expected=np.zeros(n),
                       z=np.zeros(n), std=np.zeros(n), rho=np.zeros(n), pos=np.zeros(n), neg=np.zeros(n),
                       rebuilt=np.zeros(n, dtype=bool))
        gaps = np.full(n, np.nan) if relearn_gap_s is None else relearn_gap_s.astype(np.float64, copy=False)
        _run(rows.astype(np.int64, copy=False), x.astype(np.float64, copy=False), t.astype(np.float64, copy=False), gaps,
             self.alpha, self.k, self.h, self.grace, self.eps, self.relearn_after, self.season_s, self.bins,
             self.season_alpha, self.decorrelate, self.cap, self.resolution, self.spread, self.learn_clip,
             self.stepper.step, self.stepper.prev, self.count, self.mean, self.var, self.lag_cov, self.prev, self.pos,
             self.neg, self.run, self.profile, self.profile_n, self.profile_var, self.first,
             out.flag, out.score, out.kind, out.count, out.learned_s, out.mean, out.expected, out.z, out.std, out.rho,
             out.pos, out.neg, out.rebuilt)
        return out


    def _warming_up(self, row: int, count: int, learned_s: float) -> str:
        """`CusumDrift._warming_up` of row `row` (`count`: its baseline's count after the value)."""
        samples = f"{count}/{int(self.grace[row])} samples"
        season = float(self.season_s[row])
        if np.isnan(season):
            return f"warming up ({samples})"
        return f"warming up ({samples}, {min(learned_s, season) / 3600:.3g}/{season / 3600:.3g} h of the daily profile)"


_NOT_FINITE, _WARMING, _BLIND, _JUDGED = -2, -1, 0, 1
"""`DriftRun.kind` of a value: how `CusumDrift.update` took it."""


@dataclass(frozen=True)
class DriftRun:
    """A batch's verdicts from `DriftBank.run_batch`, per value, with what their details need."""

    bank: DriftBank
    rows: np.ndarray
    x: np.ndarray
    t: np.ndarray
    flag: np.ndarray
    score: np.ndarray
    kind: np.ndarray
    count: np.ndarray
    """The baseline's count after a value learned while warming up."""
    learned_s: np.ndarray
    mean: np.ndarray
    expected: np.ndarray
    z: np.ndarray
    std: np.ndarray
    rho: np.ndarray
    pos: np.ndarray
    neg: np.ndarray
    rebuilt: np.ndarray

    def detail(self, i: int) -> str:
        """`CusumDrift.update`'s detail of value `i`."""
        row, x, kind, bank = int(self.rows[i]), float(self.x[i]), int(self.kind[i]), self.bank
        if kind == _NOT_FINITE:
            return f"ignored non-finite value {x!r}"
        if kind == _WARMING:
            return bank._warming_up(row, int(self.count[i]), float(self.learned_s[i]))
        if kind == _BLIND:
            return f"value {fmt(x)}: no variability learned yet"
        mean, expected = float(self.mean[i]), float(self.expected[i])
        side = "upward" if self.pos[i] >= self.neg[i] else "downward"
        usual = f"the baseline mean {fmt(mean)}" if np.isnan(bank.season_s[row]) else \
            f"the usual level {fmt(mean + expected)} at this time of day"
        detail = (f"{side} CUSUM {float(self.score[i]):.4g} (threshold {fmt(float(bank.h[row]))}); value {fmt(x)} is "
                  f"{float(self.z[i]):+.3g} long-run std from {usual} (std {fmt(float(self.std[i]))}, "
                  f"autocorrelation {float(self.rho[i]):.2f})")
        if self.rebuilt[i]:
            detail += f"; {bank.params[row]['relearn_after']} alarms in a row, baseline rebuilt from here"
        return detail


@numba.njit(cache=True, inline="always")
def _relearn(r: int, gap_s: float, season_s: np.ndarray, count: np.ndarray, mean: np.ndarray, var: np.ndarray,
             lag_cov: np.ndarray, prev: np.ndarray, pos: np.ndarray, neg: np.ndarray, run: np.ndarray) -> None:
    """`CusumDrift.relearn(gap_s)` of row `r` (an unknown gap: inf)."""
    period = DAY_S if math.isnan(season_s[r]) else season_s[r]
    if gap_s >= period:
        _reset_baseline(r, count, mean, var, lag_cov, prev)
        pos[r] = neg[r] = 0.0
        run[r] = 0
    else:
        prev[r] = np.nan


@numba.njit(cache=True, inline="always")
def _reset_baseline(r: int, count: np.ndarray, mean: np.ndarray, var: np.ndarray, lag_cov: np.ndarray,
                    prev: np.ndarray) -> None:
    count[r] = 0
    mean[r] = var[r] = lag_cov[r] = 0.0
    prev[r] = np.nan


@numba.njit(cache=True, inline="always")
def _learn_deviation(r: int, y: float, alpha: np.ndarray, count: np.ndarray, mean: np.ndarray, var: np.ndarray,
                     lag_cov: np.ndarray, prev: np.ndarray) -> None:
    """`CusumDrift._learn_deviation` of row `r`."""
    d = y - mean[r]
    if not math.isnan(prev[r]):
        a = max(alpha[r], 1.0 / count[r])
        lag_cov[r] += a * (d * prev[r] - lag_cov[r])
    ew_var_update(count, mean, var, r, alpha[r], y)
    prev[r] = y - mean[r]


@numba.njit(cache=True, inline="always")
def _learn(r: int, value: float, b: int, seasonal: bool, alpha: np.ndarray, season_alpha: np.ndarray,
           resolution: np.ndarray, learn_clip: np.ndarray, step: np.ndarray, step_prev: np.ndarray, count: np.ndarray,
           mean: np.ndarray, var: np.ndarray, lag_cov: np.ndarray, prev: np.ndarray, profile: np.ndarray,
           profile_n: np.ndarray, profile_var: np.ndarray) -> None:
    """`CusumDrift._learn` of row `r`: its deviation from bin `b` into the baseline, then the value (pulled in to
    `learn_clip` scales, `CusumDrift._bounded`) into its bin."""
    step_update(step, step_prev, r, value)
    if not seasonal:
        _learn_deviation(r, value, alpha, count, mean, var, lag_cov, prev)
        return
    if not math.isnan(learn_clip[r]) and profile_n[r, b] >= 2:
        scale = max(math.sqrt(profile_var[r, b]), math.sqrt(var[r]), step_floor(step, r, resolution[r]))
        reach = learn_clip[r] * scale
        d = value - profile[r, b]
        if abs(d) > reach:
            value = profile[r, b] + math.copysign(reach, d)
    if profile_n[r, b]:
        _learn_deviation(r, value - profile[r, b], alpha, count, mean, var, lag_cov, prev)
    profile_n[r, b] += 1
    a = max(season_alpha[r], 1.0 / profile_n[r, b])
    d = value - profile[r, b]
    profile[r, b] += a * d
    profile_var[r, b] = (1.0 - a) * (profile_var[r, b] + a * d * d)


@numba.njit(cache=True)
def _run(rows: np.ndarray, x: np.ndarray, t: np.ndarray, gaps: np.ndarray, alpha: np.ndarray, k: np.ndarray,
         h: np.ndarray, grace: np.ndarray, eps: np.ndarray, relearn_after: np.ndarray, season_s: np.ndarray,
         bins: np.ndarray, season_alpha: np.ndarray, decorrelate: np.ndarray, cap: np.ndarray, resolution: np.ndarray,
         spread: np.ndarray, learn_clip: np.ndarray, step: np.ndarray, step_prev: np.ndarray, count: np.ndarray,
         mean: np.ndarray, var: np.ndarray, lag_cov: np.ndarray, prev: np.ndarray, pos: np.ndarray, neg: np.ndarray,
         run: np.ndarray, profile: np.ndarray, profile_n: np.ndarray, profile_var: np.ndarray, first: np.ndarray,
         flag: np.ndarray, score: np.ndarray, kind: np.ndarray, count_out: np.ndarray, learned_out: np.ndarray,
         mean_out: np.ndarray, expected_out: np.ndarray, z_out: np.ndarray, std_out: np.ndarray, rho_out: np.ndarray,
         pos_out: np.ndarray, neg_out: np.ndarray, rebuilt: np.ndarray) -> None:
    """`CusumDrift.update` of each value in turn on its row's arrays, after `relearn` where `gaps` is not NaN; per value
    its flag and score, how it was taken (`DriftRun.kind`) and what its detail says."""
    for i in range(rows.size):
        r = rows[i]
        if not math.isnan(gaps[i]):
            _relearn(r, gaps[i], season_s, count, mean, var, lag_cov, prev, pos, neg, run)
        value, ti = x[i], t[i]
        if not math.isfinite(value):
            kind[i] = _NOT_FINITE
            continue
        seasonal = not math.isnan(season_s[r])
        if math.isnan(first[r]):
            first[r] = ti
        b = min(bins[r] - 1, int((ti % season_s[r]) / season_s[r] * bins[r])) if seasonal else 0
        learned_s = ti - first[r]
        n = count[r]
        if n < grace[r] or n == 0 or (seasonal and learned_s < season_s[r]):
            kind[i], learned_out[i] = _WARMING, learned_s
        else:
            expected = profile[r, b] if seasonal and profile_n[r, b] > 0 else 0.0
            y = value - expected
            rho = 0.0 if not decorrelate[r] or var[r] <= 0.0 else min(MAX_RHO, max(0.0, lag_cov[r] / var[r]))
            bin_std = BIN_SPREAD_SHARE * math.sqrt(profile_var[r, b]) if spread[r] and seasonal and profile_n[r, b] >= 2 \
                else 0.0
            std = max(math.sqrt(var[r]) * math.sqrt((1.0 + rho) / (1.0 - rho)), bin_std,
                      step_floor(step, r, resolution[r]))
            if std == 0.0:
                kind[i] = _BLIND
            else:
                kind[i] = _JUDGED
                z = (y - mean[r]) / (std + eps[r])
                moved = min(cap[r], max(-cap[r], z))
                up = max(0.0, pos[r] + moved - k[r])
                down = max(0.0, neg[r] - moved - k[r])
                score[i] = max(up, down)
                mean_out[i], expected_out[i], z_out[i], std_out[i], rho_out[i] = mean[r], expected, z, std, rho
                pos_out[i], neg_out[i] = up, down
                if score[i] > h[r]:
                    flag[i] = True
                    pos[r] = neg[r] = 0.0
                    run[r] += 1
                    if relearn_after[r] >= 0 and run[r] >= relearn_after[r]:
                        _reset_baseline(r, count, mean, var, lag_cov, prev)
                        ew_var_update(count, mean, var, r, alpha[r], y)
                        run[r] = 0
                        rebuilt[i] = True
                    continue
                pos[r], neg[r] = up, down
                run[r] = 0
        _learn(r, value, b, seasonal, alpha, season_alpha, resolution, learn_clip, step, step_prev, count, mean, var,
               lag_cov, prev, profile, profile_n, profile_var)
        count_out[i] = count[r]
