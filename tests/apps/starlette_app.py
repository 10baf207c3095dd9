"""A small Starlette app, bare and wrapped, for the byte-for-byte comparisons.

Same routes as :mod:`tests.apps.flask_app`, plus a websocket echo and lifespan handlers that
record what ran (``/lifespan`` reports it).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

import scalekit

EVENTS: list[str] = []
EVENTS_FILE: str | None = None  # set by the real-server tests: shutdown happens after the last request


def record(event: str) -> None:
    EVENTS.append(event)
    if EVENTS_FILE:
        with open(EVENTS_FILE, "a") as handle:
            handle.write(event + "\n")


async def index(request: Request) -> Response:
    return PlainTextResponse("hello from starlette\n",
                             headers={"Cache-Control": "no-store", "X-App": "starlette"})


async def as_json(request: Request) -> Response:
    return JSONResponse({"items": [1, 2, 3], "name": "shop"}, headers={"Cache-Control": "no-store"})


async def cookies(request: Request) -> Response:
    response = PlainTextResponse("two cookies\n", headers={"Cache-Control": "no-store"})
    response.set_cookie("a", "1")
    response.set_cookie("b", "2", httponly=True)
    return response


async def moved(request: Request) -> Response:
    return RedirectResponse("/", status_code=302)


async def status(request: Request) -> Response:
    code = int(request.path_params["code"])
    return PlainTextResponse(f"status {code}\n", status_code=code, headers={"Cache-Control": "no-store"})


async def boom(request: Request) -> Response:
    raise RuntimeError("boom")


async def echo(request: Request) -> Response:
    body = await request.body()
    return Response(body, media_type="application/octet-stream",
                    headers={"X-Length": str(len(body)), "Cache-Control": "no-store"})


async def stream(request: Request) -> Response:
    gate = request.query_params.get("gate")
    count = int(request.query_params.get("n", "5"))

    async def chunks() -> AsyncIterator[bytes]:
        for index in range(count):
            if index == 1 and gate:
                await wait_for_file(gate)
            yield f"chunk {index}\n".encode()

    return StreamingResponse(chunks(), media_type="text/plain", headers={"Cache-Control": "no-store"})


async def lifespan_events(request: Request) -> Response:
    return JSONResponse(EVENTS, headers={"Cache-Control": "no-store"})


async def wait_for_file(path: str, timeout_seconds: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_seconds
    while not os.path.exists(path) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)


async def websocket_echo(websocket: WebSocket) -> None:
    await websocket.accept(headers=[(b"x-app", b"starlette")])
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") == "close":
            await websocket.close(code=4000)
            return
        if message.get("text") is not None:
            await websocket.send_text("echo:" + message["text"])
        else:
            await websocket.send_bytes(b"echo:" + message["bytes"])


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    record("app-startup")
    yield
    record("app-shutdown")


app = Starlette(routes=[
    Route("/", index),
    Route("/json", as_json),
    Route("/cookies", cookies),
    Route("/redirect", moved),
    Route("/status/{code:int}", status),
    Route("/boom", boom),
    Route("/echo", echo, methods=["POST"]),
    Route("/stream", stream),
    Route("/lifespan", lifespan_events),
    WebSocketRoute("/ws", websocket_echo),
], lifespan=lifespan)


def _record_runtime_hooks(wrapped: object) -> object:
    runtime = wrapped.runtime  # type: ignore[attr-defined]
    runtime.on_startup(lambda: record("scalekit-startup"))
    runtime.on_shutdown(lambda: record("scalekit-shutdown"))
    return wrapped


wrapped_off = _record_runtime_hooks(scalekit.wrap(app, cdn=False, cache=False, pool=False))


def __getattr__(name: str) -> object:
    # Built on first use, so a layer that fails to build fails only the tests that use it.
    if name == "wrapped_defaults":
        globals()[name] = scalekit.wrap(app)
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
wrapped_bare_layers = scalekit.wrap(app, metrics=False, cdn=False, cache=False, pool=False)
