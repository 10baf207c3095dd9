"""Memory is bounded in bytes, not in entry counts: a flood of requests carrying huge unique
client-supplied strings (query, Host, Cache-Control, path) leaves the process no larger.

Every memo of client-supplied text (key parts, request directives, rule matches, the plain-hit
memo) skips long values, so thousands of 60 KiB query strings cost nothing once answered.
Measured with tracemalloc in-process after a warm-up, so the figure is what the layers keep,
not allocator noise.
"""

from __future__ import annotations

import asyncio
import gc
import io
import tracemalloc
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest

import scalekit

FLOOD = 4000
QUERY_BYTES = 60 * 1024
OTHER_BYTES = 8 * 1024
BOUND_BYTES = 20 * 1024 * 1024
Request = tuple[str, str, str, str, dict[str, str]]  # method, host, path, query, headers
SETTINGS: dict[str, Any] = {
    "pool": False,
    "cache": {"disk": {"enabled": False}, "rules": [{"path": "/page*", "ttl_seconds": 3600}]},
}


def flood_requests() -> Iterator[Request]:
    """(method, host, path, query, headers): misses with unique huge parts, unsafe requests
    (each invalidates its URL), then plain hits on one cached page through unique ignored query
    parameters."""
    filler = "x" * QUERY_BYTES
    other = "y" * OTHER_BYTES
    for index in range(FLOOD // 2):
        yield ("GET", f"h{index}{other}.test", f"/missing/{index}{other}", f"q={index}{filler}",
               {"cache-control": f"max-age={index}, x-{other}{index}"})
    for index in range(FLOOD // 4):
        yield ("POST", "shop.test", f"/missing/{index}", f"q={index}{filler}", {})
    for index in range(FLOOD // 4):
        yield ("GET", "shop.test", "/page", f"utm_source={index}{filler}", {})


Client = Callable[[Iterable[Request]], list[int]]


def wsgi_client(app: Any) -> Client:
    def one(method: str, host: str, path: str, query: str, headers: dict[str, str]) -> int:
        environ = {"REQUEST_METHOD": method, "SCRIPT_NAME": "", "PATH_INFO": path, "QUERY_STRING": query,
                   "SERVER_NAME": "shop.test", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
                   "HTTP_HOST": host, "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(b""),
                   "wsgi.errors": io.StringIO(), "wsgi.multithread": False, "wsgi.multiprocess": False,
                   "wsgi.run_once": False, "wsgi.version": (1, 0)}
        for name, value in headers.items():
            environ["HTTP_" + name.upper().replace("-", "_")] = value
        status: list[str] = []
        body = app(environ, lambda line, _headers, _exc=None: status.append(line))
        b"".join(body)
        getattr(body, "close", lambda: None)()
        return int(status[0][:3])

    def call(requests: Iterable[Request]) -> list[int]:
        return [one(*request) for request in requests]
    return call


def asgi_client(app: Any) -> Client:
    async def one(method: str, host: str, path: str, query: str, headers: dict[str, str]) -> int:
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
                 "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
                 "query_string": query.encode(), "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 5000),
                 "headers": [(b"host", host.encode())] + [(n.encode(), v.encode()) for n, v in headers.items()]}
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await app(scope, receive, send)
        return int(sent[0]["status"])

    async def each(requests: Iterable[Request]) -> list[int]:
        return [await one(*request) for request in requests]

    def call(requests: Iterable[Request]) -> list[int]:
        return asyncio.run(each(requests))
    return call


def wsgi_origin(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    found = environ["PATH_INFO"] == "/page"
    start_response("200 OK" if found else "404 Not Found", [("content-type", "text/plain")])
    return [b"page" if found else b"no"]


async def asgi_origin(scope: dict[str, Any], receive: Any, send: Any) -> None:
    found = scope["path"] == "/page"
    await send({"type": "http.response.start", "status": 200 if found else 404,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"page" if found else b"no"})


@pytest.mark.parametrize("kind", ["wsgi", "asgi"])
def test_a_flood_of_huge_unique_strings_leaves_memory_flat(kind: str) -> None:
    if kind == "wsgi":
        app = scalekit.wrap(wsgi_origin, **SETTINGS)
        call = wsgi_client(app)
    else:
        app = scalekit.wrap(asgi_origin, **SETTINGS)
        call = asgi_client(app)
    try:
        assert call([("GET", "shop.test", "/page", "", {})]) == [200]  # stored
        call(list(flood_requests())[::100])  # every path warmed up
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            statuses = set(call(flood_requests()))
            gc.collect()
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert statuses == {200, 404}
        assert grown < BOUND_BYTES, f"{grown / 2**20:.1f} MiB kept after {FLOOD} requests"
    finally:
        app.runtime.close()
