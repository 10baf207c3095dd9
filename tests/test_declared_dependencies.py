"""Dependencies as declared as used: every third-party module an adapter imports belongs to a
distribution that pyproject.toml names, in the base dependencies or in that adapter's own extra
(the Django adapter imports asgiref itself, so the django extra must name it, not rely on Django
bringing it). Read from the source, so an import added without its declaration fails here."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ADAPTERS = {"scalekit_django": "django", "scalekit_flask": "flask", "scalekit_fastapi": "fastapi"}


def requirement_names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower().replace("_", "-")
            for requirement in requirements}


def imported_top_level(package: Path) -> set[str]:
    names: set[str] = set()
    for source in package.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package, extra", sorted(ADAPTERS.items()))
def test_an_adapter_imports_only_what_its_extra_declares(package: str, extra: str) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = requirement_names(project["dependencies"]) | requirement_names(project["optional-dependencies"][extra])
    distributions = packages_distributions()
    undeclared = {}
    for name in imported_top_level(ROOT / "adapters" / package) - set(sys.stdlib_module_names) - {"__future__"}:
        if name == "scalekit" or name in ADAPTERS:
            continue
        owners = {owner.lower().replace("_", "-") for owner in distributions.get(name, [name])}
        if not owners & declared:
            undeclared[name] = sorted(owners)
    assert not undeclared, f"{package} imports {undeclared}, not declared in [project] dependencies or [{extra}]"
