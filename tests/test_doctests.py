"""The examples in the docstrings run, and say what they print."""

import doctest
import importlib

import pytest


@pytest.mark.parametrize("name", ["graywave.kernels", "graywave.kernels.similarity", "graywave.records"])
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0
