"""README.md stays true to the code: its configuration table and its commands."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_configuration_table_lists_every_key_with_its_default() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "config_reference.py"), "--check"],
                            check=False, capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr


def test_configuration_table_shows_whole_default_values() -> None:
    from scalekit.config import iter_settings, load_config

    readme = (ROOT / "README.md").read_text()
    cells = dict(re.findall(r"^\| `([a-z0-9_.]+)` \| `(.*)` \| `SCALEKIT_", readme, re.MULTILINE))
    for key, value in iter_settings(load_config(environ={}, cwd="/nonexistent")):
        if value is None:
            assert cells[key] == "unset", key
            continue
        parts = [str(item).lower() for item in (value if isinstance(value, (tuple, dict)) else [value])]
        for part in parts:
            assert part.replace("|", "\\|") in cells[key], f"{key}: {part!r} is not in the README's {cells[key]!r}"
        assert not cells[key].endswith("..."), key


def make_demo(*variables: str) -> str:
    """The commands ``make demo`` would run (a dry run)."""
    return subprocess.run(["make", "--no-print-directory", "-n", "demo", *variables], check=True,
        capture_output=True, text=True,
                          cwd=ROOT).stdout


def test_the_two_commands_are_what_make_and_ci_run() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    assert "scripts/test" in (ROOT / "Makefile").read_text()
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    assert make_demo().splitlines() == ['python3 -m pip install -q -e ".[demo,flask]"',
                                        "python3 -m scalekit.cli demo --framework flask --port 8000"]
    assert '`pip install -e ".[demo,flask]"` then `scalekit demo --framework flask --port 8000`' in readme


def test_make_demo_takes_the_framework_and_the_port_the_readme_names() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "make demo FRAMEWORK=fastapi PORT=8001" in readme
    assert make_demo("FRAMEWORK=fastapi", "PORT=8001").splitlines() == [
        'python3 -m pip install -q -e ".[demo,fastapi]"',
        "python3 -m scalekit.cli demo --framework fastapi --port 8001"]
    assert '".[demo]"' in make_demo("FRAMEWORK=builtin")
