"""The slow-reader test apps for real servers: a pool of two connections, bodies bigger than
any socket buffer. Configured by environment (set by test_slow_readers.py): ``SK_POOL_URL``.

``/big``: uses the database, answers a fully produced 16 MiB body (WSGI: a list; ASGI: one
message with more_body, then the last, empty one). ``/stream``: uses the database, calls
``release_at_response_start()``, then streams 16 MiB. ``/small``: uses the database, answers
a few bytes. ``/checked_out``: the connections of this process not back in the pool.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import scalekit
from scalekit.pool import db, release_at_response_start

URL = os.environ.get("SK_POOL_URL", "sqlite://")
POOL = {"databases": {"default": {"url": URL, "pool_size": 2, "max_overflow": 0,
                                  "pool_timeout_seconds": 3}}}
CHUNK = b"x" * (1024 * 1024)
CHUNKS = 16
BIG = CHUNK * CHUNKS


def _headers(length: int) -> list[tuple[str, str]]:
    return [("content-type", "application/octet-stream"), ("content-length", str(length))]


def _stream() -> Iterator[bytes]:
    for _ in range(CHUNKS):
        yield CHUNK


def _wsgi(environ: dict[str, Any], start_response: Any) -> Any:
    path = environ["PATH_INFO"]
    if path == "/checked_out":
        start_response("200 OK", _headers(1))
        return [str(wsgi_app.runtime.services["pool"].checked_out()).encode()]
    db().connection().exec_driver_sql("SELECT 1").all()
    if path == "/big":
        start_response("200 OK", _headers(len(BIG)))
        return [BIG]
    if path == "/stream":
        release_at_response_start()
        start_response("200 OK", _headers(len(BIG)))
        return _stream()
    start_response("200 OK", _headers(5))
    return [b"small"]


async def _asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    path = scope["path"]
    if path == "/checked_out":
        body = str(asgi_app.runtime.services["pool"].checked_out()).encode()
        await send({"type": "http.response.start", "status": 200, "headers": _asgi_headers(len(body))})
        await send({"type": "http.response.body", "body": body})
        return
    (await db().aconnection()).exec_driver_sql("SELECT 1").all()
    if path == "/big":
        await send({"type": "http.response.start", "status": 200, "headers": _asgi_headers(len(BIG))})
        await send({"type": "http.response.body", "body": BIG, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return
    if path == "/stream":
        release_at_response_start()
        await send({"type": "http.response.start", "status": 200, "headers": _asgi_headers(len(BIG))})
        for chunk in _stream():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    await send({"type": "http.response.start", "status": 200, "headers": _asgi_headers(5)})
    await send({"type": "http.response.body", "body": b"small"})


def _asgi_headers(length: int) -> list[tuple[bytes, bytes]]:
    return [(name.encode(), value.encode()) for name, value in _headers(length)]


wsgi_app = scalekit.wrap(_wsgi, cache=False, cdn=False, pool=POOL)
asgi_app = scalekit.wrap(_asgi, cache=False, cdn=False, pool=POOL)
