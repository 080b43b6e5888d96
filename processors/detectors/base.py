"""Shared pieces of the streaming detectors: the verdict, the detector base and a ring buffer."""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, ClassVar, Literal, Self

import numpy as np

__all__ = ["Detector", "RingBuffer", "StepEstimate", "Verdict", "epoch_seconds", "fmt", "median"]


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a detector concluded about one value.

    Parameters
    ----------
    is_anomaly
        True when the value is anomalous; never True during warm-up.
    score
        Larger means more anomalous; on the same scale as the detector's threshold.
    kind
        Name of the detector that produced the verdict, e.g. ``"spike"``.
    detail
        Human-readable reason.

    Examples
    --------
    >>> Verdict(False, 0.4, "spike", "value 1.0 is 0.4 MADs above the rolling median 0.9").is_anomaly
    False
    """

    is_anomaly: bool
    score: float
    kind: str
    detail: str


def fmt(x: float) -> str:
    """Format a number compactly for a verdict's detail."""
    return f"{x:.4g}"


def median(values: np.ndarray) -> float:
    """The median of a non-empty 1-d array, equal to ``np.median`` but without its overhead.

    Examples
    --------
    >>> median(np.array([3.0, 1.0, 4.0, 1.5]))
    2.25
    """
    n = values.size
    half = n // 2
    if n % 2:
        return float(np.partition(values, half)[half])
    part = np.partition(values, (half - 1, half))
    return float((part[half - 1] + part[half]) / 2.0)


def epoch_seconds(ts: datetime) -> float:
    """POSIX seconds of a timezone-aware timestamp; naive timestamps are refused."""
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise ValueError("timestamp has no UTC offset")
    return (ts - datetime(1970, 1, 1, tzinfo=timezone.utc)).total_seconds()


_PARAM_NAMES: dict[type, tuple[str, ...]] = {}


def _param_names(cls: type) -> tuple[str, ...]:
    """The hyperparameters of a detector class: its constructor's arguments, looked up once (the worker asks for
    every bank row it builds, and `inspect.signature` costs about 10 µs a call)."""
    names = _PARAM_NAMES.get(cls)
    if names is None:
        names = _PARAM_NAMES[cls] = tuple(name for name in inspect.signature(cls.__init__).parameters  # type: ignore[misc]  # a class's __init__, unbound
                                          if name != "self")
    return names


class Parametrised:
    """Hyperparameters stored under their own names, so that a clone can be rebuilt from the signature."""

    def _get_params(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _param_names(type(self))}

    def clone(self) -> Self:
        """A fresh instance with the same hyperparameters and no learned state."""
        return type(self)(**self._get_params())

    def state(self) -> dict[str, Any]:
        """The learned state as a plain JSON-serialisable dict."""
        raise NotImplementedError

    def load_state(self, state: dict[str, Any]) -> None:
        """Replace the learned state with ``state`` (as returned by :meth:`state`)."""
        raise NotImplementedError

    @classmethod
    def from_state(cls, state: dict[str, Any], **params: Any) -> Self:
        """Build an instance from hyperparameters and a saved state."""
        obj = cls(**params)
        obj.load_state(state)
        return obj

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._get_params().items())
        return f"{type(self).__name__}({args})"


class Detector(Parametrised):
    """Base of the streaming detectors.

    Subclasses implement :meth:`update` (score first, then learn only non-anomalous
    values), :meth:`state` and :meth:`load_state`, and set ``name``.
    ``input_kind`` says whether :meth:`update` takes a float or a vector of named values.
    """

    name: ClassVar[str]
    input_kind: ClassVar[Literal["scalar", "vector"]] = "scalar"
    restart_only: ClassVar[frozenset[str]] = frozenset()
    """Hyperparameters that only change how the detector starts again after a gap, not what it learns: a change of
    them keeps the learned state (they are left out of `processors.detection.Plan.key`)."""

    def update(self, value: Any, ts: datetime) -> Verdict:
        """Score ``value`` observed at ``ts``, learn it unless anomalous, and return the verdict."""
        raise NotImplementedError

    @classmethod
    def _unit_test_params(cls) -> dict[str, Any]:
        """Constructor keyword arguments used by the contract tests."""
        return {}

    def relearn(self, gap_s: float | None = None) -> None:
        """Forget the short-term baseline after a data gap of `gap_s` seconds, keeping what describes the instrument.

        The default forgets everything learned; detectors override it to keep, e.g., the learned
        resolution or a daily profile, which a gap does not make stale.
        """
        self.load_state(self.clone().state())

    def _skip(self, why: str) -> Verdict:
        return Verdict(False, 0.0, self.name, why)

    def _warming(self, n: int, grace_period: int) -> Verdict:
        return Verdict(False, 0.0, self.name, f"warming up ({n}/{grace_period} samples)")


