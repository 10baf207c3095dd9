"""The documents stay true to the repository: the commands they name run what they say."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_make_check_lints_and_type_checks_the_package_and_the_adapters() -> None:
    commands = subprocess.run(["make", "--no-print-directory", "-n", "check"], check=True,
                              capture_output=True, text=True, cwd=ROOT).stdout.splitlines()
    assert commands == ["python3 -m ruff check scalekit adapters tests",
                        "python3 -m mypy scalekit adapters"]
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    tools = {requirement.split("==")[0] for requirement in extras["dev"]}
    assert {"ruff", "mypy"} <= tools
    assert 'pip install -e ".[dev]"' in (ROOT / "README.md").read_text()
