"""The docstring examples of the command line and the reports run (those not marked ``+SKIP``)."""

import doctest
import importlib

import pytest


@pytest.mark.parametrize("module", ["tomoflow.cli._app", "tomoflow.report", "tomoflow.io.output", "tomoflow.errors",
                                    "tomoflow._checks", "tomoflow.io.lock"])
def test_docstring_examples(module):
    mod = importlib.import_module(module)
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, report=True)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples of {module} failed (see above)"
