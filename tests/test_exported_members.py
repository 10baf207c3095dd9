"""The public surface is curated: ``__all__`` lists exactly what a module offers."""

from __future__ import annotations

import importlib
import types

import pytest

import scalekit

# Dunder names that are part of the package's public face.
INCLUDED_PRIVATE_MEMBERS = {"__version__"}


def test_top_level_all_matches_the_public_names() -> None:
    public = sorted(
        name for name, value in vars(scalekit).items()
        if (not name.startswith("_") or name in INCLUDED_PRIVATE_MEMBERS)
        and not isinstance(value, types.ModuleType)  # submodules become attributes on import
        and name != "annotations"  # from __future__ import annotations
    )
    assert sorted(scalekit.__all__) == sorted(set(public) - INCLUDED_PRIVATE_MEMBERS)
    assert scalekit.__all__ == sorted(scalekit.__all__, key=isort_style), "keep __all__ sorted"


def isort_style(name: str) -> tuple[int, str]:
    """Ruff's RUF022 order: CONSTANTS, then Classes, then functions, each alphabetical."""
    return (0 if name.isupper() else 1 if name[:1].isupper() else 2, name)


def test_exported_names_are_scalekit_objects() -> None:
    for name in scalekit.__all__:
        value = getattr(scalekit, name)
        module = getattr(value, "__module__", "scalekit")
        assert module.startswith("scalekit"), f"{name} comes from {module}"


@pytest.mark.parametrize("module_name", [
    "scalekit.asgi", "scalekit.cli", "scalekit.config", "scalekit.context", "scalekit.demo",
    "scalekit.errors", "scalekit.extras", "scalekit.gunicorn_conf", "scalekit.metrics.instruments", "scalekit.loader",
    "scalekit.messages", "scalekit.metrics", "scalekit.metrics.layer", "scalekit.pipeline", "scalekit.runtime",
    "scalekit.wsgi",
])
def test_module_all_names_exist(module_name: str) -> None:
    module = importlib.import_module(module_name)
    assert module.__all__, f"{module_name} declares no __all__"
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert missing == []
    assert len(set(module.__all__)) == len(module.__all__)
