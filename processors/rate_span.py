"""Rate of change over a span: a robust level now against a robust level about a span ago.

Dividing the change between two consecutive readings by the minutes between them makes noise at a
fast rate look like a huge rate per minute (0.05 pH of noise between readings 2.75 s apart is
1.1 pH/min). Here a parameter's recent readings are folded into `BINS_PER_SPAN` time bins per span
(count, sum of times, sum of values: a state of at most `KEEP_BINS` small lists, whatever the rate).
The level *now* is the median of the bin means of the last quarter span, the level *then* the
median of the bin means at least three quarters of a span old (and at most a span and a half). The
rate is their difference over the time between them (about a span). A station that reports once a
span gets the change between consecutive readings, as before; one that reports every second gets
the change of well-averaged levels, so its noise does not count. A single spike moves one bin, and a
median of bins ignores it unless it is the only bin.

After a gap no bin is old enough, so nothing is judged until a span of new data has come: the rule
relearns by itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

BINS_PER_SPAN = 12
HEAD_MIN_AGE_BINS = 9
"""A bin at least this many bins old (three quarters of a span) counts towards the level *then*."""
TAIL_MAX_AGE_BINS = 3
"""A bin at most this many bins old (a quarter span) counts towards the level *now*."""
KEEP_BINS = 18
"""Bins older than this (a span and a half) are dropped."""


@dataclass(frozen=True)
class Levels:
    """The robust level a span ago and now, with their times (epoch seconds)."""

    from_t: float
    from_level: float
    to_t: float
    to_level: float

    @property
    def minutes(self) -> float:
        """Minutes between the two levels."""
        return (self.to_t - self.from_t) / 60.0

    @property
    def rate_per_min(self) -> float:
        """The size of the change per minute, either direction."""
        return abs(self.to_level - self.from_level) / self.minutes


def add(bins: list[list[Any]], t: float, value: float, span_s: float) -> list[list[Any]]:
    """`bins` after a valid reading at `t` (in order); each bin is `[index, count, sum_t, sum_value]`."""
    width = span_s / BINS_PER_SPAN
    index = int(t // width)
    kept = bins[:] if not bins or bins[0][0] >= index - KEEP_BINS else [b for b in bins if b[0] >= index - KEEP_BINS]
    if kept and kept[-1][0] == index:
        last = kept[-1]
        kept[-1] = [index, last[1] + 1, last[2] + t, last[3] + value]
    else:
        kept.append([index, 1, t, value])
    return kept


def levels(bins: list[list[Any]]) -> Levels | None:
    """The level then and now, or None while no bin is old enough (warming up, or after a gap)."""
    if not bins:
        return None
    newest = bins[-1][0]
    if bins[0][0] > newest - HEAD_MIN_AGE_BINS:
        return None
    head = [b for b in bins if b[0] <= newest - HEAD_MIN_AGE_BINS]
    tail = [b for b in bins if b[0] >= newest - TAIL_MAX_AGE_BINS]
    return Levels(from_t=sum(b[2] / b[1] for b in head) / len(head), from_level=_median([b[3] / b[1] for b in head]),
                  to_t=sum(b[2] / b[1] for b in tail) / len(tail), to_level=_median([b[3] / b[1] for b in tail]))


def _median(values: list[float]) -> float:
    """`statistics.median` of a non-empty list, without its generality."""
    values.sort()
    half = len(values) // 2
    return values[half] if len(values) % 2 else (values[half - 1] + values[half]) / 2
