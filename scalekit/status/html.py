"""The status page as HTML: plain tables that read without JavaScript, and the chart frames the
page's script fills in.

Everything the app or a client could have written (route templates, database names) is escaped.
The markup holds no inline script or style, so the page runs under a strict
Content-Security-Policy (``default-src 'self'``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from html import escape

from .tables import Cell, Table

__all__ = ["CHARTS", "render_page", "render_tables"]

# (element id, title) of each chart; status.js knows the same ids.
CHARTS = (
    ("chart-requests", "Requests and cache hits per second"),
    ("chart-tiers", "Hit ratio by tier (%)"),
    ("chart-saved", "Seconds saved per second"),
)
# Without JavaScript the page reloads itself this often, so the tables stay live.
NO_SCRIPT_REFRESH_SECONDS = 5


def _cell(cell: Cell, tag: str = "td") -> str:
    attributes = ""
    if cell.id is not None:
        attributes += f' id="{escape(cell.id)}"'
    if cell.value is not None:
        attributes += f' data-value="{cell.value!r}"'
    return f"<{tag}{attributes}>{escape(cell.text)}</{tag}>"


def _table(table: Table) -> str:
    parts = [f'<section id="{escape(table.id)}"><h2>{escape(table.title)}</h2>']
    if not table.columns:
        parts.append("<table class=\"figures\"><tbody>")
        parts.extend(f"<tr>{_cell(label, 'th')}{_cell(value)}</tr>" for label, value in table.rows)
        parts.append("</tbody></table></section>")
        return "".join(parts)
    if not table.rows:
        parts.append(f'<p class="empty">{escape(table.empty_text)}</p></section>')
        return "".join(parts)
    head = "".join(f'<th scope="col">{escape(column)}</th>' for column in table.columns)
    parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>")
    for first, *rest in table.rows:
        parts.append(f"<tr>{_cell(first, 'th')}{''.join(_cell(cell) for cell in rest)}</tr>")
    parts.append("</tbody></table></section>")
    return "".join(parts)


def render_tables(tables: tuple[Table, ...], *, taken_at: float) -> str:
    """The live part of the page: every table and the time they were read."""
    clock = time.strftime("%H:%M:%S", time.localtime(taken_at))
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(taken_at))
    updated = f'<p id="updated">as of <time datetime="{stamp}">{clock}</time></p>'
    return updated + "".join(_table(table) for table in tables)


def render_page(tables: tuple[Table, ...], *, taken_at: float, assets: Mapping[str, str]) -> str:
    """The whole page; ``assets`` maps each static file's name to its versioned relative URL."""
    charts = "".join(f'<figure><figcaption>{escape(title)}</figcaption><div class="chart" id="{id}">'
                     "</div></figure>" for id, title in CHARTS)
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<title>scalekit status</title>"
        f'<noscript><meta http-equiv="refresh" content="{NO_SCRIPT_REFRESH_SECONDS}"></noscript>'
        f'<link rel="stylesheet" href="{escape(assets["uPlot.min.css"])}">'
        f'<link rel="stylesheet" href="{escape(assets["status.css"])}">'
        f'<script defer src="{escape(assets["uPlot.iife.min.js"])}"></script>'
        f'<script defer src="{escape(assets["status.js"])}"></script>'
        "</head><body>"
        "<header><h1>scalekit status</h1></header>"
        f'<section id="charts" hidden>{charts}</section>'
        f'<div id="live">{render_tables(tables, taken_at=taken_at)}</div>'
        "</body></html>\n"
    )
