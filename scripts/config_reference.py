"""Print the configuration reference table of README.md from the config dataclasses.

    python scripts/config_reference.py          # the markdown table
    python scripts/config_reference.py --check  # exit 1 if README.md's table is out of date
"""

from __future__ import annotations

import sys
from pathlib import Path

from scalekit.config import env_name, iter_settings, load_config

BEGIN = "<!-- config-reference:begin -->"
END = "<!-- config-reference:end -->"


def _default(value: object) -> str:
    if value is None:
        return "unset"
    if isinstance(value, tuple):
        return ", ".join(str(v) for v in value) if value else "(empty)"
    if isinstance(value, dict):
        return ", ".join(value) if value else "(empty)"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def table() -> str:
    config = load_config(environ={}, cwd="/nonexistent")
    rows = ["| key | default | environment |", "|---|---|---|"]
    for key, value in iter_settings(config):
        text = _default(value).replace("|", "\\|")  # whole: a default cut short is a wrong one
        rows.append(f"| `{key}` | `{text}` | `{env_name(key)}` |")
    return "\n".join(rows)


def main() -> int:
    generated = f"{BEGIN}\n{table()}\n{END}"
    if "--check" in sys.argv:
        readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
        start, end = readme.find(BEGIN), readme.find(END)
        if start < 0 or end < 0 or readme[start:end + len(END)] != generated:
            print("README.md's configuration table is out of date: run "
                  "python scripts/config_reference.py and paste its output.", file=sys.stderr)
            return 1
        return 0
    print(generated)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
