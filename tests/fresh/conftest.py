"""Session-wide pieces of the fresh-environment checks: the wheelhouse, one copy of the
checkout, and one virtualenv per set of extras (created on first use, shared by the tests)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from tests.servers import REPO_ROOT

from .environments import Checkout, FreshVenv, Wheelhouse, copy_checkout

VenvFactory = Callable[[Sequence[str]], FreshVenv]


@pytest.fixture(scope="session")
def wheelhouse() -> Wheelhouse:
    return Wheelhouse.for_checkout(REPO_ROOT)


@pytest.fixture(scope="session")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Checkout:
    return copy_checkout(tmp_path_factory.mktemp("checkout"))


@pytest.fixture(scope="session")
def venv_with(tmp_path_factory: pytest.TempPathFactory, wheelhouse: Wheelhouse,
              checkout: Checkout) -> VenvFactory:
    """``venv_with(["demo", "fastapi"])``: the venv with exactly those extras of the checkout."""
    made: dict[tuple[str, ...], FreshVenv] = {}

    def venv(extras: Sequence[str]) -> FreshVenv:
        key = tuple(sorted(extras))
        if key not in made:
            folder = tmp_path_factory.mktemp("venv-" + ("-".join(key) or "bare"))
            made[key] = FreshVenv(folder / "venv", wheelhouse=wheelhouse).install(checkout, key)
        return made[key]

    return venv


@pytest.fixture
def user_folder(tmp_path: Path) -> Path:
    """An empty folder outside the checkout, where a user writes their own app."""
    return tmp_path
