"""Spikes: distance from the rolling median in units of the rolling MAD."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np

from processors.detectors.base import Detector, RingBuffer, StepEstimate, Verdict, fmt, is_finite, median
from processors.detectors.levels import MAD_TO_SIGMA, KnownLevels
from processors.detectors.tail import TailQuantile

__all__ = ["RobustSpike"]


class RobustSpike(Detector):
    """Robust spike detector: ``|x - median| / (max(1.4826 * MAD, resolution) + eps) > threshold``.

    Median and MAD (median absolute deviation) are taken over the last ``window``
    values that were learned; an anomalous value is scored but not learned, so a spike
    never shifts the baseline. If ``relearn_after`` consecutive values are anomalous the
    detector accepts that the level has changed: it forgets its window and warms up again
    from the current value.

    Parameters
    ----------
    window
        Number of recent non-anomalous values the median and MAD are computed over.
    threshold
        Score above which a value is anomalous (robust z-score).
    grace_period
        Number of values learned before any verdict can be anomalous.
    eps
        Added to the scale (a numerical guard; the resolution is the floor that matters).
    relearn_after
        Consecutive anomalies after which the baseline is rebuilt; None never rebuilds.
        After a level shift this is when the new level is accepted, and the verdict says so.
    reseed_after
        After a gap (`relearn`), warm up on this many values instead of ``grace_period`` when the
        scale is known (a window was full since the last start): the window is then seeded, as for
        a known level, around their median with the larger of their MAD and the last full window's
        (a gap moves a level; it does not change the instrument's noise). None: warm up for
        ``grace_period`` after every gap.
    center_window
        Number of the most recent learned values whose median is the level a value is compared
        with; None: the whole window. A short one follows a slow trend (a temperature rising
        through the day), which the median of a long window lags behind and would take for a
        spike; the scale stays the MAD of the whole window.
    resolution
        Smallest step the instrument reports; floors the scale so that a quantised, almost
        constant signal (MAD 0) does not turn every step into a spike. None: learned from the
        data (half the smallest non-zero change between consecutive learned values, see
        ``StepEstimate``).
    threshold_off
        Hysteresis: once a value is anomalous, the following ones stay anomalous while their score
        is above ``threshold_off`` (None: ``threshold``). An excursion that hovers about the
        threshold is then one contiguous anomaly, not a flicker of them, and it is not learned.
    levels
        How many levels the series held and left are remembered (``KnownLevels``); a value back at
        one of them is a known change of state (a pump switching on), not an anomaly: the baseline
        switches to that level, seeded from its remembered median and MAD. 0 remembers none.
    tail_p, tail_ref
        Tail-adaptive threshold. ``q`` is the series' own upper ``tail_p`` quantile of its scores
        (``TailQuantile``; the third largest before ``3 / tail_p`` are counted). The scores counted
        are those of learned values and the first of each anomalous run: the tail must see the
        outliers it is to explain, or it is cut at the threshold, and a level shift counts once. A
        value is anomalous above ``threshold * max(1, q / tail_ref) ** 2``. On Gaussian noise ``q``
        is about 3.7 (one reading in a thousand, with this detector's short centre), and rounding
        or a slow trend keep it under ``tail_ref``, so ``threshold`` decides. On heavy-tailed noise
        (Student t(3)) ``q`` is about 12, and the threshold follows the tail: the square
        extrapolates from one reading in a thousand to the rarer ones a threshold must clear
        (a power-law tail's quantiles grow by about ``q / q_gaussian`` a decade). ``tail_ref``
        None: ``threshold`` alone.
    tail_fit
        None: ``q`` is read off the histogram (:meth:`TailQuantile.quantile`), which rests on its few
        largest scores. A share (0.01): ``q`` is extrapolated from a power-law tail fitted to the top
        ``tail_fit`` of the scores (:meth:`TailQuantile.extrapolated`, Hill and Weissman), which uses
        ten times as many and so swings less between series of the same noise. With ``tail_ref`` 5.5 it
        kept the heavy-tailed stress series to 1 false alarm in its worst week (2 read off), but it read
        the simulator's flows, whose incidents sit in their own tails, as heavy too; the worker's
        default does not use it (docs/detection.md "Heavy tails").
    tail_power
        The exponent of ``q / tail_ref`` in the tail-adaptive threshold (2: extrapolate one decade of
        rarity past ``q``). 2.5 kept the heavy-tailed stress series to 1 false alarm in its worst week,
        but it also missed 3 of 32 +150 spikes that 2 catches; the worker keeps 2.
    tail_blend
        With ``tail_fit``: ``q`` is the geometric mean of the quantile read within its bin and the fitted one
        (:meth:`TailQuantile.blended`), which swings less between weeks of the same noise than either and
        leans on neither's assumption alone. And a score judged against the instrument's step alone (the
        window's MAD is 0, or below the step) is not counted in the tail: it counts steps, not spreads, so
        it says nothing of how heavy the noise is. Nor is a score above ``threshold`` that follows another:
        consecutive scores above it are one excursion (a ramp, a level rising), learned or flagged, and count
        once, as an anomalous run does. Counted, either raises the threshold, which lets more of them be
        learned and counted: on a flow whose first morning rose from a night of zeros, and on a temperature
        ramping up 13 MADs a reading, the threshold ran away to hundreds or thousands. The worker runs it
        (docs/detection.md "Heavy tails").

    Examples
    --------
    >>> from datetime import datetime, timezone
    >>> ts = datetime(2026, 1, 1, tzinfo=timezone.utc)
    >>> det = RobustSpike(window=30, threshold=5.0, grace_period=10)
    >>> for x in [10.0, 10.2, 9.8, 10.1, 9.9] * 4:
    ...     _ = det.update(x, ts)
    >>> v = det.update(14.0, ts)
    >>> v.is_anomaly, v.kind, round(v.score, 1)
    (True, 'spike', 27.0)
    >>> v.detail
    'value 14 is 26.98 MADs above the rolling median 10 (scale 0.1483)'
    """

    name = "spike"
    restart_only = frozenset({"reseed_after"})

    def __init__(
        self,
        window: int = 60,
        threshold: float = 6.0,
        grace_period: int = 30,
        eps: float = 1e-9,
        relearn_after: int | None = None,
        resolution: float | None = None,
        center_window: int | None = None,
        threshold_off: float | None = None,
        levels: int = 4,
        tail_p: float = 0.001,
        tail_ref: float | None = 6.5,
        tail_fit: float | None = None,
        tail_power: float = 2.0,
        tail_blend: bool = False,
        reseed_after: int | None = None,
    ) -> None:
        if window < 1 or grace_period < 0 or threshold <= 0 or eps < 0 or (resolution is not None and resolution < 0):
            raise ValueError("window >= 1, grace_period >= 0, threshold > 0, eps >= 0 and resolution >= 0 are required")
        if threshold_off is not None and not 0 < threshold_off <= threshold:
            raise ValueError("0 < threshold_off <= threshold is required")
        if levels < 0 or not 0.0 < tail_p < 1.0 or (tail_ref is not None and tail_ref <= 0):
            raise ValueError("levels >= 0, 0 < tail_p < 1 and tail_ref > 0 (or None) are required")
        if tail_fit is not None and not tail_p < tail_fit < 1.0:
            raise ValueError("tail_p < tail_fit < 1 (or None) is required")
        if tail_power < 1.0:
            raise ValueError("tail_power >= 1 is required")
        if tail_blend and tail_fit is None:
            raise ValueError("tail_blend needs tail_fit")
        if reseed_after is not None and not 1 <= reseed_after < grace_period:
            raise ValueError("1 <= reseed_after < grace_period (or None) is required")
        self.window = window
        self.threshold = threshold
        self.grace_period = grace_period
        self.eps = eps
        self.relearn_after = relearn_after
        self.resolution = resolution
        self.center_window = center_window
        self.threshold_off = threshold_off
        self.levels = levels
        self.tail_p = tail_p
        self.tail_ref = tail_ref
        self.tail_fit = tail_fit
        self.tail_power = tail_power
        self.tail_blend = tail_blend
        self.reseed_after = reseed_after
        self._scale: float | None = None
        """While a reseed is pending (a gap came after a full or seeded window): that window's MAD; else None."""
        self._seeded = False
        """The window was seeded around a known level and scale (`_fill`) and not emptied since: a gap before it is full
        again still leaves a scale to reseed with."""
        self._known = KnownLevels(levels)
        self._tail = TailQuantile()
        self._step = StepEstimate()
        self._buffer = RingBuffer(window)
        self._n = 0
        self._run = 0
        self._over = False

    @classmethod
    def _unit_test_params(cls) -> dict[str, Any]:
        return {"window": 20, "threshold": 4.0, "grace_period": 5, "eps": 1e-6, "relearn_after": 15, "resolution": None,
                "center_window": None, "threshold_off": 2.5, "levels": 2, "tail_p": 0.01, "tail_ref": 2.0,
                "tail_fit": 0.05, "tail_power": 2.5, "tail_blend": True, "reseed_after": 3}

    def median_mad(self) -> tuple[float, float]:
        """Median and MAD of the current window (NaN when empty)."""
        values = self._buffer.unordered()
        if values.size == 0:
            return float("nan"), float("nan")
        center = median(values)
        return center, median(np.abs(values - center))

    def update(self, value: float, ts: datetime) -> Verdict:
        """Score the value against the recent median and MAD; a normal value (or a persisting new level) is learned."""
        if not is_finite(value):
            return self._skip(f"ignored non-finite value {value!r}")
        x = float(value)
        if self._n < self.grace_period or len(self._buffer) == 0:
            self._learn(x)
            if self._scale is not None and self.reseed_after is not None and self._n == self.reseed_after:
                self._reseed(self._scale)
            return self._warming(self._n, self.grace_period)
        center, mad = self.median_mad()
        if self.center_window is not None and len(self._buffer) > self.center_window:
            center = median(np.asarray(self._buffer.to_list()[-self.center_window:]))
        floor = self._step.floor(self.resolution)
        if mad == 0.0 and floor == 0.0 and x != center:
            # A constant window and no step learned yet: nothing tells how large a change is; the first one sets the step.
            self._run = 0
            self._over = False
            self._learn(x)
            return Verdict(False, 0.0, self.name, f"value {fmt(x)} is the first change from a constant {fmt(center)}; "
                                                  "its size is learned as the instrument's step")
        scale = max(MAD_TO_SIGMA * mad, floor) + self.eps
        score = abs(x - center) / scale
        over = score > self.threshold
        counted = not self.tail_blend or (MAD_TO_SIGMA * mad >= floor and not (over and self._over))
        self._over = over
        direction = "above" if x >= center else "below"
        detail = f"value {fmt(x)} is {score:.4g} MADs {direction} the rolling median {fmt(center)} (scale {fmt(scale)})"
        known = self._known.match(x, self.threshold, floor) if score > self.threshold else None
        if known is not None:
            level = self._switch(known, floor)
            self._learn(x)
            return Verdict(False, score, self.name, f"{detail}; back at level {fmt(level)}, which this series has held "
                                                    "before: a known change of state, baseline switched to it")
        bar = self._bar()
        if score > bar:
            self._run += 1
            if self._run == 1 and counted:
                self._tail.update(score)
            if self.relearn_after is not None and self._run >= self.relearn_after:
                self._leave(floor)
                self._reset()
                self._learn(x)
                detail += f"; {self.relearn_after} anomalies in a row: new level accepted, baseline rebuilt from here"
            elif bar > self.threshold and self._run == 1:
                detail += f"; threshold {fmt(bar)} follows this series' heavy tail"
            return Verdict(True, score, self.name, detail)
        self._run = 0
        self._learn(x)
        if counted:
            self._tail.update(score)
        return Verdict(False, score, self.name, detail)

    def _bar(self) -> float:
        """The score a value must pass: ``threshold_off`` while the previous value was anomalous, else the tail-adaptive threshold."""
        if self._run and self.threshold_off is not None:
            return self.threshold_off
        if self.tail_ref is None:
            return self.threshold
        if self.tail_fit is None:
            q = self._tail.quantile(self.tail_p)
        elif self.tail_blend:
            q = self._tail.blended(self.tail_p, self.tail_fit)
        else:
            q = self._tail.extrapolated(self.tail_p, self.tail_fit)
        return self.threshold * max(1.0, q / self.tail_ref) ** self.tail_power

    def _leave(self, floor: float) -> None:
        """Remember the level being left, if it was held for a whole window."""
        if len(self._buffer) == self.window:
            center, mad = self.median_mad()
            self._known.remember(center, mad, self.threshold, floor)

    def _switch(self, known: int, floor: float) -> float:
        """Make remembered level `known` the baseline, seeded so that its median and MAD are the remembered ones."""
        center, mad = self._known.pop(known)
        self._leave(floor)
        self._reset()
        self._fill(center, mad)
        return center

    def _reseed(self, scale: float) -> None:
        """After a gap, the window seeded around the values learned since, with at least the scale before the gap."""
        center, mad = self.median_mad()
        self._reset()
        self._fill(center, max(mad, scale))
        self._scale = None

    def _fill(self, center: float, mad: float) -> None:
        """An emptied window filled with values whose median and MAD are `center` and `mad`, counted as warmed up."""
        seeded = min(self.window, 3 * max(1, -(-self.grace_period // 3)))
        for k in range(seeded):
            self._buffer.append(center + (k % 3 - 1) * mad)
        self._n = seeded
        self._seeded = True

    def _learn(self, x: float) -> None:
        self._buffer.append(x)
        self._step.update(x)
        self._n += 1

    def relearn(self, gap_s: float | None = None) -> None:
        """Warm up again from the next value (`reseed_after` of them if the window was full, or seeded since it was
        last emptied); the learned step, known levels and tail are kept."""
        if self.reseed_after is not None and (len(self._buffer) == self.window or self._seeded):
            self._scale = self.median_mad()[1]
        self._reset()

    def _reset(self) -> None:
        self._buffer = RingBuffer(self.window)
        self._n = 0
        self._run = 0
        self._over = False
        self._seeded = False

    def state(self) -> dict[str, Any]:
        """The window, counts, step, known levels and tail histogram, as JSON for `from_state`."""
        return {"buffer": self._buffer.to_list(), "n": self._n, "run": self._run, "over": self._over,
                "step": self._step.state(), "levels": self._known.state(), "tail": self._tail.state(), "scale": self._scale,
                "seeded": self._seeded}

    def load_state(self, state: dict[str, Any]) -> None:
        """Resume from `state()`."""
        self._buffer = RingBuffer.from_list(self.window, state["buffer"])
        self._n = int(state["n"])
        self._run = int(state["run"])
        self._over = bool(state.get("over", False))
        self._step = StepEstimate()
        self._step.load_state(state.get("step"))
        self._known = KnownLevels(self.levels)
        self._known.load_state(state.get("levels"))
        self._tail = TailQuantile()
        self._tail.load_state(state.get("tail"))
        scale = state.get("scale")
        self._scale = None if scale is None else float(scale)
        self._seeded = bool(state.get("seeded", False))
