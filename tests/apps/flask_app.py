"""A small Flask app, bare and wrapped, for the byte-for-byte comparisons.

Routes cover what a wrapper could disturb: plain text, JSON, repeated headers (two Set-Cookie),
a redirect, error statuses, an exception, HEAD, POST with a body, and a streamed body that
waits for the client (``?gate=PATH``: the second chunk is sent once that file exists, so a test
can prove the first chunk arrived before the rest was even produced).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

from flask import Flask, Response, jsonify, redirect, request, stream_with_context

import scalekit

app = Flask("scalekit_test_flask")


@app.get("/")
def index() -> Response:
    return Response("hello from flask\n", mimetype="text/plain",
                    headers={"Cache-Control": "no-store", "X-App": "flask"})


@app.get("/json")
def as_json() -> Response:
    response = jsonify(items=[1, 2, 3], name="shop")
    response.headers["Cache-Control"] = "no-store"
    return response


@app.get("/cookies")
def cookies() -> Response:
    response = Response("two cookies\n", mimetype="text/plain")
    response.headers["Cache-Control"] = "no-store"
    response.set_cookie("a", "1")
    response.set_cookie("b", "2", httponly=True)
    return response


@app.get("/redirect")
def moved() -> Response:
    return redirect("/", code=302)  # type: ignore[return-value]


@app.get("/status/<int:code>")
def status(code: int) -> Response:
    return Response(f"status {code}\n", status=code, mimetype="text/plain",
                    headers={"Cache-Control": "no-store"})


@app.get("/boom")
def boom() -> Response:
    raise RuntimeError("boom")


@app.post("/echo")
def echo() -> Response:
    return Response(request.get_data(), mimetype="application/octet-stream",
                    headers={"X-Length": str(request.content_length or 0), "Cache-Control": "no-store"})


@app.get("/stream")
def stream() -> Response:
    gate = request.args.get("gate")
    count = int(request.args.get("n", "5"))

    def chunks() -> Iterator[bytes]:
        for index in range(count):
            if index == 1 and gate:
                wait_for_file(gate)
            yield f"chunk {index}\n".encode()

    return Response(stream_with_context(chunks()), mimetype="text/plain",
                    headers={"Cache-Control": "no-store"})


def wait_for_file(path: str, timeout_seconds: float = 20.0) -> None:
    """Block until ``path`` exists (the test creates it after reading the first chunk)."""
    deadline = time.monotonic() + timeout_seconds
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)


wrapped_off = scalekit.wrap(app, cdn=False, cache=False, pool=False)


def __getattr__(name: str) -> object:
    # Built on first use, so a layer that fails to build fails only the tests that use it.
    if name == "wrapped_defaults":
        globals()[name] = scalekit.wrap(app)
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
wrapped_bare_layers = scalekit.wrap(app, metrics=False, cdn=False, cache=False, pool=False)
