"""`CusumDrift` over many series at once: the same verdicts from array state."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from processors.detectors.base import fmt
from processors.detectors.drift import BIN_SPREAD_SHARE, DAY_S, MAX_RHO, CusumDrift
from processors.engine.common import Rows, StepArrays, explained, opt, unopt
from processors.engine.row_json import cells, ragged

__all__ = ["DriftBank"]


class DriftBank(Rows):
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
        period = np.where(np.isnan(self.season_s[rows]), DAY_S, self.season_s[rows])
        full = np.ones(rows.size, dtype=bool) if gap_s is None else gap_s >= period
        self._reset_baseline(rows[full])
        self.pos[rows[full]] = 0.0
        self.neg[rows[full]] = 0.0
        self.run[rows[full]] = 0
        self.prev[rows[~full]] = np.nan

    def _reset_baseline(self, rows: np.ndarray) -> None:
        self.count[rows] = 0
        self.mean[rows] = 0.0
        self.var[rows] = 0.0
        self.lag_cov[rows] = 0.0
        self.prev[rows] = np.nan

    def _baseline_update(self, rows: np.ndarray, y: np.ndarray) -> None:
        """`EWVar.update` per row."""
        self.count[rows] += 1
        a = np.maximum(self.alpha[rows], 1.0 / self.count[rows])
        d = y - self.mean[rows]
        incr = a * d
        self.mean[rows] += incr
        self.var[rows] = (1.0 - a) * (self.var[rows] + d * incr)

    def _learn_deviation(self, rows: np.ndarray, y: np.ndarray) -> None:
        d = y - self.mean[rows]
        prev = self.prev[rows]
        lagged = ~np.isnan(prev)
        if lagged.any():
            r = rows[lagged]
            a = np.maximum(self.alpha[r], 1.0 / self.count[r])
            self.lag_cov[r] += a * (d[lagged] * prev[lagged] - self.lag_cov[r])
        self._baseline_update(rows, y)
        self.prev[rows] = y - self.mean[rows]

    def _learn(self, rows: np.ndarray, x: np.ndarray, b: np.ndarray) -> None:
        """`CusumDrift._learn`: the deviation from its bin into the baseline, then the value into its bin."""
        self.stepper.update(rows, x)
        seasonal = ~np.isnan(self.season_s[rows])
        self._learn_deviation(rows[~seasonal], x[~seasonal])
        rows, x, b = rows[seasonal], x[seasonal], b[seasonal]
        x = self._bounded(rows, x, b)
        known = self.profile_n[rows, b] > 0
        self._learn_deviation(rows[known], x[known] - self.profile[rows[known], b[known]])
        self.profile_n[rows, b] += 1
        a = np.maximum(self.season_alpha[rows], 1.0 / self.profile_n[rows, b])
        d = x - self.profile[rows, b]
        self.profile[rows, b] += a * d
        self.profile_var[rows, b] = (1.0 - a) * (self.profile_var[rows, b] + a * d * d)

    def _bounded(self, rows: np.ndarray, x: np.ndarray, b: np.ndarray) -> np.ndarray:
        """`CusumDrift._bounded`: each value pulled in to `learn_clip` scales from its bin's usual level."""
        clip = self.learn_clip[rows]
        scale = np.maximum(np.maximum(np.sqrt(self.profile_var[rows, b]), np.sqrt(self.var[rows])),
                           self.stepper.floor(rows, self.resolution[rows]))
        reach = clip * scale
        d = x - self.profile[rows, b]
        with np.errstate(invalid="ignore"):
            far = ~np.isnan(clip) & (self.profile_n[rows, b] >= 2) & (np.abs(d) > reach)
        return np.where(far, self.profile[rows, b] + np.copysign(reach, d), x)

    def _bin(self, rows: np.ndarray, t: np.ndarray) -> np.ndarray:
        season = self.season_s[rows]
        with np.errstate(invalid="ignore"):
            share = (t % season) / season * self.bins[rows]
        b = np.where(np.isnan(season), 0, np.minimum(self.bins[rows] - 1, np.nan_to_num(share).astype(np.int64)))
        return b.astype(np.int64)

    def step(self, rows: np.ndarray, x: np.ndarray, t: np.ndarray,
             explain: np.ndarray | None = None, flagged: bool = False
             ) -> tuple[np.ndarray, np.ndarray, list[str | None] | None]:
        """One value at event time `t` for each of `rows` (distinct): flags, scores and, where `explain` is True,
        details, as `CusumDrift.update` gives them."""
        flag = np.zeros(rows.size, dtype=bool)
        score = np.zeros(rows.size)
        finite = np.flatnonzero(np.isfinite(x))
        r, xv, tv = rows[finite], x[finite], t[finite]
        self.first[r] = np.where(np.isnan(self.first[r]), tv, self.first[r])
        b = self._bin(r, tv)
        n = self.count[r]
        warm = (n < self.grace[r]) | (n == 0) | (~np.isnan(self.season_s[r]) & (tv - self.first[r] < self.season_s[r]))
        judged = np.flatnonzero(~warm)
        learn = warm.copy()
        judgement = None
        if judged.size:
            judgement = self._judge(r[judged], xv[judged], b[judged])
            score[finite[judged]], flag[finite[judged]] = judgement.score, judgement.alarm
            learn[judged] = judgement.learned
        self._learn(r[learn], xv[learn], b[learn])
        explain = explained(explain, flag, flagged)
        if explain is None:
            return flag, score, None
        position = np.full(rows.size, -2)
        position[finite] = -1
        position[finite[judged]] = np.arange(judged.size)
        details: list[str | None] = [None] * rows.size
        for i in np.flatnonzero(explain).tolist():
            row = int(rows[i])
            if position[i] == -2:
                details[i] = f"ignored non-finite value {float(x[i])!r}"
            elif position[i] == -1:
                details[i] = self._warming_up(row, float(t[i]) - float(self.first[row]))
            elif judgement is not None:
                details[i] = self._detail(judgement, int(position[i]), row, float(x[i]))
        return flag, score, details

    def _warming_up(self, row: int, learned_s: float) -> str:
        """`CusumDrift._warming_up` of row `row`."""
        samples = f"{int(self.count[row])}/{int(self.grace[row])} samples"
        season = float(self.season_s[row])
        if np.isnan(season):
            return f"warming up ({samples})"
        return f"warming up ({samples}, {min(learned_s, season) / 3600:.3g}/{season / 3600:.3g} h of the daily profile)"

    def _detail(self, j: _Judgement, k: int, row: int, x: float) -> str:
        """`CusumDrift.update`'s detail for judged value `k` (of row `row`)."""
        if j.blind[k]:
            return f"value {fmt(x)}: no variability learned yet"
        mean, expected = float(j.mean[k]), float(j.expected[k])
        side = "upward" if j.pos[k] >= j.neg[k] else "downward"
        usual = f"the baseline mean {fmt(mean)}" if np.isnan(self.season_s[row]) else \
            f"the usual level {fmt(mean + expected)} at this time of day"
        detail = (f"{side} CUSUM {float(j.score[k]):.4g} (threshold {fmt(float(self.h[row]))}); value {fmt(x)} is "
                  f"{float(j.z[k]):+.3g} long-run std from {usual} (std {fmt(float(j.std[k]))}, "
                  f"autocorrelation {float(j.rho[k]):.2f})")
        if j.rebuilt[k]:
            detail += f"; {self.params[row]['relearn_after']} alarms in a row, baseline rebuilt from here"
        return detail

    def _std(self, rows: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The scale a deviation is judged against (`CusumDrift.update`: long-run std, half the bin's spread, the
        floor), and the autocorrelation used."""
        var = self.var[rows]
        with np.errstate(divide="ignore", invalid="ignore"):
            rho = np.where(~self.decorrelate[rows] | (var <= 0.0), 0.0,
                           np.minimum(MAX_RHO, np.maximum(0.0, self.lag_cov[rows] / var)))
        long_run = np.sqrt(var) * np.sqrt((1.0 + rho) / (1.0 - rho))
        spread = self.spread[rows] & ~np.isnan(self.season_s[rows]) & (self.profile_n[rows, b] >= 2)
        bin_std = np.where(spread, BIN_SPREAD_SHARE * np.sqrt(self.profile_var[rows, b]), 0.0)
        return np.maximum(np.maximum(long_run, bin_std), self.stepper.floor(rows, self.resolution[rows])), rho

    def _judge(self, rows: np.ndarray, x: np.ndarray, b: np.ndarray) -> _Judgement:
        """Score values past warm-up and make every state change but the learning."""
        seasonal = ~np.isnan(self.season_s[rows]) & (self.profile_n[rows, b] > 0)
        expected = np.where(seasonal, self.profile[rows, b], 0.0)
        y = x - expected
        std, rho = self._std(rows, b)
        blind = std == 0.0
        mean = self.mean[rows]
        with np.errstate(divide="ignore", invalid="ignore"):
            z = (y - mean) / (std + self.eps[rows])
        cap = self.cap[rows]
        step = np.minimum(cap, np.maximum(-cap, z))
        k = self.k[rows]
        pos = np.maximum(0.0, self.pos[rows] + step - k)
        neg = np.maximum(0.0, self.neg[rows] - step - k)
        score = np.where(blind, 0.0, np.maximum(pos, neg))
        alarm = ~blind & (score > self.h[rows])
        normal = ~blind & ~alarm
        self.pos[rows[normal]], self.neg[rows[normal]] = pos[normal], neg[normal]
        self.run[rows[normal]] = 0
        rebuilt = np.zeros(rows.size, dtype=bool)
        if alarm.any():
            r = rows[alarm]
            self.pos[r] = 0.0
            self.neg[r] = 0.0
            self.run[r] += 1
            limit = self.relearn_after[rows]
            rebuilt = alarm & (limit >= 0) & (self.run[rows] >= limit)
            self._reset_baseline(rows[rebuilt])
            self._baseline_update(rows[rebuilt], y[rebuilt])
            self.run[rows[rebuilt]] = 0
        return _Judgement(score, alarm, blind | normal, blind, mean, expected, z, std, rho, pos, neg, rebuilt)


@dataclass(frozen=True)
class _Judgement:
    """What `DriftBank._judge` found for values past warm-up (per value), and what their details need."""

    score: np.ndarray
    alarm: np.ndarray
    learned: np.ndarray
    blind: np.ndarray
    mean: np.ndarray
    expected: np.ndarray
    z: np.ndarray
    std: np.ndarray
    rho: np.ndarray
    pos: np.ndarray
    neg: np.ndarray
    rebuilt: np.ndarray
