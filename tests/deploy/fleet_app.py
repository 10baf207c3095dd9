"""The small wrapped app the deploy tests run as a fleet, in a WSGI and an ASGI flavour.

Routes (the same in both flavours, decided by :func:`answer`, so neither shell has an ``if``
about HTTP):

- ``/cacheable``: ``Cache-Control: public, s-maxage=60``, set by the app itself.
- ``/private``: ``Cache-Control: private, max-age=60``, never stored by a shared cache.
- ``/maxage``: ``max-age=60`` only (shareable, but not for requests carrying Authorization).
- ``/short``: ``public, s-maxage=1``, for stale-on-error at the edge.
- ``/whoami``: JSON naming the instance (``INSTANCE_ID`` env), the client address, scheme and
  Host the app saw, and every request header it received.
- ``/links``: ``public, s-maxage=60``, a page whose body is the absolute URL the app built from
  the request (scheme, host, forwarded headers): what a poisoned edge entry would show.
- ``/slow?seconds=S``: answers after S seconds (at most 5), for load tests.
- ``/slow-cacheable?seconds=S``: the same, but ``public, s-maxage=60`` (edge cache lock).
- ``/upload`` (POST): the number of body bytes received.
- ``/db``: runs ``SELECT 1`` on the request's pooled connection (for the pool's series).
- a WebSocket on any path (ASGI flavour): answers one message with ``echo <text> from <instance>``.
- ``/invalidate``: calls ``scalekit.invalidate`` (for the invalidation series).
- ``/fail``: answers 500 (for the 5xx series the error-ratio alert reads).

A counting shell *outside* ``scalekit.wrap`` counts every request that reached this process, by
path; ``/_test/counts`` returns them. That is "what the app saw", whatever scalekit's own cache
did.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs

from sqlalchemy import text

import scalekit
from scalekit.pool import db

INSTANCE_ID = os.environ.get("INSTANCE_ID", "solo")
MAX_SLOW_SECONDS = 5.0
COUNTS_PATH = "/_test/counts"


@dataclass(frozen=True)
class Answer:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    delay_seconds: float = 0.0


def _json(payload: dict[str, Any], cache_control: str = "no-store") -> Answer:
    body = json.dumps(payload).encode()
    return Answer(200, (("Content-Type", "application/json"), ("Cache-Control", cache_control)), body)


def answer(method: str, path: str, query: str, client: str | None, forwarded_for: str | None,
           body_size: int, *, scheme: str = "http", headers: dict[str, str] | None = None) -> Answer:
    """The whole app, as a pure function of the request's plain values (``headers`` lower-case)."""
    headers = headers or {}
    if path == "/cacheable":
        return Answer(200, (("Content-Type", "text/plain"), ("Cache-Control", "public, s-maxage=60")),
                      f"cacheable page from {INSTANCE_ID} at {time.time()}\n".encode())
    if path == "/maxage":
        # Fresh for 60 s, but neither public nor s-maxage: not shareable for Authorization requests.
        return Answer(200, (("Content-Type", "text/plain"), ("Cache-Control", "max-age=60")),
                      f"max-age page from {INSTANCE_ID} at {time.time()}\n".encode())
    if path == "/short":
        return Answer(200, (("Content-Type", "text/plain"), ("Cache-Control", "public, s-maxage=1")),
                      f"short-lived page from {INSTANCE_ID} at {time.time()}\n".encode())
    if path == "/private":
        return Answer(200, (("Content-Type", "text/plain"), ("Cache-Control", "private, max-age=60")),
                      f"private page from {INSTANCE_ID} at {time.time()}\n".encode())
    if path == "/whoami":
        return _json({"instance": INSTANCE_ID, "client": client, "x_forwarded_for": forwarded_for,
                      "scheme": scheme, "host": headers.get("host"), "headers": headers})
    if path == "/links":
        return Answer(200, (("Content-Type", "text/plain"), ("Cache-Control", "public, s-maxage=60")),
                      (absolute_url(scheme, headers, path) + "\n").encode())
    if path == "/slow":
        seconds = min(float(parse_qs(query).get("seconds", ["0.5"])[0]), MAX_SLOW_SECONDS)
        return Answer(200, (("Content-Type", "text/plain"), ("Cache-Control", "no-store")),
                      f"slow from {INSTANCE_ID}\n".encode(), delay_seconds=seconds)
    if path == "/slow-cacheable":
        seconds = min(float(parse_qs(query).get("seconds", ["0.5"])[0]), MAX_SLOW_SECONDS)
        return Answer(200, (("Content-Type", "text/plain"), ("Cache-Control", "public, s-maxage=60")),
                      f"slow cacheable page from {INSTANCE_ID} at {time.time()}\n".encode(),
                      delay_seconds=seconds)
    if path == "/upload" and method == "POST":
        return _json({"instance": INSTANCE_ID, "received_bytes": body_size})
    if path == "/page":
        # A text page big enough to be gzipped at the edge (gzip_min_length is 1 KiB).
        return Answer(200, (("Content-Type", "text/html; charset=utf-8"), ("Cache-Control", "no-store")),
                      b"<!doctype html><p>" + b"scalekit " * 400 + b"</p>\n")
    if path == "/db":
        return _json({"instance": INSTANCE_ID, "db": _touch_database()})
    if path == "/fail":
        return Answer(500, (("Content-Type", "text/plain"), ("Cache-Control", "no-store")), b"failed\n")
    if path == "/invalidate":
        scalekit.invalidate(["product:1"])
        return _json({"instance": INSTANCE_ID, "invalidated": True})
    return Answer(404, (("Content-Type", "text/plain"), ("Cache-Control", "no-store")), b"not found\n")


