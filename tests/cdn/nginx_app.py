"""The app behind nginx in test_nginx.py: a page, a private page, built assets, and a hit counter.

Only the CDN layer runs (cache, pool and metrics off), so what nginx caches is decided by the
stamped headers alone; ``/hits`` tells the test how often each path reached the app. The
assets manifest comes from ``SCALEKIT_CDN_ASSETS_MANIFEST`` set by the test.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from typing import Any

import scalekit

HITS: Counter[str] = Counter()
_LOCK = threading.Lock()


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    path = environ.get("PATH_INFO", "")
    if path == "/hits":
        body = json.dumps(HITS).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                                  ("Cache-Control", "no-store")])
        return [body]
    with _LOCK:
        HITS[path] += 1
    scalekit.tag("page:" + path.strip("/"))
    body = f"<h1>{path}</h1>".encode()
    start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(body)))])
    return [body]


wsgi_app = scalekit.wrap(app, metrics=False, cache=False, pool=False, cdn={
    "rules": [
        {"path": "/page", "policy": "page"},
        {"path": "/private", "policy": "private"},
    ],
    "surrogate_keys": "fastly",
})
