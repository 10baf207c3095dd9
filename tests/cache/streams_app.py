"""Apps that stream, long-poll and upgrade, wrapped by scalekit under cache rules covering them.

Real servers run them (``tests.cache.streams_app:asgi_app`` under uvicorn, ``:wsgi_app``
under gunicorn); in-process tests build their own with :func:`build_asgi` / :func:`build_wsgi`.
Each response is held at named gates the test opens (``POST /__open?gate=NAME``), so a test
knows what the client can have received without timing anything. ``GET /__calls?name=NAME``
says how many times the origin ran for NAME (the last path segment).

ASGI (Starlette): ``/sse/N`` (text/event-stream, three events, gate ``N-1`` and ``N-2`` before
the second and third), ``/stream/N`` (chunked text without length, same gates), ``/endless/N``
(chunks until the client goes away), ``/download/N`` (16 MiB in 64 KiB chunks, max-age=60),
``/poll/N`` (a long poll held at gate ``N`` when the request says ``x-hold: 1``), ``/slow/N``
(no-store, call C held at gate ``N-C``), ``/ws`` (a
WebSocket echo; no HTTP route, so an upgrade the server hands over as HTTP gets a 404).
WSGI: ``/gen/N`` (a generator, same gates as ``/stream/N``), ``/slow/N`` and ``/poll/N`` as above.
"""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

import scalekit
from scalekit.config import load_config

RULE_PATHS = ("/sse/*", "/stream/*", "/endless/*", "/gen/*", "/poll/*", "/slow/*", "/ws*")
DOWNLOAD_CHUNK = b"d" * 65536
DOWNLOAD_CHUNKS = 256  # 16 MiB: more than the sockets buffer


def config(**cache: Any) -> Any:
    """Cache rules over every streaming path, the CDN layer on (ETags included), no pool."""
    settings: dict[str, Any] = {
        "disk": {"enabled": False}, "coalesce_timeout_seconds": 30.0,
        "rules": [{"path": path, "ttl_seconds": 60} for path in RULE_PATHS], **cache}
    return load_config({"cache": settings, "cdn": {"enabled": True, "etag": True}, "pool": False,
                        "metrics": False, "allowed_hosts": ["127.0.0.1", "localhost", "test"]},
                       environ={}, cwd="/nonexistent")


class Calls:
    """Origin calls by name, and gates by name (created closed on first use)."""

    def __init__(self, make_gate: Any) -> None:
        self.lock = threading.Lock()
        self.counts: dict[str, int] = defaultdict(int)
        self.gates: dict[str, Any] = defaultdict(make_gate)

    def count(self, name: str) -> int:
        with self.lock:
            self.counts[name] += 1
            return self.counts[name]


def _name(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


# --------------------------------------------------------------------------- ASGI


def build_asgi(**cache: Any) -> tuple[Any, Calls]:
    calls = Calls(asyncio.Event)

    async def sse(request: Request) -> Response:
        name = request.path_params["name"]
        calls.count(name)

        async def events() -> AsyncIterator[bytes]:
            for number in range(3):
                if number:
                    await calls.gates[f"{name}-{number}"].wait()
                yield f"data: event {number}\n\n".encode()
        return StreamingResponse(events(), media_type="text/event-stream")

    async def stream(request: Request) -> Response:
        name = request.path_params["name"]
        call = calls.count(name)

        async def parts() -> AsyncIterator[bytes]:
            for number in range(3):
                if number:
                    await calls.gates[f"{name}-{number}"].wait()
                yield f"call {call} part {number}\n".encode()
        return StreamingResponse(parts(), media_type="text/plain")

    async def endless(request: Request) -> Response:
        calls.count(request.path_params["name"])

        async def forever() -> AsyncIterator[bytes]:
            number = 0
            while True:
                yield f"line {number}\n".encode()
                number += 1
                await asyncio.sleep(0.005)
        return StreamingResponse(forever(), media_type="text/plain")

    async def download(request: Request) -> Response:
        calls.count(request.path_params["name"])

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(DOWNLOAD_CHUNKS):
                yield DOWNLOAD_CHUNK
        return StreamingResponse(chunks(), media_type="application/octet-stream",
                                 headers={"cache-control": "max-age=60"})

    async def poll(request: Request) -> Response:
        name = request.path_params["name"]
        calls.count(name)
        if request.headers.get("x-hold"):
            await calls.gates[name].wait()
        return PlainTextResponse(f"polled by {request.headers.get('authorization')}")

    async def slow(request: Request) -> Response:
        name = request.path_params["name"]
        call = calls.count(name)
        await calls.gates[f"{name}-{call}"].wait()
        return PlainTextResponse(f"slow call {call}", headers={"cache-control": "no-store"})

    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        message = await websocket.receive_text()
        await websocket.send_text(f"echo {message}")
        await websocket.close()

    app = Starlette(routes=[
        Route("/sse/{name}", sse), Route("/stream/{name}", stream), Route("/endless/{name}", endless),
        Route("/download/{name}", download), Route("/poll/{name}", poll), Route("/slow/{name}", slow),
        WebSocketRoute("/ws", echo),
    ])
    wrapped = scalekit.wrap(app, config=config(**cache))

    async def root(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/__"):
            query = {k: v[-1] for k, v in parse_qs(scope["query_string"].decode()).items()}
            if scope["path"] == "/__open":
                calls.gates[query["gate"]].set()
                body = b"ok"
            else:
                body = str(calls.counts.get(query["name"], 0)).encode()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": body})
            return
        await wrapped(scope, receive, send)
    return root, calls


# --------------------------------------------------------------------------- WSGI


def build_wsgi(**cache: Any) -> tuple[Any, Calls]:
    calls = Calls(threading.Event)

    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes] | list[bytes]:
        path = environ.get("PATH_INFO", "")
        name = _name(path)
        call = calls.count(name)
        if path.startswith("/gen/"):
            return _generator(calls, name, call, start_response)
        if path.startswith("/slow/"):
            calls.gates[f"{name}-{call}"].wait(30)
            body = f"slow call {call}".encode()
            start_response("200 OK", [("content-type", "text/plain"), ("cache-control", "no-store"),
                                      ("content-length", str(len(body)))])
            return [body]
        if path.startswith("/poll/"):
            if environ.get("HTTP_X_HOLD"):
                calls.gates[name].wait(30)
            body = f"polled by {environ.get('HTTP_AUTHORIZATION')}".encode()
            start_response("200 OK", [("content-type", "text/plain"), ("content-length", str(len(body)))])
            return [body]
        start_response("404 Not Found", [("content-type", "text/plain"), ("content-length", "9")])
        return [b"not found"]

    wrapped = scalekit.wrap(app, config=config(**cache))

    def root(environ: dict[str, Any], start_response: Any) -> Any:
        path = environ.get("PATH_INFO", "")
        if path.startswith("/__"):
            query = {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
            if path == "/__open":
                calls.gates[query["gate"]].set()
                body = b"ok"
            else:
                body = str(calls.counts.get(query["name"], 0)).encode()
            start_response("200 OK", [("content-length", str(len(body)))])
            return [body]
        return wrapped(environ, start_response)
    return root, calls


def _generator(calls: Calls, name: str, call: int, start_response: Any) -> Iterator[bytes]:
    start_response("200 OK", [("content-type", "text/plain")])
    for number in range(3):
        if number:
            calls.gates[f"{name}-{number}"].wait(30)
        yield f"call {call} part {number}\n".encode()


# Module-level apps for real servers (one set of gates per server process).
asgi_app, _ = build_asgi()
wsgi_app, _ = build_wsgi()