def absolute_url(scheme: str, headers: dict[str, str], path: str) -> str:
    """The URL a framework that believes forwarded headers would build (werkzeug's ProxyFix and
    Django's USE_X_FORWARDED_HOST read these), to show what such an app renders."""
    host = headers.get("x-forwarded-host") or headers.get("host", "")
    port = headers.get("x-forwarded-port")
    prefix = headers.get("x-forwarded-prefix", "")
    forwarded = headers.get("forwarded", "")
    if "host=" in forwarded:
        host = forwarded.split("host=", 1)[1].split(";")[0].split(",")[0].strip('"')
    return f"{scheme}://{host}{':' + port if port else ''}{prefix}{path}"


def _touch_database() -> str:
    """Run SELECT 1 on the request's pooled connection (SQLite under state_dir by default)."""
    db().connection().execute(text("SELECT 1"))
    return "ok"


# --------------------------------------------------------------------------- WSGI


def inner_wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body_size = len(environ["wsgi.input"].read(length)) if length else 0
    headers = {name[5:].replace("_", "-").lower(): value for name, value in environ.items()
               if name.startswith("HTTP_")}
    result = answer(environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""), environ.get("QUERY_STRING", ""),
                    environ.get("REMOTE_ADDR"), environ.get("HTTP_X_FORWARDED_FOR"), body_size,
                    scheme=environ.get("wsgi.url_scheme", "http"), headers=headers)
    if result.delay_seconds:
        time.sleep(result.delay_seconds)
    response_headers = [*result.headers, ("Content-Length", str(len(result.body)))]
    start_response(f"{result.status} {HTTPStatus(result.status).phrase}", response_headers)
    return [result.body]


class CountingWSGI:
    """Counts requests reaching this process (outside scalekit), and answers /_test/counts."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        self.counts: Counter[str] = Counter()
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == COUNTS_PATH:
            with self.lock:
                body = json.dumps({"instance": INSTANCE_ID, "counts": dict(self.counts)}).encode()
            start_response("200 OK", [("Content-Type", "application/json"), ("Cache-Control", "no-store"),
                                      ("Content-Length", str(len(body)))])
            return [body]
        with self.lock:
            self.counts[path] += 1
        return self.app(environ, start_response)


# --------------------------------------------------------------------------- ASGI


async def inner_asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "websocket":
        await echo_once(receive, send)
        return
    body_size = 0
    more = True
    while more:
        message = await receive()
        body_size += len(message.get("body", b""))
        more = message.get("more_body", False)
    headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
    client = scope.get("client")
    result = answer(scope["method"], scope["path"], scope.get("query_string", b"").decode(),
                    client[0] if client else None, headers.get("x-forwarded-for"), body_size,
                    scheme=scope.get("scheme", "http"), headers=headers)
    if result.delay_seconds:
        await asyncio.sleep(result.delay_seconds)
    await send({"type": "http.response.start", "status": result.status,
                "headers": [(k.lower().encode(), v.encode()) for k, v in result.headers]
                + [(b"content-length", str(len(result.body)).encode())]})
    await send({"type": "http.response.body", "body": result.body})


async def echo_once(receive: Any, send: Any) -> None:
    """``/ws`` (any path): accept, answer one text message with ``echo <text> from <instance>``."""
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    message = await receive()
    if message["type"] == "websocket.receive":
        await send({"type": "websocket.send", "text": f"echo {message.get('text')} from {INSTANCE_ID}"})
    await send({"type": "websocket.close", "code": 1000})


class CountingASGI:
    """ASGI twin of :class:`CountingWSGI`."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.counts: Counter[str] = Counter()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == COUNTS_PATH:
            body = json.dumps({"instance": INSTANCE_ID, "counts": dict(self.counts)}).encode()
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]})
            await send({"type": "http.response.body", "body": body})
            return
        if scope["type"] == "http":
            self.counts[scope["path"]] += 1
        await self.app(scope, receive, send)


_BUILT: dict[str, Any] = {}


def __getattr__(name: str) -> Any:
    """Build ``wsgi_app`` / ``asgi_app`` on first access, so a server process wraps only one."""
    builders: dict[str, Callable[[], Any]] = {
        "wsgi_app": lambda: CountingWSGI(scalekit.wrap(inner_wsgi)),
        "asgi_app": lambda: CountingASGI(scalekit.wrap(inner_asgi)),
    }
    if name not in builders:
        raise AttributeError(name)
    if name not in _BUILT:
        _BUILT[name] = builders[name]()
    return _BUILT[name]
