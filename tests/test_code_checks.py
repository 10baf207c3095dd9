"""The code checks `make check` runs, held by the suite so CI enforces them: ruff (its rules and
the configured line length) over the package, the adapters and the tests, and mypy (strict)
over the package and the adapters. scripts/test installs both (the ``dev`` extra).

mypy keeps its incremental cache between runs (``~/.cache/scalekit/mypy/``, one per checkout), as
``make check`` does in ``.mypy_cache``: every file is still checked, strict, but what has not
changed since the last run is read back from the cache instead of analysed again (a cold run is
35 to 60 s on two loaded cores, the longest single test of the suite)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import REPO_ROOT


def run_tool(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *arguments], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300, check=False)


def require(module: str) -> None:
    probe = run_tool(module, "--version")
    if probe.returncode != 0:
        pytest.fail(f"{module} is not installed: install the dev extra (pip install -e '.[dev]'), "
                    f"as scripts/test does\n{probe.stderr}")


def test_ruff_finds_nothing() -> None:
    require("ruff")
    result = run_tool("ruff", "check", "--no-cache", "scalekit", "adapters", "tests")
    assert result.returncode == 0, result.stdout + result.stderr


def mypy_cache_dir() -> Path:
    """Outside the checkout, and one per checkout (two checkouts' files differ)."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "scalekit" / "mypy" / hashlib.sha256(str(REPO_ROOT).encode()).hexdigest()[:16]


def test_mypy_strict_finds_nothing() -> None:
    require("mypy")
    result = run_tool("mypy", "--cache-dir", str(mypy_cache_dir()), "scalekit", "adapters")
    assert result.returncode == 0, result.stdout + result.stderr
