"""The ASGI driver: a wrapped app stays a correct ASGI 3 app and passes messages untouched.

Direct calls check identity (the very message objects and callables reach the other side),
streaming order, lifespan forwarding with the runtime's hooks, disconnects, trailers and
pathsend; Starlette's test client checks byte-for-byte equality with the bare app.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

import scalekit
from tests.apps import starlette_app
from tests.direct import asgi_scope, assert_single_date, call_asgi, comparable_headers

VARIANTS = {
    "metrics only": {"cdn": False, "cache": False, "pool": False},
    "all layers off": {"metrics": False, "cdn": False, "cache": False, "pool": False},
    "defaults": {},
}
NO_STORE = [(b"content-type", b"text/plain"), (b"cache-control", b"no-store")]


# Variants whose layers pass every message on as it is; the default layers may send their own
# http.response.start (RFC 9211 Cache-Status, Age) but must pass everything else untouched.
PASS_THROUGH = ("metrics only", "all layers off")


@pytest.fixture(params=list(VARIANTS), ids=list(VARIANTS))
def variant(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def wrap(variant: str) -> Any:
    settings = VARIANTS[variant]
    return lambda app: scalekit.wrap(app, **settings)


def assert_passed_untouched(got: list[Any], sent: list[Any], variant: str) -> None:
    assert len(got) == len(sent)
    for received, original in zip(got, sent, strict=True):
        if received["type"] == "http.response.start" and variant not in PASS_THROUGH:
            assert received["status"] == original["status"]
            assert comparable_headers(received["headers"]) == comparable_headers(original["headers"])
            assert received.get("trailers", False) == original.get("trailers", False)
        else:
            assert received is original


def test_messages_reach_the_server_untouched_and_in_order(wrap: Any, variant: str) -> None:
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
                       send_hook=lambda m: events.append(f"server got {len(events) // 2}"))
    assert_passed_untouched(result.sent, messages, variant)
    assert events == [f"{who} {i}" for i in range(5) for who in ("app sends", "server got")]


def test_pathsend_passes_untouched(wrap: Any, variant: str) -> None:
    messages = [{"type": "http.response.start", "status": 200, "headers": NO_STORE},
                {"type": "http.response.pathsend", "path": "/etc/hostname"}]

    async def app(scope: Any, receive: Any, send: Any) -> None:
        for message in messages:
            await send(message)

    result = call_asgi(wrap(app), asgi_scope(extensions={"http.response.pathsend": {}}))
    assert_passed_untouched(result.sent, messages, variant)


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

        before = scalekit.current()
        await wrapped(asgi_scope(), receive, send)
        assert scalekit.current() is before  # reset: the next request on this task starts clean

    asyncio.run(run())
    assert seen[0][0] is seen[0][1] is not None
    assert isinstance(seen[0][0], scalekit.RequestContext)


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

# Responses without Cache-Control may get layer-stamped headers once the CDN layer is real; the
# "defaults" variant compares only responses that say no-store (which no layer may alter).
NOT_LAYER_NEUTRAL = {"/redirect", "/missing", "/boom"}
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
    with TestClient(app, raise_server_exceptions=False) as client, \
            client.stream(method, path, content=body or None) as response:
        chunks = [chunk for chunk in response.iter_raw() if chunk]
        return response.status_code, response.headers.raw, chunks


def variant_params(requests: list[Any]) -> list[Any]:
    """(variant, method, path, body) for each request; "defaults" only for no-store responses."""
    return [pytest.param(variant, *param.values, id=f"{variant}-{param.id}")
            for variant in ("off", "defaults") for param in requests
            if variant == "off" or param.values[1] not in NOT_LAYER_NEUTRAL]


@pytest.mark.parametrize(("variant", "method", "path", "body"), variant_params(STARLETTE_REQUESTS))
def test_starlette_wrapped_is_byte_for_byte_the_bare_app(variant: str, method: str, path: str,
                                                        body: bytes) -> None:
    wrapped = getattr(starlette_app, f"wrapped_{variant}")
    bare, got = _exchange(starlette_app.app, method, path, body), _exchange(wrapped, method, path, body)
    if variant == "off":
        assert got == bare
    else:
        assert (got[0], comparable_headers(got[1]), got[2]) == (bare[0], comparable_headers(bare[1]), bare[2])
        assert_single_date(got[1])


@pytest.mark.parametrize("variant", ["off", "defaults"])
def test_starlette_websocket_through_the_wrapper(variant: str) -> None:
    with TestClient(getattr(starlette_app, f"wrapped_{variant}")) as client, \
            client.websocket_connect("/ws") as websocket:
        websocket.send_text("hi")
        assert websocket.receive_text() == "echo:hi"
        websocket.send_bytes(b"\x00")
        assert websocket.receive_bytes() == b"echo:\x00"


# --------------------------------------------------------------------------- under uvicorn


@pytest.fixture(scope="module")
def uvicorn_starlette(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """uvicorn serving the three variants; yields the URL and the lifespan events file, which
    is complete once the server has stopped (tests read it after the fixture ends)."""
    from tests.servers import run_server
    events = tmp_path_factory.mktemp("lifespan") / "events.txt"
    with run_server("uvicorn", "tests.apps.dispatch:starlette_variants",
                    env={"TEST_LIFESPAN_EVENTS_FILE": str(events)}) as url:
        yield url, events


@pytest.mark.server
@pytest.mark.parametrize(("variant", "method", "path", "body"), variant_params(STARLETTE_REQUESTS))
def test_starlette_under_uvicorn_is_byte_for_byte_the_bare_app(
        uvicorn_starlette: tuple[str, Path], variant: str, method: str, path: str, body: bytes) -> None:
    from tests.direct import raw_http, without_date
    url = uvicorn_starlette[0]
    bare = raw_http(url, method, path, headers=[("X-Variant", "bare")], body=body)
    wrapped = raw_http(url, method, path, headers=[("X-Variant", variant)], body=body)
    assert bare.startswith(b"HTTP/1.1 ")
    if variant == "off":
        assert without_date(wrapped) == without_date(bare)
    else:
        from tests.test_wsgi import assert_same_semantics
        assert_same_semantics(bare, wrapped, single_date=False)


@pytest.mark.server
@pytest.mark.parametrize("variant", ["bare", "off", "defaults"])
def test_starlette_stream_reaches_the_client_before_the_app_finishes(
        uvicorn_starlette: tuple[str, Path], variant: str, tmp_path: Path) -> None:
    import httpx
    gate = tmp_path / "gate"
    with httpx.stream("GET", f"{uvicorn_starlette[0]}/stream", params={"gate": str(gate), "n": "3"},
                      headers={"X-Variant": variant}, timeout=20) as response:
        chunks = response.iter_raw()
        first = next(chunks)
        gate.touch()
        rest = b"".join(chunks)
    assert (first, rest) == (b"chunk 0\n", b"chunk 1\nchunk 2\n")


@pytest.mark.server
@pytest.mark.parametrize("variant", ["bare", "off", "defaults"])
def test_websocket_round_trip_under_uvicorn(uvicorn_starlette: tuple[str, Path], variant: str) -> None:
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect
    url = uvicorn_starlette[0].replace("http://", "ws://") + "/ws"
    with connect(url, additional_headers={"X-Variant": variant}, open_timeout=20) as websocket:
        assert websocket.response is not None
        assert websocket.response.headers["x-app"] == "starlette"
        websocket.send("hello")
        assert websocket.recv(timeout=20) == "echo:hello"
        websocket.send(b"\x01\x02")
        assert websocket.recv(timeout=20) == b"echo:\x01\x02"
        websocket.send("close")
        with pytest.raises(ConnectionClosed) as closed:
            websocket.recv(timeout=20)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4000


@pytest.mark.server
def test_lifespan_under_uvicorn_runs_scalekit_hooks_around_the_app(tmp_path_factory: pytest.TempPathFactory) -> None:
    import httpx

    from tests.servers import run_server
    events = tmp_path_factory.mktemp("lifespan-only") / "events.txt"
    with run_server("uvicorn", "tests.apps.dispatch:starlette_variants",
                    env={"TEST_LIFESPAN_EVENTS_FILE": str(events)}) as url:
        during = httpx.get(f"{url}/lifespan", headers={"X-Variant": "off"}, timeout=20).json()
    assert during == ["scalekit-startup", "app-startup"]
    assert events.read_text().split() == ["scalekit-startup", "app-startup", "app-shutdown", "scalekit-shutdown"]


@pytest.mark.server
def test_client_disconnect_mid_stream_under_uvicorn(uvicorn_starlette: tuple[str, Path], tmp_path: Path) -> None:
    """The client goes away during a streamed response: the request still ends (in-flight back
    to where it was) and the next requests are served."""
    import socket
    import time

    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    url = uvicorn_starlette[0]

    def in_flight() -> float:
        body = httpx.get(f"{url}/metrics", headers={"X-Variant": "off"}, timeout=20).text
        for family in text_string_to_metric_families(body):
            for sample in family.samples:
                if sample.name == "scalekit_http_requests_in_flight":
                    return float(sample.value)
        raise AssertionError("no in-flight gauge")

    baseline = in_flight()
    gate = tmp_path / "gate"
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=20) as sock:
        sock.sendall(f"GET /stream?gate={gate}&n=3 HTTP/1.1\r\nHost: x\r\nX-Variant: off\r\n\r\n".encode())
        received = b""
        while b"chunk 0" not in received:  # headers and the first chunk may come apart
            data = sock.recv(65536)
            assert data, f"connection closed early: {received!r}"
            received += data
        assert in_flight() == baseline + 1
    gate.touch()  # the app produces its next chunk into a closed connection
    deadline = time.monotonic() + 20
    while in_flight() != baseline:
        assert time.monotonic() < deadline, "the disconnected request never finished"
        time.sleep(0.05)
    assert httpx.get(f"{url}/", headers={"X-Variant": "off"}, timeout=20).status_code == 200


def test_a_dropped_message_is_awaited_like_any_other() -> None:
    # Layers' send wrappers hand back asgi.DONE for a message they drop; an app awaits it like
    # the server's own send, as often as it sends.
    from scalekit.asgi import DONE

    async def twice() -> list[Any]:
        return [await DONE, await DONE]

    assert asyncio.run(twice()) == [None, None]
