"""Range and limit rules judged column-wise over a batch: which readings and means the scalar rules still need to see.

`alerts.rules.judge_range` and `judge_limit` build a condition only when it is active or its key may
have an open alert (`alerts.rules.OpenKeys`), and about 99.9 % of readings give none. numpy judges a
whole batch's values against their instrument ranges, limits and early-warning bands at once. A
series (station + parameter) is *hot* when one of its readings breaks one of them, or a key of its
instantaneous rules may be open: only a hot series' readings go through the scalar rules, in order,
so a clear condition after an active one in the same batch is built as before. A cold series'
readings would give no condition; only their values to learn from are taken (valid, and within the
instrument's range), the value `processors.detection` would have taken.

`MeanGate` does the same for window means, one at a time as they come due: a mean is judged by
`judge_limit` only when it lies outside its series' quiet interval (where no limit rule holds) or
its series may have an open window alert.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from alerts.rules import LIMIT_RULES, OpenKeys, limit_flags, or_nan, outside, rule_name, warn_from
from processors.windows import BASES
from quantrac.domain import ParameterSpec

INSTANT_RULES = frozenset({"out_of_range", *LIMIT_RULES})
"""The rules judged on a reading's own value (`processors.detection._instant`)."""
WINDOW_RULES = frozenset(rule_name(rule, basis) for rule in LIMIT_RULES for basis in BASES)
"""The rules judged on window means."""


@dataclass(frozen=True)
class Bounds:
    """A parameter's bounds as numbers, NaN where there is none."""

    range_min: float
    range_max: float
    high: float
    low: float
    warn: float
    """Where `early_warning` begins (`alerts.rules.warn_from`)."""
    quiet: tuple[float, float]
    """[low, high]: a value in it breaks no limit rule (`alerts.rules.limit_flags` all false): not under the minimum,
    not above the early-warning floor, else not above the maximum."""

    @classmethod
    def of(cls, spec: ParameterSpec, early_fraction: float | None) -> Bounds:
        """The spec's bounds under the worker's early-warning fraction; kept while the same spec object is asked."""
        kept = _BOUNDS.get(id(spec))
        if kept is not None and kept[0] is spec and kept[1] == early_fraction:
            return kept[2]
        if len(_BOUNDS) >= 65536:
            _BOUNDS.clear()
        limit = spec.limit
        high = low = warn = None
        if limit is not None:
            high, low, warn = limit.high, limit.low, warn_from(limit, early_fraction)
        quiet = (-math.inf if low is None else float(low),
                 math.inf if high is None else float(high) if warn is None else float(warn))
        bounds = cls(or_nan(spec.range_min), or_nan(spec.range_max), or_nan(high), or_nan(low), or_nan(warn), quiet)
        _BOUNDS[id(spec)] = (spec, early_fraction, bounds)
        return bounds


_BOUNDS: dict[int, tuple[ParameterSpec, float | None, Bounds]] = {}


@dataclass(frozen=True)
class InstantColumns:
    """Per reading of a batch: whether the scalar instantaneous rules must judge it, else its value to learn from."""

    hot: list[bool]
    learn: list[float | None]
    """The reading's value when valid and within the instrument's range, else None (meaningful where not `hot`)."""

    def __getitem__(self, part: slice) -> InstantColumns:
        """The columns of a run of the batch's readings (one station's)."""
        return InstantColumns(self.hot[part], self.learn[part])


def series_bounds(specs: Sequence[ParameterSpec | None], early_fraction: float | None) -> npt.NDArray[np.float64]:
    """Per series (its spec, None if its station has no such parameter): range min and max, high, low and warn."""
    return np.array([_row(spec, early_fraction) for spec in specs], dtype=np.float64).reshape(len(specs), 5)


def judged_columns(series_keys: Sequence[tuple[str, str]], series: npt.NDArray[np.int64], value: npt.NDArray[np.float64],
                   valid: npt.NDArray[np.bool_], bounds: npt.NDArray[np.float64], open_keys: OpenKeys) -> JudgedColumns:
    """A batch's readings judged column-wise (see the module's docstring), given as columns: each one's series (an
    index into `series_keys`: station, parameter), value (NaN if none), whether it is a valid measurement
    (`Reading.is_valid_measurement`), and its bounds (a row of `series_bounds`)."""
    range_min, range_max, high, low, warn = bounds.T
    out = outside(value, range_min, range_max)
    above, early, below = limit_flags(value, high, low, warn)
    hot_series = np.zeros(len(series_keys), dtype=bool)
    hot_series[series[valid & (out | above | early | below)]] = True
    index = {key: i for i, key in enumerate(series_keys)}
    for station_id, parameter, rule in open_keys:
        s = index.get((station_id, parameter))
        if s is not None and rule in INSTANT_RULES:
            hot_series[s] = True
    return JudgedColumns(hot_series[series], np.where(valid & ~out, value, np.nan))


@dataclass(frozen=True)
class JudgedColumns:
    """`InstantColumns` as arrays: `learn` is NaN where the reading gives no value to learn from."""

    hot: npt.NDArray[np.bool_]
    learn: npt.NDArray[np.float64]


def _row(spec: ParameterSpec | None, early_fraction: float | None) -> tuple[float, float, float, float, float]:
    if spec is None:
        return (math.nan,) * 5
    b = Bounds.of(spec, early_fraction)
    return b.range_min, b.range_max, b.high, b.low, b.warn


class MeanGate:
    """Which window means of a batch `judge_limit` can build a condition for: those outside their series' quiet
    interval, or any of a series that may have an open window alert (one of `WINDOW_RULES` in the open keys, or a
    mean of it judged earlier in the batch built a condition)."""

    def __init__(self, open_keys: OpenKeys) -> None:
        self.hot = {(station_id, parameter) for station_id, parameter, rule in open_keys if rule in WINDOW_RULES}

    def quiet(self, station_id: str, parameter: str, spec: ParameterSpec, early_fraction: float | None
              ) -> tuple[float, float] | None:
        """The interval whose means need no judging (`processors.windows.due`'s `quiet`); None: judge them all."""
        if (station_id, parameter) in self.hot:
            return None
        if spec.limit is None:
            return (-math.inf, math.inf)
        return Bounds.of(spec, early_fraction).quiet

    def judged(self, station_id: str, parameter: str) -> None:
        """A mean of the series built a condition: its key is open now, so every later mean is judged."""
        self.hot.add((station_id, parameter))