def is_finite(value: Any) -> bool:
    """True for a real number that is neither NaN nor infinite."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) and math.isfinite(value)


class RingBuffer:
    """Fixed-capacity FIFO of floats backed by a numpy array.

    Parameters
    ----------
    capacity
        Maximum number of values kept; appending to a full buffer drops the oldest.

    Examples
    --------
    >>> rb = RingBuffer(3)
    >>> for x in (1.0, 2.0, 3.0, 4.0):
    ...     rb.append(x)
    >>> rb.to_list()
    [2.0, 3.0, 4.0]
    """

    __slots__ = ("capacity", "_data", "_start", "_size")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._data = np.zeros(capacity, dtype=np.float64)
        self._start = 0
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def append(self, x: float) -> None:
        """Add ``x``, dropping the oldest value when full."""
        if self._size < self.capacity:
            self._data[(self._start + self._size) % self.capacity] = x
            self._size += 1
        else:
            self._data[self._start] = x
            self._start = (self._start + 1) % self.capacity

    def unordered(self) -> np.ndarray:
        """The stored values in storage order (a read-only view; order is not chronological)."""
        view = self._data[: self._size] if self._size < self.capacity else self._data
        view = view.view()
        view.flags.writeable = False
        return view

    def to_list(self) -> list[float]:
        """The stored values, oldest first, as plain floats."""
        idx = (self._start + np.arange(self._size)) % self.capacity
        return self._data[idx].tolist()

    @classmethod
    def from_list(cls, capacity: int, values: list[float]) -> RingBuffer:
        """A buffer holding the last ``capacity`` of ``values`` (oldest first)."""
        rb = cls(capacity)
        for x in values[-capacity:]:
            rb.append(float(x))
        return rb


class StepEstimate:
    """The instrument's resolution learned from data: the smallest non-zero change between consecutive values.

    A quantised series (pH reported to 0.01, counts) has a median absolute deviation of 0 whenever
    most values repeat; any scale estimate must then be floored by the smallest step the instrument
    can report, or any change scores ~1e9. A configured resolution wins (`floor(configured)`); without
    one, half the learned step is used: the smallest change seen is a multiple of the true step (a
    series alternating between two values 2 apart shows a step of 2 whatever its instrument), so it
    is an over-estimate, and half a step is the largest rounding error of a reading. Changes below
    ``1e-9`` relative to the value are float noise, not steps. On a continuous series the learned
    step is tiny and floors nothing.

    Examples
    --------
    >>> s = StepEstimate()
    >>> for x in (7.0, 7.0, 7.01, 7.0, 7.02):
    ...     s.update(x)
    >>> round(s.step, 6), round(s.floor(None), 6), s.floor(0.05)
    (0.01, 0.005, 0.05)
    """

    __slots__ = ("step", "prev")

    def __init__(self) -> None:
        self.step: float | None = None
        self.prev: float | None = None

    def update(self, x: float) -> None:
        """Learn from the next value: a smaller non-zero change than any seen is the new step."""
        if self.prev is not None:
            d = abs(x - self.prev)
            if d > 1e-9 * max(1.0, abs(x)) and (self.step is None or d < self.step):
                self.step = d
        self.prev = x

    def floor(self, configured: float | None) -> float:
        """The floor of a scale: the configured resolution, else half the learned step (0.0 before any change)."""
        if configured is not None:
            return configured
        return (self.step or 0.0) / 2.0

    def state(self) -> dict[str, Any]:
        """The learned step and the last value, as JSON."""
        return {"step": self.step, "prev": self.prev}

    def load_state(self, state: dict[str, Any] | None) -> None:
        """Resume from `state()` (None: nothing learned yet)."""
        state = state or {}
        self.step = None if state.get("step") is None else float(state["step"])
        self.prev = None if state.get("prev") is None else float(state["prev"])
