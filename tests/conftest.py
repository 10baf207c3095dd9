"""Shared pytest set-up for the whole suite.

- Every test process gets its own scalekit state directory (``SCALEKIT_STATE_DIR``), so the
  disk tier and friends never write into the checkout, and stray ``SCALEKIT_*`` variables of
  the developer's shell cannot change what tests see. Servers started by tests inherit both.
- ``promtool`` locates Prometheus' checker, or skips the test that needs it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest

_STATE_DIR: str | None = None


def pytest_configure(config: pytest.Config) -> None:
    # At configure time, before test modules (and the apps they wrap at import) are imported.
    global _STATE_DIR
    for name in [n for n in os.environ if n.startswith("SCALEKIT_")]:
        del os.environ[name]
    _STATE_DIR = tempfile.mkdtemp(prefix="scalekit-tests-")
    os.environ["SCALEKIT_STATE_DIR"] = _STATE_DIR


def pytest_unconfigure(config: pytest.Config) -> None:
    if _STATE_DIR is not None:
        shutil.rmtree(_STATE_DIR, ignore_errors=True)


@pytest.fixture
def promtool() -> str:
    """Path of ``promtool`` (Debian package ``prometheus``); skips the test if absent."""
    path = shutil.which("promtool") or ("/usr/bin/promtool" if os.path.exists("/usr/bin/promtool") else None)
    if path is None:
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    return path


@pytest.fixture
def no_scalekit_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Remove every SCALEKIT_* variable for one test (the suite sets SCALEKIT_STATE_DIR)."""
    for name in [n for n in os.environ if n.startswith("SCALEKIT_")]:
        monkeypatch.delenv(name)
    yield


@pytest.fixture(autouse=True)
def _process_state_kept() -> Iterator[None]:
    """Fail the test that leaves a ``SCALEKIT_*`` variable or the working directory changed
    for the tests after it in this process (use ``monkeypatch``), and undo what it left."""
    environment, folder = _scalekit_environment(), os.getcwd()
    yield
    left, now_in = _scalekit_environment(), os.getcwd()
    if left == environment and now_in == folder:
        return
    for name in left.keys() - environment.keys():
        del os.environ[name]
    os.environ.update(environment)
    os.chdir(folder)
    changed = sorted(name for name in left.keys() | environment.keys() if left.get(name) != environment.get(name))
    pytest.fail(f"the test left SCALEKIT_* variables {changed} or the working directory "
                f"({folder} -> {now_in}) changed for later tests; set them with monkeypatch")


def _scalekit_environment() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if name.startswith("SCALEKIT_")}
