"""The worker's garbage collector: its start-up heap frozen, collections rarer.

The worker keeps every series' detector state alive between batches (thousands of small objects
per station), and each batch allocates many short-lived ones. With Python's default thresholds
(700, 10, 10) a full collection comes every few batches and walks all of that live state again,
though none of it is garbage: in process, the detection step spent 19.7 µs a reading in the
collector (bench/detection_step.py, 2026-12-02). Freezing the heap after start-up takes the
imported modules and settings out of every scan, and larger thresholds make collections rarer;
reference cycles are still collected.
"""

from __future__ import annotations

import gc

import structlog

log = structlog.get_logger(__name__)


def tune_gc(thresholds: tuple[int, ...]) -> None:
    """Freeze what start-up allocated and set the collector's thresholds (three); none leaves the collector as it is."""
    if not thresholds:
        return
    if len(thresholds) != 3 or min(thresholds) < 1:
        raise ValueError(f"QUANTRAC_WORKER_GC_THRESHOLDS needs three positive integers (or []), got {list(thresholds)}")
    gc.collect()
    gc.freeze()
    gc.set_threshold(*thresholds)
    log.info("worker.gc_tuned", thresholds=list(thresholds), frozen_objects=gc.get_freeze_count())
