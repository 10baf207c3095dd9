"""The apps the fleet and fault suites serve: one runtime per server process.

A second runtime in the process (another module wrapping an app at import) would take part in
the fleet too: it acknowledges every invalidation and each write through the app would
invalidate, and wait for acknowledgements, once per runtime.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import REPO_ROOT

PROBE = """
import importlib
from scalekit.runtime import live_runtimes
getattr(importlib.import_module("{module}"), "{name}")
print(len(live_runtimes()))
"""


@pytest.mark.parametrize("module", ["tests.faults.app", "tests.cache.tiers.fleet_app"])
@pytest.mark.parametrize("name", ["wsgi_app", "asgi_app"])
def test_serving_an_app_of_the_suites_wraps_one_app(tmp_path: Path, module: str, name: str) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("SCALEKIT_")}
    env.update(PYTHONPATH=str(REPO_ROOT), FAULTS_DB=str(tmp_path / "items.sqlite3"),
               SCALEKIT_STATE_DIR=str(tmp_path / "state"))
    probe = PROBE.format(module=module, name=name)
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1"
