"""README.md stays true to the code: its configuration table and its commands."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_configuration_table_lists_every_key_with_its_default() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "config_reference.py"), "--check"],
                            check=False, capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr


def test_the_two_commands_are_what_make_and_ci_run() -> None:
    readme = (ROOT / "README.md").read_text()
    makefile = (ROOT / "Makefile").read_text()
    assert "make demo" in readme and "make test" in readme
    assert "scalekit.cli demo --framework flask" in makefile
    assert "scripts/test" in makefile
    assert "make test" in (ROOT / ".ci" / "run").read_text()
