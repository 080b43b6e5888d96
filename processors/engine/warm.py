"""The compiled passes made ready before the worker takes its first batch.

numba compiles a pass at its first call, about 17 s for the three on this machine, or loads it from
its on-disk cache (`__pycache__` beside the source, `NUMBA_CACHE_DIR` in the image) in well under a
second. Compiled in the first batch, that time would block the worker's event loop, and with it the
Kafka consumer's heartbeats; so the worker calls `compile_passes` before it joins its group.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import structlog

from processors.copy_binary import gather
from processors.detectors import CusumDrift, Flatline, RobustSpike
from processors.engine import rule_pass
from processors.engine.drift import DriftBank
from processors.engine.flatline import FlatlineBank
from processors.engine.spike import SpikeBank

log = structlog.get_logger(__name__)


def compile_passes() -> float:
    """Run each compiled bank on one value and one relearn, as the worker calls them, the rules' pass on no station and
    the COPY buffer's gather on one byte; the seconds it took."""
    began = time.monotonic()
    rule_pass.run_batch(*_no_station())
    gather(np.zeros(1, np.uint8), np.zeros(1, np.int64), np.ones(1, np.int64))
    row, gap = np.zeros(1, dtype=np.int64), np.full(1, np.nan)
    for bank in (SpikeBank.from_detectors([RobustSpike()]), DriftBank.from_detectors([CusumDrift()]),
                 FlatlineBank.from_detectors([Flatline()])):
        bank.run_batch(row, np.ones(1), np.full(1, 1.7e9), gap)
        bank.relearn(row, np.full(1, 3600.0))
    seconds = time.monotonic() - began
    log.info("worker.passes_compiled", seconds=round(seconds, 2),
             source="compiled (the first start after an install)" if seconds > 2.0 else "numba's on-disk cache")
    return seconds


def _no_station() -> tuple[Any, ...]:
    """`rule_pass.run`'s arguments for a batch of no station, in the dtypes `processors.plain_pass` gives."""
    i1, i2, f1, f2 = (np.zeros(0, np.int64), np.zeros((0, 2), np.int64), np.zeros(0), np.zeros((0, 2)))
    return (np.zeros((0, 4), np.int64), np.zeros((0, 3)), 600.0, 0.5, i1, f1, f1, np.zeros(0, np.bool_), f2, i1,
            np.zeros(1, np.int64), np.zeros((0, 5)), np.zeros((0, 3), np.bool_), np.zeros(1, np.int64),
            np.zeros((0, 5), np.int64), f2, np.zeros(1, np.int64), i2, f2, np.zeros(1, np.int64), i1,
            np.zeros((0, 5), np.int64), f2, np.zeros(1, np.int64), i1, i2, f2, np.zeros(0, np.bool_), f1, f1)
