"""The status page's endpoints under ``metrics.status_path`` (``/_scalekit/`` by default).

- ``/_scalekit/``: the page (HTML tables, live charts once its script runs);
- ``/_scalekit/status.json``: the same numbers, the tables' HTML and the chart points, polled by
  the page every two seconds and by ``scalekit top``;
- ``/_scalekit/static/<name>.<hash>.<ext>``: the page's script and styles and the vendored uPlot,
  versioned by content so they are served as immutable;
- ``/_scalekit``: a redirect to the page.

The metrics layer answers these paths after its own guard (loopback, allow-list or token), and
they read the same registry as ``/metrics``. Rates need two readings apart in time: each page
keeps the readings of the last minutes, and measures over the newest one at least
:data:`RATE_WINDOW_SECONDS` old.
"""

from __future__ import annotations

import functools
import hashlib
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict
from importlib import resources
from typing import Any

from ..messages import Response, simple_response
from .html import render_page, render_tables
from .snapshot import Rates, Snapshot, rates_between, read_snapshot
from .tables import build_tables

__all__ = ["RATE_WINDOW_SECONDS", "StatusPage", "static_assets"]

RATE_WINDOW_SECONDS = 5.0
MIN_RATE_SECONDS = 0.5
KEEP_SECONDS = 120.0
ASSET_NAMES = ("uPlot.iife.min.js", "uPlot.min.css", "status.js", "status.css")
CONTENT_TYPES = {"js": "text/javascript; charset=utf-8", "css": "text/css; charset=utf-8"}
# uPlot draws on canvas and sizes it through the CSSOM, which style-src does not govern: the
# page needs nothing but its own files.
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                           "frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
PAGE_HEADERS = (
    ("cache-control", "no-store"),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    ("content-security-policy", CONTENT_SECURITY_POLICY),
)
# Content-addressed URLs never change meaning, so a browser keeps them for a year without asking.
ASSET_CACHE_CONTROL = "private, max-age=31536000, immutable"


@functools.cache
def static_assets() -> dict[str, tuple[str, bytes]]:
    """Each static file's name -> (its versioned file name, its bytes), read once per process."""
    folder = resources.files("scalekit.status") / "static"
    assets = {}
    for name in ASSET_NAMES:
        body = (folder / name).read_bytes()
        stem, dot, extension = name.rpartition(".")
        assets[name] = (f"{stem}.{hashlib.sha256(body).hexdigest()[:16]}{dot}{extension}", body)
    return assets


class StatusPage:
    """Answers the status paths, given a way to collect the metric families (the registry)."""

    def __init__(self, path: str, collect: Callable[[], Iterable[Any]],
                 clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.collect = collect
        self.clock = clock
        self._assets = {f"{path}static/{versioned}": (versioned, body)
                        for versioned, body in static_assets().values()}
        self.asset_urls = {name: f"static/{versioned}" for name, (versioned, _) in static_assets().items()}
        self.paths = frozenset({path, path.rstrip("/"), f"{path}status.json", *self._assets})
        self._readings: deque[Snapshot] = deque()
        self._lock = threading.Lock()

    def respond(self, path: str) -> Response:
        """The response for one of :attr:`paths` (the caller has checked who is asking)."""
        if path == self.path:
            snapshot, rates = self.read()
            page = render_page(build_tables(snapshot, rates), taken_at=snapshot.taken_at,
                               assets=self.asset_urls)
            return _response(page.encode(), "text/html; charset=utf-8", PAGE_HEADERS)
        if path == f"{self.path}status.json":
            snapshot, rates = self.read()
            body = json.dumps(status_document(snapshot, rates), separators=(",", ":")).encode()
            return _response(body, "application/json", PAGE_HEADERS)
        asset = self._assets.get(path)
        if asset is not None:
            versioned, body = asset
            return _response(body, CONTENT_TYPES[versioned.rpartition(".")[2]],
                             (("cache-control", ASSET_CACHE_CONTROL), ("x-content-type-options", "nosniff")))
        # The path without its trailing slash: relative links on the page need the slash.
        last_segment = self.path.rstrip("/").rpartition("/")[2]
        return simple_response(308, "the status page is at " + self.path + "\n",
                               extra_headers=(("location", last_segment + "/"),))

    def read(self) -> tuple[Snapshot, Rates | None]:
        """A new reading of the registry, and the rates since an earlier one."""
        snapshot = read_snapshot(self.collect(), taken_at=self.clock())
        with self._lock:
            readings = self._readings
            while readings and snapshot.taken_at - readings[0].taken_at > KEEP_SECONDS:
                readings.popleft()
            earlier = _reading_to_compare(readings, snapshot.taken_at)
            readings.append(snapshot)
        return snapshot, (rates_between(earlier, snapshot) if earlier is not None else None)


def _reading_to_compare(readings: deque[Snapshot], now: float) -> Snapshot | None:
    """The newest reading at least RATE_WINDOW_SECONDS old, else the oldest one old enough to
    give a rate at all."""
    for reading in reversed(readings):
        if now - reading.taken_at >= RATE_WINDOW_SECONDS:
            return reading
    if readings and now - readings[0].taken_at >= MIN_RATE_SECONDS:
        return readings[0]
    return None


def status_document(snapshot: Snapshot, rates: Rates | None) -> dict[str, Any]:
    """What ``status.json`` holds: the tables (as values and as HTML), and the chart point."""
    tables = build_tables(snapshot, rates)
    return {
        "taken_at": snapshot.taken_at,
        "rates": asdict(rates) if rates is not None else None,
        "tables": [asdict(table) for table in tables],
        "html": render_tables(tables, taken_at=snapshot.taken_at),
    }


def _response(body: bytes, content_type: str, headers: tuple[tuple[str, str], ...]) -> Response:
    return Response(200, (("content-type", content_type), ("content-length", str(len(body))), *headers), body)
