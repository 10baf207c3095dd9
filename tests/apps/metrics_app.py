"""A WSGI app for the metrics tests under real gunicorn: ``/pid`` (which worker answered),
``/hold?gate=PATH`` (sends its worker's pid, then stays in flight until that file exists), ``/items/<id>`` (names its
route
template), anything else: 200."""

from __future__ import annotations

import os
import time
from typing import Any
from urllib.parse import parse_qs

import scalekit


def app(environ: dict[str, Any], start_response: Any) -> Any:
    path = environ["PATH_INFO"]
    if path == "/pid":
        body = str(os.getpid()).encode()
    elif path == "/hold":
        gate = parse_qs(environ.get("QUERY_STRING", ""))["gate"][0]
        return _held(gate, start_response)
    else:
        if path.startswith("/items/"):
            scalekit.set_route("/items/{id}")
        body = b"ok"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def _held(gate: str, start_response: Any) -> Any:
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield f"held {os.getpid()}\n".encode()
    deadline = time.monotonic() + 20
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.01)
    yield b"released"


wrapped = scalekit.wrap(app, cdn=False, cache=False, pool=False)
