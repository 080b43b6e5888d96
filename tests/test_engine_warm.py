"""The worker's compiled passes are made ready before its first batch (`processors.engine.warm`)."""

from __future__ import annotations

from dataclasses import replace

from processors import copy_binary
from processors.detection import detect_batch
from processors.engine import drift, flatline, rule_pass, spike_pass
from processors.engine.warm import compile_passes
from quantrac.batch_columns import batch_columns
from tests.test_plain_pass import CONFIG, RATE_STATIONS, normal_run


def test_compile_passes_makes_every_compiled_pass_ready_as_the_worker_calls_it() -> None:
    """Each pass the banks call (a batch, a relearn from Python) has its compiled signature after `compile_passes`, so
    the worker's first batch does not stop to compile."""
    compile_passes()
    for dispatcher in (spike_pass.run, spike_pass.relearn_row, spike_pass.sort_rows, drift._run, drift._relearn,
                       flatline._run, flatline._base_limit, rule_pass.run, copy_binary._gather):
        assert dispatcher.signatures, f"{dispatcher.py_func.__qualname__} was not compiled"


def test_the_batch_passes_are_compiled_for_the_arrays_the_worker_gives(plain_outcomes: list[bool]) -> None:
    """The plain pass and the COPY buffer call their compiled loops with arrays of the types and layouts
    `compile_passes` compiled them for: batches of normal readings add no signature (a new one would be compiled inside
    the worker's batch, 10-30 s). The second batch takes the plain pass with the windows of the first, and the lateness
    is whole seconds, as `DetectionConfig.from_settings` gives it."""
    compile_passes()
    compiled = list(rule_pass.run.signatures), list(copy_binary._gather.signatures)
    config = replace(CONFIG, lateness_s=int(CONFIG.lateness_s))
    first, second = normal_run(30), normal_run(10, start=30)
    states, _, _ = detect_batch(first, {}, RATE_STATIONS, config, None, set())
    detect_batch(second, states, RATE_STATIONS, config, None, set())
    batch = batch_columns(first + second)
    copy_binary.copy_buffer(batch, list(range(len(batch.series_keys))))
    assert plain_outcomes[-1], "the second batch did not take the plain pass"
    assert (rule_pass.run.signatures, copy_binary._gather.signatures) == compiled
