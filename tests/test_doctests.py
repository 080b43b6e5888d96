"""The examples in the detectors' docstrings run, and give what they show (issue 16, point 3).

Every module of `processors.detectors` and `processors.incident` is run through `doctest`; a
module whose examples fail fails here, so an example cannot drift from the code it documents.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import processors.detectors

MODULES = sorted([f"processors.detectors.{m.name}" for m in pkgutil.iter_modules(processors.detectors.__path__)]
                 + ["processors.detectors", "processors.incident"])
WITH_EXAMPLES = {"base", "drift", "flatline", "levels", "multivariate", "spike", "stats", "tail", "incident"}
"""Modules whose docstrings hold examples: losing them all would pass silently otherwise."""


@pytest.mark.parametrize("name", MODULES)
def test_the_docstring_examples_run(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples of {name} failed (see the output above)"
    if name.rsplit(".", 1)[-1] in WITH_EXAMPLES:
        assert result.attempted > 0, f"{name} lost its docstring examples"
