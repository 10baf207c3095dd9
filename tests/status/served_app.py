"""The app the status tests serve with ``scalekit serve --workers 2``: cacheable items, a
private page, and a route that borrows a pooled (SQLite) connection.

- ``/items/<id>``: cacheable for a minute, route ``/items/{id}``;
- ``/db/<id>``: runs a statement on the pooled connection, never cached, route ``/db/{id}``;
- ``/pid``: the pid of the worker that answered;
- ``/hold?gate=PATH``: sends its worker's pid, then keeps that (sync) worker busy until the
  file PATH exists, so the other worker answers meanwhile;
- anything else: a private page.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs

import scalekit
from scalekit.pool import db


def app(environ: dict[str, Any], start_response: Any) -> Any:
    path = environ["PATH_INFO"]
    if path == "/hold":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Cache-Control", "no-store")])
        return _held(parse_qs(environ["QUERY_STRING"])["gate"][0])
    if path.startswith("/items/"):
        scalekit.set_route("/items/{id}")
        start_response("200 OK", [("Content-Type", "text/plain"), ("Cache-Control", "max-age=60")])
        return [b"item " + path.encode()]
    if path.startswith("/db/"):
        scalekit.set_route("/db/{id}")
        answer = db().connection().exec_driver_sql("SELECT 41 + 1").scalar_one()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Cache-Control", "no-store")])
        return [str(answer).encode()]
    body = str(os.getpid()).encode() if path == "/pid" else b"private"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Cache-Control", "private")])
    return [body]


def _held(gate: str) -> Iterator[bytes]:
    yield f"{os.getpid()}\n".encode()
    deadline = time.monotonic() + 20
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.01)
    yield b"released"


wrapped = scalekit.wrap(app, cdn=False, cache={"disk": {"enabled": False}},
                        pool={"databases": {"default": {"url": "sqlite://"}}})
