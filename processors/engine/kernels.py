"""Compiled pieces the banks' one-pass kernels share: the scalar classes' small estimators on one row of their arrays.

Each is `processors.detectors` arithmetic, operation for operation, so a kernel built from them gives
the scalar class's numbers (numba compiles without fast-math: no reordering, no fused multiply-add).
"""

from __future__ import annotations

import math

import numba
import numpy as np


@numba.njit(cache=True, inline="always")
def step_update(step: np.ndarray, prev: np.ndarray, r: int, x: float) -> None:
    """`StepEstimate.update` of row `r` (NaN: None): a smaller non-zero change than any seen is the new step."""
    if not math.isnan(prev[r]):
        d = abs(x - prev[r])
        if d > 1e-9 * max(1.0, abs(x)) and (math.isnan(step[r]) or d < step[r]):
            step[r] = d
    prev[r] = x


@numba.njit(cache=True, inline="always")
def step_floor(step: np.ndarray, r: int, resolution: float) -> float:
    """`StepEstimate.floor` of row `r`: the configured resolution (NaN: none), else half the learned step."""
    if not math.isnan(resolution):
        return resolution
    return (0.0 if math.isnan(step[r]) else step[r]) / 2.0


@numba.njit(cache=True, inline="always")
def ew_mean_update(n: np.ndarray, mean: np.ndarray, r: int, alpha: float, x: float) -> None:
    """`EWMean.update` of row `r`."""
    n[r] += 1
    mean[r] += max(alpha, 1.0 / n[r]) * (x - mean[r])


@numba.njit(cache=True, inline="always")
def ew_var_update(n: np.ndarray, mean: np.ndarray, var: np.ndarray, r: int, alpha: float, x: float) -> None:
    """`EWVar.update` of row `r`."""
    n[r] += 1
    a = max(alpha, 1.0 / n[r])
    d = x - mean[r]
    incr = a * d
    mean[r] += incr
    var[r] = (1.0 - a) * (var[r] + d * incr)
