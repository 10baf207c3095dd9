"""Print pip constraints pinning every direct dependency to the lowest version pyproject.toml
allows, for the lowest-versions check (scripts/test-lowest).

    python scripts/lowest_requirements.py > lowest.txt
    pip install -c lowest.txt -e ".[test]"

Every requirement of [project] dependencies and of each optional-dependencies extra (the
project's references to its own extras aside) must state a lower bound (>=, ~= or ==): a
dependency without one claims to work with any release ever made, which nothing checks.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent


def lowest_pins(project: dict[str, object]) -> dict[str, str]:
    """``{name: lowest version}`` over the dependencies and every extra (the highest lower
    bound wins where two extras name one package)."""
    from packaging.version import Version

    requirements = list(project.get("dependencies", []))  # type: ignore[call-overload]
    for extra in project.get("optional-dependencies", {}).values():  # type: ignore[union-attr]
        requirements.extend(extra)
    pins: dict[str, str] = {}
    for text in requirements:
        requirement = Requirement(text)
        if requirement.name == project["name"]:
            continue
        lows = [spec.version for spec in requirement.specifier if spec.operator in (">=", "~=", "==")]
        if not lows:
            raise SystemExit(f"{text!r} has no lower bound; give it one (>=) in pyproject.toml")
        low = max(lows, key=Version)
        name = requirement.name.lower()
        if name not in pins or Version(low) > Version(pins[name]):
            pins[name] = low
    return pins


def main() -> int:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for name, version in sorted(lowest_pins(project).items()):
        print(f"{name}=={version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
