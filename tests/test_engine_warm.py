"""The worker's compiled passes are made ready before its first batch (`processors.engine.warm`)."""

from __future__ import annotations

from processors.engine import drift, flatline, spike_pass
from processors.engine.warm import compile_passes


def test_compile_passes_makes_every_compiled_pass_ready_as_the_worker_calls_it() -> None:
    """Each pass the banks call (a batch, a relearn from Python) has its compiled signature after `compile_passes`, so
    the worker's first batch does not stop to compile."""
    compile_passes()
    for dispatcher in (spike_pass.run, spike_pass.relearn_row, spike_pass.sort_rows, drift._run, drift._relearn,
                       flatline._run, flatline._base_limit):
        assert dispatcher.signatures, f"{dispatcher.py_func.__qualname__} was not compiled"
