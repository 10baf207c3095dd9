"""The status package's modules: their ``__all__`` and their docstring examples."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["scalekit.status", "scalekit.status.commands", "scalekit.status.endpoint",
           "scalekit.status.html", "scalekit.status.snapshot", "scalekit.status.tables",
           "scalekit.status.text"]


@pytest.mark.parametrize("name", MODULES)
def test_module_all_names_exist(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__all__ and all(hasattr(module, member) for member in module.__all__)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    failed, _ = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert failed == 0
