"""No request leaves a reference cycle behind, through every default layer and every tier.

Objects in a cycle outlive their request until the cyclic collector's next run, and per-request
cycles make that collector run every few dozen requests. Each case below runs a few hundred
requests with the collector off and then counts what a collection finds: a per-request cycle
would leave at least two objects a request (background threads, such as L3's writer, may leave
a few of their own).
"""

from __future__ import annotations

import asyncio
import gc
import io
import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import scalekit
from tests.servers import wait_for_fleet_log

from .servers import RedisServer

REQUESTS = 200
PREFIXES = itertools.count()


def wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    if environ["REQUEST_METHOD"] == "POST":
        start_response("204 No Content", [])
        return []
    policy = "no-store" if "live" in environ["PATH_INFO"] else "max-age=600"
    start_response("200 OK", [("content-type", "text/plain"), ("cache-control", policy)])
    return [b"x" * 2000]


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["method"] == "POST":
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    policy = b"no-store" if "live" in scope["path"] else b"max-age=600"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"cache-control", policy)]})
    await send({"type": "http.response.body", "body": b"x" * 2000})


class Client:
    """Requests to a wrapped app the way a server makes them (one event loop for ASGI)."""

    def __init__(self, app: Any, kind: str) -> None:
        self.app, self.kind = app, kind
        self.loop = asyncio.new_event_loop() if kind == "asgi" else None
        self.statuses: list[int] = []
        self.etag = ""  # the hot page's, for conditional requests

    def request(self, method: str, path: str, headers: dict[str, str] | None = None) -> None:
        headers = headers or {}
        if self.loop is None:
            environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": "", "SERVER_NAME": "test",
                       "SERVER_PORT": "80", "HTTP_HOST": "test", "wsgi.url_scheme": "http",
                       "wsgi.input": io.BytesIO(b""), "CONTENT_LENGTH": "0"}
            environ.update({"HTTP_" + name.upper().replace("-", "_"): value for name, value in headers.items()})

            def start_response(status: str, _headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
                self.statuses.append(int(status[:3]))
                return lambda data: None

            body = self.app(environ, start_response)
            for _chunk in body:
                pass
            getattr(body, "close", lambda: None)()
            return
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
                 "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
                 "root_path": "", "server": ("test", 80), "client": ("127.0.0.1", 5000),
                 "headers": [(b"host", b"test"), *((k.encode(), v.encode()) for k, v in headers.items())]}

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                self.statuses.append(message["status"])

        self.loop.run_until_complete(self.app(scope, receive, send))

    def close(self) -> None:
        runtime = self.app.runtime
        if self.loop is not None:
            self.loop.run_until_complete(runtime.ashutdown())
            self.loop.close()
        else:
            runtime.close()


@pytest.fixture(params=["wsgi", "asgi"])
def client(request: pytest.FixtureRequest, redis_server: RedisServer, tmp_path: Path) -> Iterator[Client]:
    """The default layers with L1, L2 (the tier tests' Redis) and L3."""
    kind = request.param
    app = scalekit.wrap(wsgi_app if kind == "wsgi" else asgi_app, allowed_hosts=["test"],
                        redis={"url": redis_server.url, "key_prefix": f"garbage{next(PREFIXES)}:"},
                        cache={"disk": {"enabled": True, "path": str(tmp_path / "l3")}})
    made = Client(app, kind)
    if made.loop is not None:
        made.loop.run_until_complete(app.runtime.astartup())
    else:
        app.runtime.startup()
    wait_for_fleet_log(app)  # hits are served once the fleet's log is heard
    yield made
    made.close()


def etag_of(client: Client, path: str) -> str:
    seen: dict[str, str] = {}
    if client.loop is None:
        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": "", "SERVER_NAME": "test",
                   "SERVER_PORT": "80", "HTTP_HOST": "test", "wsgi.url_scheme": "http"}
        b"".join(client.app(environ, lambda status, headers, exc_info=None: seen.update(headers)))
    else:
        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                seen.update((k.decode(), v.decode()) for k, v in message["headers"])

        scope = {"type": "http", "method": "GET", "scheme": "http", "path": path, "query_string": b"",
                 "server": ("test", 80), "headers": [(b"host", b"test")]}
        client.loop.run_until_complete(client.app(scope, receive, send))
    return seen["etag"]


CASES: dict[str, Callable[[Client, int], tuple[str, str, dict[str, str] | None]]] = {
    "stored miss": lambda client, n: ("GET", f"/page/{n}", None),
    "memory hit": lambda client, n: ("GET", "/page/hot", None),
    "uncacheable": lambda client, n: ("GET", "/live", None),
    "revalidated hit": lambda client, n: ("GET", "/page/hot", {"cache-control": "max-age=0"}),
    "304": lambda client, n: ("GET", "/page/hot", {"if-none-match": client.etag}),
    "HEAD": lambda client, n: ("HEAD", "/page/hot", None),
    "POST": lambda client, n: ("POST", "/page/hot", None),
}

EXPECTED = {"304": 304, "POST": 204}


@pytest.mark.parametrize("case", CASES)
def test_no_request_leaves_a_reference_cycle(client: Client, case: str) -> None:
    make = CASES[case]
    client.request("GET", "/page/hot")
    client.etag = etag_of(client, "/page/hot")
    for n in range(20):  # warm: memos made, marks set, connections open
        client.request(*make(client, n))
    client.statuses.clear()
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)  # what a collection finds is kept in gc.garbage, to count
    try:
        for n in range(20, 20 + REQUESTS):
            client.request(*make(client, n))
        gc.collect()
        found = len(gc.garbage)
        kinds = sorted({type(thing).__name__ for thing in gc.garbage})
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert client.statuses == [EXPECTED.get(case, 200)] * REQUESTS
    assert found < REQUESTS, f"{found} objects of cyclic garbage after {REQUESTS} requests: {kinds}"
