"""`Mahalanobis` over many groups at once (one bank per group size): the same verdicts from array state."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from processors.detectors.base import Detector, fmt
from processors.detectors.multivariate import Mahalanobis, squared_distance
from processors.engine.common import Rows, explained

__all__ = ["MahalanobisBank"]


def _patterns(seen: np.ndarray) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """The rows of each pattern of observed parameters in `seen` (rows x parameters), with the pattern; one pattern of
    None when every row is complete (the common case, which needs no selection)."""
    if seen.all():
        return [(np.arange(seen.shape[0]), None)]
    codes = seen.astype(np.int64) @ (np.int64(1) << np.arange(seen.shape[1], dtype=np.int64))
    kinds, which = np.unique(codes, return_inverse=True)
    members = [np.flatnonzero(which == k) for k in range(kinds.size)]
    return [(at, seen[at[0]]) for at in members]


class MahalanobisBank(Rows):
    """Rows of `Mahalanobis` over groups of the same size, with per-row hyperparameters; `step` gives the scalar verdicts.

    A value is a row of ``size`` numbers in the group's order, NaN where a parameter is missing.
    """

    scalar = Mahalanobis

    @staticmethod
    def params_of(detector: Detector) -> dict[str, Any]:
        """The hyperparameters a row is built with, with its group's names."""
        if not isinstance(detector, Mahalanobis):
            raise TypeError(f"a multivariate bank holds Mahalanobis detectors, not {type(detector).__name__}")
        return {**detector._get_params(), "names": list(detector.names)}

    def __init__(self, params: Sequence[dict[str, Any]]) -> None:
        super().__init__(params)
        sizes = {len(p["names"]) for p in self.params}
        if len(sizes) > 1:
            raise ValueError(f"one bank holds groups of one size; got sizes {sorted(sizes)}")
        self.size = sizes.pop() if sizes else 1
        n, d = len(self.params), self.size
        self.alpha = np.array([p.get("alpha", 0.01) for p in self.params], dtype=np.float64)
        self.threshold = np.array([p.get("threshold", 6.0) for p in self.params], dtype=np.float64)
        self.grace = np.array([p.get("grace_period", 60) for p in self.params], dtype=np.int64)
        self.shrinkage = np.array([p.get("shrinkage", 0.01) for p in self.params], dtype=np.float64)
        eps = [np.broadcast_to(np.asarray(p.get("eps", 1e-6), dtype=np.float64), (d,)) for p in self.params]
        self.floor2 = np.array(eps).reshape(n, d) ** 2
        self.relearn_after = np.array([-1 if p.get("relearn_after") is None else int(p["relearn_after"])
                                       for p in self.params], dtype=np.int64)
        self.threshold_off = self.optional("threshold_off")
        self.learn_clip = self.optional("learn_clip")
        self.n = np.zeros(n, dtype=np.int64)
        self.run = np.zeros(n, dtype=np.int64)
        self.mean = np.zeros((n, d))
        self.cov = np.zeros((n, d, d))

    def load(self, row: int, state: dict[str, Any]) -> None:
        """Row `row` from a `Mahalanobis.state()`; a state of another group size is refused."""
        mean = np.array(state["mean"], dtype=np.float64)
        cov = np.array(state["cov"], dtype=np.float64)
        if mean.shape != (self.size,) or cov.shape != (self.size, self.size):
            raise ValueError(f"state does not match {self.size} parameters")
        self.n[row], self.run[row] = int(state["n"]), int(state["run"])
        self.mean[row], self.cov[row] = mean, cov

    def state(self, row: int) -> dict[str, Any]:
        """Row `row` as `Mahalanobis.state()`."""
        return {"n": int(self.n[row]), "run": int(self.run[row]), "mean": self.mean[row].tolist(), "cov": self.cov[row].tolist()}

    def relearn(self, rows: np.ndarray, gap_s: np.ndarray | None = None) -> None:
        """`Mahalanobis.relearn` on `rows`: everything learned is forgotten."""
        self._reset(rows)

    def _reset(self, rows: np.ndarray) -> None:
        self.n[rows] = 0
        self.run[rows] = 0
        self.mean[rows] = 0.0
        self.cov[rows] = 0.0

    def _learn(self, rows: np.ndarray, x: np.ndarray, distance: np.ndarray) -> None:
        """`Mahalanobis._learn`: Finch's recursion, a vector farther than `learn_clip` pulled in to it."""
        self.n[rows] += 1
        a = np.maximum(self.alpha[rows], 1.0 / self.n[rows])
        d = x - self.mean[rows]
        clip = self.learn_clip[rows]
        far = ~np.isnan(clip) & (distance > clip)
        d[far] = d[far] * (clip[far] / distance[far])[:, None]
        self.mean[rows] = self.mean[rows] + a[:, None] * d
        self.cov[rows] = (1.0 - a)[:, None, None] * (self.cov[rows] + a[:, None, None] * (d[:, :, None] * d[:, None, :]))

    def regularised_covariance(self, rows: np.ndarray) -> np.ndarray:
        """`Mahalanobis.regularised_covariance` per row."""
        cov = self.cov[rows]
        i = np.arange(self.size)
        diag = np.zeros_like(cov)
        diag[:, i, i] = cov[:, i, i]
        floor = np.zeros_like(cov)
        floor[:, i, i] = self.floor2[rows]
        s = self.shrinkage[rows][:, None, None]
        out: np.ndarray = (1.0 - s) * cov + s * diag + floor
        return out

    def _distances(self, rows: np.ndarray, x: np.ndarray, seen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The Mahalanobis distance of each vector over its observed parameters (grouped by which are observed), and
        each observed parameter's deviation in its standard deviations (NaN where not observed)."""
        score = np.zeros(rows.size)
        cov = self.regularised_covariance(rows)
        diff = x - self.mean[rows]
        i = np.arange(self.size)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(seen, diff / np.sqrt(cov[:, i, i]), np.nan)
        for at, pattern in _patterns(seen):
            dk, ck = (diff, cov) if pattern is None else (diff[np.ix_(at, pattern)], cov[at][:, pattern][:, :, pattern])
            try:
                quad = (dk[:, None, :] @ np.linalg.solve(ck, dk[:, :, None]))[:, 0, 0]
            except np.linalg.LinAlgError:  # one of the stack is singular: each as the scalar class scores it
                quad = np.array([squared_distance(c, d) for c, d in zip(ck, dk, strict=True)])
            score[at] = np.sqrt(np.maximum(0.0, quad))
        return score, z

    def step(self, rows: np.ndarray, x: np.ndarray, t: np.ndarray | None = None,
             explain: np.ndarray | None = None, flagged: bool = False
             ) -> tuple[np.ndarray, np.ndarray, list[str | None] | None]:
        """One vector for each of `rows` (distinct): flags, scores and, where `explain` is True, details, as
        `Mahalanobis.update` gives them."""
        flag = np.zeros(rows.size, dtype=bool)
        score = np.zeros(rows.size)
        seen = np.isfinite(x)
        complete = seen.all(axis=1)
        warm = (self.n[rows] < self.grace[rows]) | (self.n[rows] == 0)
        first = warm & complete
        if first.any():
            self._learn(rows[first], x[first], np.zeros(int(first.sum())))
        judged = np.flatnonzero(~warm & seen.any(axis=1))
        z = np.full(x.shape, np.nan)
        rebuilt = np.zeros(rows.size, dtype=bool)
        if judged.size:
            r, xv, full = rows[judged], x[judged], complete[judged]
            s, z[judged] = self._distances(r, xv, seen[judged])
            off = self.threshold_off[r]
            bar = np.where((self.run[r] > 0) & ~np.isnan(off), off, self.threshold[r])
            alarm = s > bar
            self.run[r[alarm]] += 1
            self.run[r[~alarm]] = 0
            limit = self.relearn_after[r]
            rebuilt[judged] = alarm & (limit >= 0) & (self.run[r] >= limit)
            if rebuilt.any():
                self._reset(rows[rebuilt])
            learn = full & (rebuilt[judged] | ~alarm)
            if learn.any():
                self._learn(r[learn], xv[learn], np.where(rebuilt[judged], 0.0, s)[learn])
            score[judged], flag[judged] = s, alarm
        explain = explained(explain, flag, flagged)
        if explain is None:
            return flag, score, None
        details: list[str | None] = [None] * rows.size
        scored = np.zeros(rows.size, dtype=bool)
        scored[judged] = True
        for i in np.flatnonzero(explain).tolist():
            row = int(rows[i])
            if not seen[i].any():
                details[i] = "ignored: no finite parameter value"
            elif not scored[i]:
                details[i] = f"warming up ({int(self.n[row])}/{int(self.grace[row])} samples)" if complete[i] else \
                    "ignored incomplete vector during warm-up"
            else:
                details[i] = self._detail(row, float(score[i]), z[i], bool(flag[i]), bool(rebuilt[i]), bool(complete[i]))
        return flag, score, details

    def _detail(self, row: int, score: float, z: np.ndarray, alarm: bool, rebuilt: bool, complete: bool) -> str:
        """`Mahalanobis.update`'s detail for a judged vector of row `row`."""
        names = [n for n, zi in zip(self.params[row]["names"], z.tolist(), strict=True) if not np.isnan(zi)]
        top = sorted(zip(names, [zi for zi in z.tolist() if not np.isnan(zi)], strict=True), key=lambda p: -abs(p[1]))[:3]
        detail = (f"Mahalanobis distance {score:.4g} (threshold {fmt(float(self.threshold[row]))}) over {len(names)} "
                  "parameters; " + ", ".join(f"{n} {zi:+.3g} std" for n, zi in top))
        if rebuilt:
            detail += f"; {self.params[row]['relearn_after']} anomalies in a row, baseline rebuilt from here"
        elif not alarm and not complete:
            detail += "; incomplete vector not learned"
        return detail
