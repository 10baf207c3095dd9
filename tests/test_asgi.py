"""The ASGI driver: a wrapped app stays a correct ASGI 3 app and passes messages untouched.

Direct calls check identity (the very message objects and callables reach the other side),
streaming order, lifespan forwarding with the runtime's hooks, disconnects, trailers and
pathsend; Starlette's test client checks byte-for-byte equality with the bare app.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from starlette.testclient import TestClient

import scalekit
from tests.apps import starlette_app
from tests.direct import asgi_scope, call_asgi

VARIANTS = {
    "metrics only": {"cdn": False, "cache": False, "pool": False},
    "all layers off": {"metrics": False, "cdn": False, "cache": False, "pool": False},
    "defaults": {},
}
NO_STORE = [(b"content-type", b"text/plain"), (b"cache-control", b"no-store")]


@pytest.fixture(params=list(VARIANTS), ids=list(VARIANTS))
def wrap(request: pytest.FixtureRequest) -> Any:
    settings = VARIANTS[request.param]
    return lambda app: scalekit.wrap(app, **settings)


def test_messages_reach_the_server_untouched_and_in_order(wrap: Any) -> None:
    """Streaming (more_body), trailers and pathsend: the same objects, unbuffered."""
    events: list[str] = []
    messages = [
        {"type": "http.response.start", "status": 200, "headers": NO_STORE, "trailers": True},
        {"type": "http.response.body", "body": b"a", "more_body": True},
        {"type": "http.response.body", "body": b"b", "more_body": True},
        {"type": "http.response.body", "body": b"", "more_body": False},
        {"type": "http.response.trailers", "headers": [(b"x-checksum", b"1")], "more_trailers": False},
    ]

    async def app(scope: Any, receive: Any, send: Any) -> None:
        for index, message in enumerate(messages):
            events.append(f"app sends {index}")
            await send(message)

    result = call_asgi(wrap(app), asgi_scope(extensions={"http.response.trailers": {}}),
                       send_hook=lambda m: events.append(f"server got {messages.index(m)}"))
    assert all(got is sent for got, sent in zip(result.sent, messages, strict=True))
    assert events == [f"{who} {i}" for i in range(5) for who in ("app sends", "server got")]


def test_pathsend_passes_untouched(wrap: Any) -> None:
    messages = [{"type": "http.response.start", "status": 200, "headers": NO_STORE},
                {"type": "http.response.pathsend", "path": "/etc/hostname"}]

    async def app(scope: Any, receive: Any, send: Any) -> None:
        for message in messages:
            await send(message)

    result = call_asgi(wrap(app), asgi_scope(extensions={"http.response.pathsend": {}}))
    assert all(got is sent for got, sent in zip(result.sent, messages, strict=True))


def test_request_body_streams_in_and_disconnect_reaches_the_app(wrap: Any) -> None:
    incoming = [{"type": "http.request", "body": b"part1", "more_body": True},
                {"type": "http.request", "body": b"part2", "more_body": False},
                {"type": "http.disconnect"}]
    received: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        for _ in incoming:
            received.append(await receive())
        # The client went away: a well-behaved app stops without answering.

    result = call_asgi(wrap(app), incoming=list(incoming))
    assert [m is original for m, original in zip(received, incoming, strict=True)] == [True] * 3
    assert result.sent == []


def test_websocket_scope_goes_straight_to_the_app(wrap: Any) -> None:
    seen: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.update(scope=scope, receive=receive, send=send)
        await send({"type": "websocket.accept"})

    scope = asgi_scope(path="/ws", kind="websocket")

    async def run() -> None:
        async def receive() -> Any:
            return {"type": "websocket.connect"}

        sent: list[Any] = []

        async def send(message: Any) -> None:
            sent.append(message)

        await wrap(app)(scope, receive, send)
        assert seen["scope"] is scope and seen["receive"] is receive and seen["send"] is send
        assert sent == [{"type": "websocket.accept"}]

    asyncio.run(run())


def test_app_exception_propagates(wrap: Any) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise KeyError("broken app")

    with pytest.raises(KeyError, match="broken app"):
        call_asgi(wrap(app))


def test_context_is_current_during_the_request_and_reset_after(wrap: Any) -> None:
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append((scope["scalekit.context"], scalekit.current()))
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def run() -> None:
        wrapped = wrap(app)

        async def receive() -> Any:
            return {"type": "http.request", "body": b""}

        async def send(message: Any) -> None:
            pass

        await wrapped(asgi_scope(), receive, send)
        assert scalekit.current() is None

    asyncio.run(run())
    assert seen[0][0] is seen[0][1] is not None


# --------------------------------------------------------------------------- lifespan


def _lifespan_messages() -> list[dict[str, Any]]:
    return [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]


async def lifespan_app(scope: Any, receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            EVENTS.append("app-startup")
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            EVENTS.append("app-shutdown")
            await send({"type": "lifespan.shutdown.complete"})
            return


async def no_lifespan_app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        raise ValueError("this app does not speak lifespan")


async def ignores_lifespan_app(scope: Any, receive: Any, send: Any) -> None:
    return None


EVENTS: list[str] = []


@pytest.mark.parametrize(("app", "expected"), [
    pytest.param(lifespan_app, ["scalekit-startup", "app-startup", "app-shutdown", "scalekit-shutdown"],
                 id="app speaks lifespan"),
    pytest.param(no_lifespan_app, ["scalekit-startup", "scalekit-shutdown"], id="app raises on lifespan"),
    pytest.param(ignores_lifespan_app, ["scalekit-startup", "scalekit-shutdown"], id="app returns at once"),
])
def test_lifespan_is_forwarded_with_the_runtime_hooks(app: Any, expected: list[str]) -> None:
    EVENTS.clear()
    wrapped = scalekit.wrap(app, kind="asgi", cdn=False, cache=False, pool=False)
    wrapped.runtime.on_startup(lambda: EVENTS.append("scalekit-startup"))

    async def async_shutdown_hook() -> None:
        EVENTS.append("scalekit-shutdown")

    wrapped.runtime.on_shutdown(async_shutdown_hook)
    result = call_asgi(wrapped, {"type": "lifespan", "asgi": {"version": "3.0"}}, _lifespan_messages())
    assert EVENTS == expected
    assert [m["type"] for m in result.sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert wrapped.runtime.closed


def test_failing_startup_hook_is_reported_to_the_server() -> None:
    wrapped = scalekit.wrap(no_lifespan_app, cdn=False, cache=False, pool=False)

    def broken() -> None:
        raise RuntimeError("cannot reach the database")

    wrapped.runtime.on_startup(broken)
    result = call_asgi(wrapped, {"type": "lifespan"}, _lifespan_messages())
    assert result.sent[0]["type"] == "lifespan.startup.failed"
    assert "cannot reach the database" in result.sent[0]["message"]


def test_first_request_starts_the_runtime_without_lifespan() -> None:
    started: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        started.append("request")
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def hook() -> None:
        started.append("startup")

    wrapped = scalekit.wrap(app, cdn=False, cache=False, pool=False)
    wrapped.runtime.on_startup(hook)
    call_asgi(wrapped)
    call_asgi(wrapped)
    assert started == ["startup", "request", "request"]


# --------------------------------------------------------------------------- Starlette

STARLETTE_REQUESTS = [
    pytest.param("GET", "/", b"", id="text"),
    pytest.param("GET", "/json", b"", id="json"),
    pytest.param("GET", "/cookies", b"", id="two set-cookie headers"),
    pytest.param("GET", "/redirect", b"", id="redirect"),
    pytest.param("GET", "/status/404", b"", id="404"),
    pytest.param("GET", "/status/503", b"", id="503"),
    pytest.param("GET", "/missing", b"", id="no route"),
    pytest.param("GET", "/boom", b"", id="exception in view"),
    pytest.param("HEAD", "/", b"", id="head"),
    pytest.param("POST", "/echo", b"\x00binary\xffbody", id="post body"),
    pytest.param("GET", "/stream?n=4", b"", id="streamed"),
]


def _exchange(app: Any, method: str, path: str, body: bytes) -> tuple[int, list[tuple[bytes, bytes]], list[bytes]]:
    with TestClient(app, raise_server_exceptions=False) as client:
        with client.stream(method, path, content=body or None) as response:
            chunks = [chunk for chunk in response.iter_raw() if chunk]
            return response.status_code, response.headers.raw, chunks


@pytest.mark.parametrize("variant", ["off", "defaults"])
@pytest.mark.parametrize(("method", "path", "body"), STARLETTE_REQUESTS)
def test_starlette_wrapped_is_byte_for_byte_the_bare_app(variant: str, method: str, path: str,
                                                        body: bytes) -> None:
    wrapped = getattr(starlette_app, f"wrapped_{variant}")
    assert _exchange(wrapped, method, path, body) == _exchange(starlette_app.app, method, path, body)


@pytest.mark.parametrize("variant", ["off", "defaults"])
def test_starlette_websocket_through_the_wrapper(variant: str) -> None:
    with TestClient(getattr(starlette_app, f"wrapped_{variant}")) as client:
        with client.websocket_connect("/ws") as websocket:
            websocket.send_text("hi")
            assert websocket.receive_text() == "echo:hi"
            websocket.send_bytes(b"\x00")
            assert websocket.receive_bytes() == b"echo:\x00"
