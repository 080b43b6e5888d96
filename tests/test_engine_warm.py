"""The worker's compiled passes are made ready before its first batch (`processors.engine.warm`)."""

from __future__ import annotations

from processors.detection import detect_batch
from processors.engine import drift, flatline, rule_pass, spike_pass
from processors.engine.warm import compile_passes
from tests.test_plain_pass import CONFIG, RATE_STATIONS, normal_run


def test_compile_passes_makes_every_compiled_pass_ready_as_the_worker_calls_it() -> None:
    """Each pass the banks call (a batch, a relearn from Python) has its compiled signature after `compile_passes`, so
    the worker's first batch does not stop to compile."""
    compile_passes()
    for dispatcher in (spike_pass.run, spike_pass.relearn_row, spike_pass.sort_rows, drift._run, drift._relearn,
                       flatline._run, flatline._base_limit, rule_pass.run):
        assert dispatcher.signatures, f"{dispatcher.py_func.__qualname__} was not compiled"


def test_the_rules_pass_is_compiled_for_the_arrays_the_plain_pass_gives() -> None:
    """The plain pass calls the rules' pass with arrays of the types and layouts `compile_passes` compiled it for: a
    batch of normal readings adds no signature (a new one would be compiled inside the worker's batch)."""
    compile_passes()
    compiled = list(rule_pass.run.signatures)
    detect_batch(normal_run(30), {}, RATE_STATIONS, CONFIG, None, set())
    assert rule_pass.run.signatures == compiled
