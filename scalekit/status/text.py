"""The status page's tables as terminal text, for ``scalekit top``.

Lays out the tables of ``status.json`` (see :mod:`scalekit.status.tables`): a two-column list
of figures, or a table with a header row, numbers right-aligned.

>>> table = {"title": "Traffic", "columns": [], "empty_text": "",
...          "rows": [[{"text": "requests"}, {"text": "12"}]]}
>>> print(render_text([table], taken_at=0.0, source="http://127.0.0.1:8000").splitlines()[-1])
  requests  12
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["render_text"]


def _lay_out(rows: list[list[str]], header: list[str] | None) -> list[str]:
    lines = [header, *rows] if header else rows
    widths = [max(len(line[column]) for line in lines) for column in range(len(lines[0]))]
    laid_out = []
    for line in lines:
        cells = [line[0].ljust(widths[0])] + [text.rjust(width) for text, width in zip(line[1:], widths[1:])]
        laid_out.append("  " + "  ".join(cells).rstrip())
    return laid_out


def _table(table: Mapping[str, Any]) -> list[str]:
    lines = [str(table["title"])]
    rows = [[str(cell["text"]) for cell in row] for row in table["rows"]]
    if not rows:
        return [*lines, "  " + str(table["empty_text"])]
    return lines + _lay_out(rows, list(table["columns"]) or None)


def render_text(tables: Iterable[Mapping[str, Any]], *, taken_at: float, source: str) -> str:
    """Every table, separated by blank lines, under a line naming the app and the time."""
    clock = time.strftime("%H:%M:%S", time.localtime(taken_at))
    blocks = [[f"scalekit top — {source} at {clock}"]] + [_table(table) for table in tables]
    return "\n\n".join("\n".join(block) for block in blocks)
