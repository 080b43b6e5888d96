"""Slow drifts: a two-sided CUSUM of the deviation from a learned daily profile, against an EWMA baseline."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from processors.detectors.base import Detector, StepEstimate, Verdict, epoch_seconds, fmt, is_finite
from processors.detectors.stats import EWVar

__all__ = ["CusumDrift"]

DAY_S = 86400.0
BIN_SPREAD_SHARE = 0.5
"""Share of the usual spread at this time of day that floors the scale: enough that the day's noise, judged
against a baseline that remembers the night, does not sum into a drift; small enough that a series with
the same noise all day keeps its long-run standard deviation."""
MAX_RHO = 0.5
"""Cap on the autocorrelation used: a drift is persistent itself, and an uncapped estimate learned from it would hide it."""


class CusumDrift(Detector):
    """Two-sided CUSUM drift detector over the deviation from the usual daily pattern.

    Real series follow a daily pattern (temperature, production shifts, flow) and their noise
    is autocorrelated (analysers smooth). Against a slow baseline the pattern looks like a
    drift every evening, and a CUSUM that takes correlated values as independent adds up
    ordinary wander into alarms. So the detector:

    - learns the pattern: a profile of ``season_bins`` bins over a period of ``season_s``
      seconds of event time, each the exponentially weighted mean of the values in its bin;
      the deviation ``y = x - profile[bin]`` is what the CUSUM watches;
    - standardises ``y`` against its exponentially weighted baseline with the long-run standard
      deviation, ``z = (y - mean) / (max(std * sqrt((1 + rho) / (1 - rho)), bin_std, resolution) + eps)``, where
      ``rho`` is the learned lag-1 autocorrelation of ``y``, capped at 0.5 (``decorrelate=False``: ``rho = 0``), and
      ``bin_std`` half the usual spread of ``y`` at this time of day (an EW variance per bin, like the profile). A
      series whose noise depends on the hour (a flow at exactly 0 by night, 40 +- 3 by day) is judged at
      06:00 against the day's spread, not against the night's, which the slow baseline still remembers;
    - accumulates ``S+ <- max(0, S+ + z - k)`` and ``S- <- max(0, S- - z - k)``, with ``z`` clipped
      to ``[-clip, clip]``, and never to more than ``h / 2``, so that one reading, however far out,
      cannot make a drift by itself (heavy-tailed noise has such readings; a spike is the spike
      detector's alarm); the value is anomalous when ``max(S+, S-) > h``, and the sums are then reset.

    Only non-anomalous values update the profile and the baseline. No verdict is anomalous
    before ``grace_period`` deviations and, with a profile, one whole period of event time
    have been learned. If ``relearn_after`` consecutive values are anomalous, the baseline is
    rebuilt from the current deviation (the profile is kept).

    Parameters
    ----------
    alpha
        EWMA weight of the newest value for the baseline mean, variance and autocorrelation;
        small values make the baseline slow, so that a drift shows up against it.
    k
        Slack in (long-run) standard deviations subtracted at each step; drifts smaller than
        ``k`` are not accumulated.
    h
        Decision threshold on the cumulative sums.
    grace_period
        Number of deviations learned before any verdict can be anomalous.
    eps
        Added to the standard deviation (about the sensor resolution).
    relearn_after
        Consecutive anomalies after which the baseline is rebuilt; None never rebuilds.
    season_s
        Period of the learned profile in seconds (a day by default); None learns no profile
        (the CUSUM watches the value itself).
    season_bins
        Number of equal bins the period is cut into (48: half-hours of the day).
    season_alpha
        EW weight of a new value in its profile bin.
    decorrelate
        Scale by the long-run standard deviation of autocorrelated deviations (see above).
    clip
        Largest standardised deviation one value adds to the sums (None: ``h / 2``, which any value obeys).
    resolution
        Smallest step the instrument reports; floors the standard deviation, so that a quantised
        series whose values mostly repeat does not sum tiny deviations into a drift. None: learned
        from the data (half the smallest non-zero change between consecutive learned values).
    learn_clip
        Bounded influence (Huber) on the daily profile: a value learned farther than ``learn_clip`` times the
        scale from its bin's usual level is learned as if it lay at ``learn_clip`` on the same side (the
        scale: the larger of the bin's spread, the deviations' standard deviation and the resolution; once the
        bin holds two values). An incident the detector has taken as the new normal (a spill of three times the
        flow, after its alarms rebuilt the baseline) then cannot teach that hour of the day a level and a spread
        that hide the next incident at the same hour. The instrument's step still learns the value itself.
        None: every learned value counts in full.

    Examples
    --------
    >>> from datetime import datetime, timedelta, timezone
    >>> t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    >>> det = CusumDrift(alpha=0.01, k=0.5, h=5.0, grace_period=20, season_s=None, decorrelate=False)
    >>> for i, x in enumerate([1.0, -1.0] * 50):
    ...     _ = det.update(x, t0 + timedelta(minutes=i))
    >>> [det.update(2.0, t0 + timedelta(minutes=100 + i)).is_anomaly for i in range(4)]
    [False, False, False, True]

    With a daily profile, a day of values is learned before any verdict:

    >>> det = CusumDrift(grace_period=10)
    >>> det.update(1.0, t0).detail
    'warming up (0/10 samples, 0/24 h of the daily profile)'
    """

    name = "drift"

    def __init__(
        self,
        alpha: float = 0.01,
        k: float = 0.5,
        h: float = 8.0,
        grace_period: int = 60,
        eps: float = 1e-9,
        relearn_after: int | None = None,
        season_s: float | None = DAY_S,
        season_bins: int = 48,
        season_alpha: float = 0.05,
        decorrelate: bool = True,
        clip: float | None = None,
        resolution: float | None = None,
        seasonal_spread: bool = True,
        learn_clip: float | None = None,
    ) -> None:
        if not 0.0 < alpha <= 1.0 or k < 0 or h <= 0 or grace_period < 0 or eps < 0:
            raise ValueError("0 < alpha <= 1, k >= 0, h > 0, grace_period >= 0 and eps >= 0 are required")
        if (season_s is not None and season_s <= 0) or season_bins < 1 or not 0.0 < season_alpha <= 1.0:
            raise ValueError("season_s > 0 (or None), season_bins >= 1 and 0 < season_alpha <= 1 are required")
        if learn_clip is not None and learn_clip <= 0:
            raise ValueError("learn_clip > 0 is required")
        self.alpha = alpha
        self.k = k
        self.h = h
        self.grace_period = grace_period
        self.eps = eps
        self.relearn_after = relearn_after
        self.season_s = season_s
        self.season_bins = season_bins
        self.season_alpha = season_alpha
        self.decorrelate = decorrelate
        self.clip = clip
        self.resolution = resolution
        self.seasonal_spread = seasonal_spread
        self.learn_clip = learn_clip
        self._step = StepEstimate()
        self._reset_baseline()
        self._pos = 0.0
        self._neg = 0.0
        self._run = 0
        self._profile = [0.0] * season_bins
        self._profile_n = [0] * season_bins
        self._profile_var = [0.0] * season_bins
        self._first: float | None = None

    @classmethod
    def _unit_test_params(cls) -> dict[str, Any]:
        return {"alpha": 0.05, "k": 0.5, "h": 4.0, "grace_period": 5, "eps": 1e-6, "relearn_after": 10,
                "season_s": 3600.0, "season_bins": 6, "season_alpha": 0.2, "decorrelate": True,
                "clip": 4.0, "resolution": None, "learn_clip": 3.0}

    def _reset_baseline(self) -> None:
        self._baseline = EWVar(self.alpha)
        self._lag_cov = 0.0
        self._prev: float | None = None

    @property
    def sums(self) -> tuple[float, float]:
        """The upper and lower cumulative sums."""
        return self._pos, self._neg

    @property
    def profile(self) -> list[float]:
        """The learned mean of each bin of the period (the usual value at that time of day)."""
        return list(self._profile)

    @property
    def rho(self) -> float:
        """The learned lag-1 autocorrelation of the deviations, within [0, MAX_RHO] (0 without ``decorrelate``)."""
        var = self._baseline.var
        if not self.decorrelate or var <= 0.0:
            return 0.0
        return min(MAX_RHO, max(0.0, self._lag_cov / var))

    def _bin(self, t: float) -> int:
        if self.season_s is None:
            return 0
        return min(self.season_bins - 1, int((t % self.season_s) / self.season_s * self.season_bins))

    def _expected(self, b: int) -> float:
        return self._profile[b] if self.season_s is not None and self._profile_n[b] else 0.0

    def _bin_std(self, b: int) -> float:
        if not self.seasonal_spread or self.season_s is None or self._profile_n[b] < 2:
            return 0.0
        return BIN_SPREAD_SHARE * math.sqrt(self._profile_var[b])

    def update(self, value: float, ts: datetime) -> Verdict:
        """Add the value to the drift sums and say whether either crossed `h` (a slow shift of the level)."""
        if not is_finite(value):
            return self._skip(f"ignored non-finite value {value!r}")
        x = float(value)
        t = epoch_seconds(ts)
        if self._first is None:
            self._first = t
        b = self._bin(t)
        learned_s = t - self._first
        if self._baseline.n < self.grace_period or self._baseline.n == 0 or (
                self.season_s is not None and learned_s < self.season_s):
            self._learn(x, b)
            return self._warming_up(learned_s)
        expected = self._expected(b)
        y = x - expected
        mean = self._baseline.mean
        rho = self.rho
        std = max(math.sqrt(self._baseline.var) * math.sqrt((1.0 + rho) / (1.0 - rho)), self._bin_std(b),
                  self._step.floor(self.resolution))
        if std == 0.0:
            # Only constant values learned and no step known: no scale to judge against; learn this one.
            self._learn(x, b)
            return Verdict(False, 0.0, self.name, f"value {fmt(x)}: no variability learned yet")
        z = (y - mean) / (std + self.eps)
        cap = self.h / 2.0 if self.clip is None else min(self.clip, self.h / 2.0)
        step = min(cap, max(-cap, z))
        pos = max(0.0, self._pos + step - self.k)
        neg = max(0.0, self._neg - step - self.k)
        score = max(pos, neg)
        side = "upward" if pos >= neg else "downward"
        usual = f"the baseline mean {fmt(mean)}" if self.season_s is None else \
            f"the usual level {fmt(mean + expected)} at this time of day"
        detail = (f"{side} CUSUM {score:.4g} (threshold {fmt(self.h)}); value {fmt(x)} is {z:+.3g} long-run std "
                  f"from {usual} (std {fmt(std)}, autocorrelation {rho:.2f})")
        if score > self.h:
            self._pos = self._neg = 0.0
            self._run += 1
            if self.relearn_after is not None and self._run >= self.relearn_after:
                self._reset_baseline()
                self._baseline.update(y)
                self._run = 0
                detail += f"; {self.relearn_after} alarms in a row, baseline rebuilt from here"
            return Verdict(True, score, self.name, detail)
        self._pos, self._neg = pos, neg
        self._run = 0
        self._learn(x, b)
        return Verdict(False, score, self.name, detail)

    def relearn(self, gap_s: float | None = None) -> None:
        """After a gap longer than the period: rebuild the baseline and clear the sums.

        The baseline is slow (``alpha``) and the daily profile learns over a period, so a gap shorter
        than that (an hour's outage) does not make them or the evidence summed so far stale, and
        rebuilding would blind the detector for ``grace_period`` values: only the lag is forgotten.
        The daily profile and the learned step are always kept.
        """
        if gap_s is None or gap_s >= (self.season_s or DAY_S):
            self._reset_baseline()
            self._pos = self._neg = 0.0
            self._run = 0
        else:
            self._prev = None

    def _learn(self, x: float, b: int) -> None:
        """Learn ``x``: its deviation from its bin into the baseline, then ``x`` into its bin.

        The deviation is taken before the bin learns ``x`` (an honest prediction error), and only
        once the bin has a value, so the baseline's spread is that of real deviations.
        """
        self._step.update(x)
        if self.season_s is None:
            self._learn_deviation(x)
            return
        x = self._bounded(x, b)
        if self._profile_n[b]:
            self._learn_deviation(x - self._profile[b])
        self._profile_n[b] += 1
        a = max(self.season_alpha, 1.0 / self._profile_n[b])
        d = x - self._profile[b]
        self._profile[b] += a * d
        self._profile_var[b] = (1.0 - a) * (self._profile_var[b] + a * d * d)

    def _bounded(self, x: float, b: int) -> float:
        """``x`` pulled in to ``learn_clip`` scales from bin ``b``'s usual level (``x`` itself when nearer, or no clip)."""
        if self.learn_clip is None or self._profile_n[b] < 2:
            return x
        scale = max(math.sqrt(self._profile_var[b]), math.sqrt(self._baseline.var), self._step.floor(self.resolution))
        reach = self.learn_clip * scale
        d = x - self._profile[b]
        return self._profile[b] + math.copysign(reach, d) if abs(d) > reach else x

    def _learn_deviation(self, y: float) -> None:
        d = y - self._baseline.mean
        if self._prev is not None:
            a = max(self.alpha, 1.0 / self._baseline.n)
            self._lag_cov += a * (d * self._prev - self._lag_cov)
        self._baseline.update(y)
        self._prev = y - self._baseline.mean

    def _warming_up(self, learned_s: float) -> Verdict:
        if self.season_s is None:
            return self._warming(self._baseline.n, self.grace_period)
        hours = f"{min(learned_s, self.season_s) / 3600:.3g}/{self.season_s / 3600:.3g} h"
        return Verdict(False, 0.0, self.name,
                       f"warming up ({self._baseline.n}/{self.grace_period} samples, {hours} of the daily profile)")

    def state(self) -> dict[str, Any]:
        """What it learned (baseline, sums, daily profile, step), as JSON for `from_state`."""
        return {"baseline": self._baseline.state(), "lag_cov": self._lag_cov, "prev": self._prev,
                "pos": self._pos, "neg": self._neg, "run": self._run,
                "profile": list(self._profile), "profile_n": list(self._profile_n),
                "profile_var": list(self._profile_var), "first": self._first,
                "step": self._step.state()}

    def load_state(self, state: dict[str, Any]) -> None:
        """Load a state; one saved before the profile existed starts its profile (and warm-up period) afresh."""
        self._baseline = EWVar(self.alpha)
        self._baseline.load_state(state["baseline"])
        self._lag_cov = float(state.get("lag_cov", 0.0))
        self._prev = None if state.get("prev") is None else float(state["prev"])
        self._pos = float(state["pos"])
        self._neg = float(state["neg"])
        self._run = int(state["run"])
        self._step = StepEstimate()
        self._step.load_state(state.get("step"))
        profile = state.get("profile")
        if profile is not None and len(profile) == self.season_bins:
            self._profile = [float(p) for p in profile]
            self._profile_n = [int(n) for n in state["profile_n"]]
            spread = state.get("profile_var")
            self._profile_var = [float(v) for v in spread] if spread and len(spread) == self.season_bins else \
                [0.0] * self.season_bins
            self._first = None if state.get("first") is None else float(state["first"])
        else:
            self._profile = [0.0] * self.season_bins
            self._profile_n = [0] * self.season_bins
            self._profile_var = [0.0] * self.season_bins
            self._first = None
