"""The quicker benchmarks run to their verdict: a benchmark no test runs breaks unseen when the
code under it changes (bench/pool.py failed at its first request for a session, its handles'
context collected, until a rerun by hand). Their figures are not judged here: a shared machine
cannot hold a timing target in a test; exit 1 (a target missed) is a verdict too."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.servers import REPO_ROOT


@pytest.mark.parametrize(("bench", "verdict"), [
    pytest.param(["bench/pool.py", "--quick"], "target: pooled, used (defaults) >= 50x", id="pool",
                 marks=pytest.mark.postgres),
    pytest.param(["bench/cache_hit.py", "--quick", "--no-http"], "default layers", id="cache_hit"),
    pytest.param(["bench/overhead.py"], "all layers off", id="overhead"),
])
def test_a_quick_benchmark_runs_to_its_verdict(bench: list[str], verdict: str) -> None:
    result = subprocess.run([sys.executable, *bench], cwd=REPO_ROOT, capture_output=True, text=True, check=False,
                            timeout=100)
    output = result.stdout + result.stderr
    assert result.returncode in (0, 1), output
    assert "Traceback" not in output and verdict in output, output
