"""Helpers shared by the adapter tests: a seeded SQLite database, metrics and cache headers.

Every test app serves the same small domain: a table ``items(id, name)`` read through the
pool by ``GET /items/<id>`` (cached 60 s, tagged ``item:<id>``), renamed by
``POST /admin/items/<id>/rename`` (a committed UPDATE: table tracking invalidates
``table:items``) and ``POST /admin/items/<id>/touch`` (``invalidate("item:<id>")`` only).
The admin URLs differ from the cached one on purpose, so an invalidation seen on the next GET
comes from tags, not from the cache's own "unsafe method invalidates its URI" rule.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from typing import Any

import sqlalchemy

__all__ = [
    "ITEMS",
    "assert_hit",
    "assert_not_hit",
    "checked_out",
    "exposition_text",
    "metric_samples",
    "pool_settings",
    "request_count",
    "route_labels",
    "seed_items",
    "wait_until",
]

ITEMS = {1: "teapot", 2: "kettle", 3: "mug"}
# Label values may hold braces (route templates): a value is a quoted string, skipped whole.
_SAMPLE = re.compile(r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)'
                     r'(?:\{(?P<labels>(?:[^"}]|"(?:[^"\\]|\\.)*")*)\})?\s+(?P<value>\S+)')
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def seed_items(url: str) -> None:
    """(Re)create ``items`` with :data:`ITEMS` at ``url``, outside any pool."""
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql("DROP TABLE IF EXISTS items")
            connection.exec_driver_sql("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL)")
            for item_id, name in ITEMS.items():
                connection.exec_driver_sql("INSERT INTO items (id, name) VALUES (?, ?)", (item_id, name))
    finally:
        engine.dispose()


def pool_settings(url: str, state_dir: str) -> dict[str, Any]:
    """``wrap()`` keyword arguments: the test database and a private state directory."""
    return {"state_dir": state_dir, "pool": {"databases": {"default": {"url": url}}}}


def metric_samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """Every sample of metric ``name`` in a Prometheus text exposition, as (labels, value)."""
    out = []
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match and match["name"] == name:
            labels = dict(_LABEL.findall(match["labels"] or ""))
            out.append((labels, float(match["value"])))
    return out


def route_labels(text: str) -> set[str]:
    """The route labels of ``scalekit_http_requests_total`` in an exposition."""
    return {labels["route"] for labels, _ in metric_samples(text, "scalekit_http_requests_total")}


def request_count(text: str, route: str, status: str | None = None) -> float:
    """Requests counted under ``route`` (and status class), summed over methods."""
    return sum(value for labels, value in metric_samples(text, "scalekit_http_requests_total")
               if labels["route"] == route and (status is None or labels["status"] == status))


_HIT = re.compile(r";\s*hit\b")


def assert_hit(headers: Mapping[str, str]) -> None:
    """RFC 9211: ``Cache-Status: scalekit; hit``; a hit also carries ``Age`` (RFC 9111 §5.1)."""
    status = headers.get("cache-status", "")
    assert _HIT.search(status), f"expected a cache hit, Cache-Status is {status!r}"
    assert headers.get("age") is not None and int(headers["age"]) >= 0


def assert_not_hit(headers: Mapping[str, str]) -> None:
    status = headers.get("cache-status", "")
    assert status and not _HIT.search(status), f"expected a miss, Cache-Status is {status!r}"


def checked_out(runtime: Any, name: str = "default") -> int:
    """Connections of ``runtime``'s pool for database ``name`` currently lent to requests."""
    pool = runtime.services.get("pool")
    assert pool is not None, f"the pool layer registered no service; services: {sorted(runtime.services)}"
    databases = getattr(pool, "databases", pool)
    return int(databases[name].checked_out())


def wait_until(check: Callable[[], bool], *, timeout_seconds: float = 20.0, what: str = "") -> None:
    """Poll ``check`` until it holds (servers finish a response after the client has it)."""
    deadline = time.monotonic() + timeout_seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_seconds} s waiting for {what or check}")
        time.sleep(0.02)


def exposition_text() -> str:
    """This process's metrics, as ``/metrics`` would serve them (in-process tests read them here:
    test clients do not all come from a loopback address)."""
    from scalekit.metrics import render_exposition

    rendered = render_exposition()
    body = rendered[0] if isinstance(rendered, tuple) else rendered
    return body.decode()

