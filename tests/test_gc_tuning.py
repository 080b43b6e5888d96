"""The worker's collector settings: applied, left alone when empty, refused when malformed."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from processors.gc_tuning import tune_gc


@pytest.fixture
def restored_gc() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


def test_thresholds_are_set_and_the_start_up_heap_frozen(restored_gc: None) -> None:
    tune_gc((20000, 50, 100))
    assert gc.get_threshold() == (20000, 50, 100)
    assert gc.get_freeze_count() > 0


def test_no_thresholds_leave_the_collector_as_it_is(restored_gc: None) -> None:
    before = gc.get_threshold()
    tune_gc(())
    assert gc.get_threshold() == before


@pytest.mark.parametrize("bad", [(700, 10), (0, 10, 10)])
def test_malformed_thresholds_name_the_setting(restored_gc: None, bad: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="QUANTRAC_WORKER_GC_THRESHOLDS"):
        tune_gc(bad)
