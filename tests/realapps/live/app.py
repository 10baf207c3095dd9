"""A Starlette app with live parts, as Starlette's docs write them: a WebSocket chat echo,
server-sent events, and a page that greets the signed-in user from a session cookie.

Served by ``scalekit serve tests.realapps.live.app:app`` under a cache rule covering every
path (``SCALEKIT_CACHE_RULES``, set by the test): the rule must not store the WebSocket
upgrade, the event stream or another user's greeting.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

EVENT_COUNT = 5
EVENT_INTERVAL_SECONDS = 0.1
GATE_TIMEOUT_SECONDS = 60.0
_streams = itertools.count(1)
_gates: dict[str, asyncio.Event] = {}


async def homepage(request: Request) -> Response:
    return HTMLResponse("<h1>live</h1><p>a public page</p>")


async def greeting(request: Request) -> Response:
    user = request.session.get("user")
    return PlainTextResponse(f"hello {user}" if user else "hello stranger")


async def login(request: Request) -> Response:
    form = await request.form()
    request.session["user"] = str(form["user"])
    return RedirectResponse("/greeting", status_code=303)


async def events(request: Request) -> Response:
    """Server-sent events; with ``?gate=NAME`` the stream holds after its first event until
    ``POST /release?gate=NAME`` (a client can only see that event if it is passed through live)."""
    stream_number = next(_streams)
    gate = _gates.setdefault(request.query_params["gate"], asyncio.Event()) if "gate" in request.query_params else None

    async def produce() -> AsyncIterator[str]:
        for number in range(EVENT_COUNT):
            yield f"id: {number}\ndata: stream {stream_number} event {number}\n\n"
            if gate is not None and number == 0:
                await asyncio.wait_for(gate.wait(), GATE_TIMEOUT_SECONDS)
            await asyncio.sleep(EVENT_INTERVAL_SECONDS)

    return StreamingResponse(produce(), media_type="text/event-stream")


async def release(request: Request) -> Response:
    _gates.setdefault(request.query_params["gate"], asyncio.Event()).set()
    return PlainTextResponse("released")


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    async for message in websocket.iter_text():
        await websocket.send_text(f"echo: {message}")
    await websocket.close()


app = Starlette(
    routes=[Route("/", homepage), Route("/greeting", greeting), Route("/login", login, methods=["POST"]),
            Route("/events", events), Route("/release", release, methods=["POST"]),
            WebSocketRoute("/ws", echo)],
    middleware=[Middleware(SessionMiddleware, secret_key="realapps-live-not-secret")],
)
