"""Streams are passed through as they are produced, never buffered; WebSocket upgrades are
never cached.

A streamed response (server-sent events, chunked without a length, a body iterator that keeps
producing) reaches the client chunk by chunk; a copy goes into the cache only when it ends
within ``max_body_bytes``, and ``text/event-stream`` never does. The in-process tests use
witness apps: each chunk after the first is produced only once the client has received the one
before, and an app asked for a chunk too early records it (WSGI), or waits for the client and
gives up (ASGI), so a layer holding the stream back is caught without timing anything.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
from starlette.responses import StreamingResponse

import scalekit
from tests.cache.streams_app import config
from tests.direct import asgi_scope, call_wsgi
from tests.servers import run_server

CHUNKS = 3
HANDOFF_SECONDS = 10.0
READ_SECONDS = 15.0
SSE = "text/event-stream"


# --------------------------------------------------------------------------- witness apps


class Witness:
    """What the client received and which chunks the app was asked for too early."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.held: list[int] = []
        self.calls = 0
        # The test's hook, called with the number of chunks received (ASGI: may return a
        # coroutine, awaited before the chunk is acknowledged).
        self.on_chunk: Callable[[int], Any] = lambda number: None
        self.wake: Callable[[], None] = lambda: None  # the ASGI app's

    def deliver(self, chunk: bytes) -> Any:
        if chunk:
            self.received.append(chunk)
            outcome = self.on_chunk(len(self.received))
            self.wake()
            return outcome
        return None


def witness_wsgi(witness: Witness, *, content_type: str = "text/plain", chunks: int | None = CHUNKS,
                 headers: tuple[tuple[str, str], ...] = ()) -> Any:
    """A generator app; ``chunks=None``: it never ends."""
    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        witness.calls += 1
        call = witness.calls
        if environ["REQUEST_METHOD"] == "POST":
            start_response("204 No Content", [])
            return
        start_response("200 OK", [("content-type", content_type), *headers])
        number = 0
        while chunks is None or number < chunks:
            if len(witness.received) < number:
                witness.held.append(number)
            yield f"call {call} part {number}\n".encode()
            number += 1
    return app


def witness_asgi(witness: Witness, *, content_type: str = "text/plain", chunks: int | None = CHUNKS,
                 headers: dict[str, str] | None = None) -> Any:
    """A Starlette StreamingResponse; before each chunk it waits for the client to have the last."""
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        witness.calls += 1
        call = witness.calls
        if scope["method"] == "POST":
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        delivered = asyncio.Event()
        witness.wake = delivered.set

        async def parts() -> AsyncIterator[bytes]:
            number = 0
            while chunks is None or number < chunks:
                if len(witness.received) < number:
                    delivered.clear()
                    try:
                        await asyncio.wait_for(delivered.wait(), HANDOFF_SECONDS)
                    except TimeoutError:
                        witness.held.append(number)
                yield f"call {call} part {number}\n".encode()
                number += 1

        response = StreamingResponse(parts(), media_type=content_type, headers=headers)
        await response(scope, receive, send)
    return app


def wsgi_get(app: Any, witness: Witness, path: str, *, stop_after: int | None = None,
             headers: tuple[tuple[str, str], ...] = ()) -> tuple[int, dict[str, str], bytes]:
    witness.received = []
    result = call_wsgi(app, "GET", path, on_chunk=witness.deliver, stop_after=stop_after,
                       headers=(("host", "test"), *headers))
    return result.status_code, {k.lower(): v for k, v in result.headers}, result.body


def asgi_get(app: Any, witness: Witness, path: str, *, stop_after: int | None = None,
             headers: tuple[tuple[str, str], ...] = ()) -> tuple[int, dict[str, str], bytes]:
    """One request; ``stop_after=N``: the client disconnects once it has N chunks."""
    witness.received = []
    sent: list[dict[str, Any]] = []
    gone = asyncio.Event()

    async def run() -> None:
        requested = [False]

        async def receive() -> dict[str, Any]:
            if not requested[0]:
                requested[0] = True
                return {"type": "http.request", "body": b""}
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if gone.is_set():
                raise OSError("the client went away")
            sent.append(message)
            if message["type"] == "http.response.body":
                outcome = witness.deliver(message.get("body", b""))
                if asyncio.iscoroutine(outcome):
                    await outcome
                if stop_after is not None and len(witness.received) >= stop_after:
                    gone.set()

        raw = [(b"host", b"test"), *((n.encode(), v.encode()) for n, v in headers)]
        scope = asgi_scope("GET", path, headers=raw)
        scope["headers"] = [item for item in scope["headers"] if item != (b"host", b"testserver")]
        try:
            await app(scope, receive, send)
        except OSError:
            pass

    asyncio.run(run())
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], {k.decode().lower(): v.decode() for k, v in start["headers"]}, body


@pytest.fixture(params=["wsgi", "asgi"])
def driver(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def wrapped(kind: str, witness: Witness, **options: Any) -> tuple[Any, Callable[..., Any]]:
    """The witness app of ``kind`` under scalekit (rules over /stream/*, /sse/*, /ws*), and its get."""
    cache = options.pop("cache", {})
    app = witness_wsgi(witness, **options) if kind == "wsgi" else witness_asgi(
        witness, **{**options, "headers": dict(options.get("headers", ()))})
    app = scalekit.wrap(app, config=config(**cache))
    get = wsgi_get if kind == "wsgi" else asgi_get
    return app, lambda path, **kw: get(app, witness, path, **kw)


# --------------------------------------------------------------------------- streams (in process)


def test_server_sent_events_pass_one_by_one_and_are_never_stored(driver: str) -> None:
    witness = Witness()
    _, get = wrapped(driver, witness, content_type=SSE)
    status, headers, _ = get("/sse/events")
    assert status == 200 and witness.held == []
    assert len(witness.received) == CHUNKS
    assert "content-length" not in headers and "etag" not in headers
    get("/sse/events")
    assert witness.calls == 2  # not replayed from the cache


def test_a_stream_without_length_passes_as_produced_and_is_stored_when_it_ends(driver: str) -> None:
    witness = Witness()
    _, get = wrapped(driver, witness)
    status, headers, body = get("/stream/parts")
    assert status == 200 and witness.held == [] and len(witness.received) == CHUNKS
    assert body == b"".join(f"call 1 part {n}\n".encode() for n in range(CHUNKS))
    status, headers, again = get("/stream/parts")
    assert again == body and witness.calls == 1
    assert "; hit" in headers["cache-status"] and headers["content-length"] == str(len(body))


def test_a_stream_longer_than_the_bound_passes_and_is_not_stored(driver: str) -> None:
    witness = Witness()
    _, get = wrapped(driver, witness, cache={"max_body_bytes": 20})
    get("/stream/long")
    assert witness.held == [] and len(witness.received) == CHUNKS
    get("/stream/long")
    assert witness.calls == 2


def test_a_stream_its_client_left_is_not_stored(driver: str) -> None:
    witness = Witness()
    _, get = wrapped(driver, witness)
    get("/stream/left", stop_after=1)
    get("/stream/left")
    assert witness.calls == 2


def test_an_endless_stream_is_delivered_as_produced(driver: str) -> None:
    witness = Witness()
    _, get = wrapped(driver, witness, chunks=None)
    get("/stream/endless", stop_after=5)
    assert witness.held == [] and len(witness.received) == 5
    get("/stream/endless", stop_after=2)
    assert witness.calls == 2


def test_a_stream_overlapping_a_tag_invalidation_is_not_stored(driver: str) -> None:
    witness = Witness()
    _, get = wrapped(driver, witness, headers=(("surrogate-key", "streamed"),))
    witness.on_chunk = lambda number: scalekit.invalidate(["streamed"]) if number == 1 else None
    get("/stream/tagged")
    get("/stream/tagged")
    assert witness.calls == 2


def test_a_stream_overlapping_an_unsafe_request_to_its_uri_is_not_stored(driver: str) -> None:
    # RFC 9111 §4.4: the POST invalidates the URI; the copy of the GET that was streaming then
    # must not be stored afterwards (its mark was read before the origin was called).
    witness = Witness()
    app, get = wrapped(driver, witness)

    def post(number: int) -> Any:
        if number != 1:
            return None
        if driver == "wsgi":
            return call_wsgi(app, "POST", "/stream/posted", headers=(("host", "test"),))

        async def asgi_post() -> None:
            async def receive() -> dict[str, Any]:
                return {"type": "http.request", "body": b""}

            async def discard(message: dict[str, Any]) -> None:
                return None
            scope = asgi_scope("POST", "/stream/posted", headers=[(b"host", b"test")])
            scope["headers"] = [(b"host", b"test")]
            await app(scope, receive, discard)
        return asgi_post()

    witness.on_chunk = post
    get("/stream/posted")
    witness.on_chunk = lambda number: None
    get("/stream/posted")
    assert witness.calls == 3  # GET, POST, and the GET again: nothing was stored


def test_a_declared_length_stream_is_not_held_back_for_its_etag(driver: str) -> None:
    # The CDN layer hashes a body it already has whole; it never waits for a stream to end.
    witness = Witness()
    length = sum(len(f"call 1 part {n}\n") for n in range(CHUNKS))
    _, get = wrapped(driver, witness, headers=(("content-length", str(length)),
                                                 ("cache-control", "private, max-age=60")))
    _, headers, body = get("/other/declared")
    assert witness.held == [] and len(body) == length
    assert "etag" not in headers


# --------------------------------------------------------------------------- WebSocket upgrades


def upgrade_app(calls: list[str]) -> tuple[Any, Any]:
    """A WSGI and an ASGI app answering 404 to everything (what an app without an HTTP route
    at /ws answers when the server hands it the upgrade as a plain request)."""
    def wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        calls.append(environ.get("HTTP_UPGRADE", ""))
        start_response("404 Not Found", [("content-type", "text/plain"), ("content-length", "9")])
        return [b"not found"]

    async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        calls.append(dict(scope["headers"]).get(b"upgrade", b"").decode())
        await send({"type": "http.response.start", "status": 404,
                    "headers": [(b"content-type", b"text/plain"), (b"content-length", b"9")]})
        await send({"type": "http.response.body", "body": b"not found"})
    return wsgi_app, asgi_app


UPGRADE = (("upgrade", "websocket"), ("connection", "Upgrade"), ("sec-websocket-version", "13"),
           ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="))


def test_upgrade_requests_are_never_looked_up_or_stored(driver: str) -> None:
    calls: list[str] = []
    wsgi_app, asgi_app = upgrade_app(calls)
    app = scalekit.wrap(wsgi_app if driver == "wsgi" else asgi_app, config=config())
    get = wsgi_get if driver == "wsgi" else asgi_get
    witness = Witness()
    for _ in range(2):
        status, headers, _ = get(app, witness, "/ws", headers=UPGRADE)
        assert status == 404 and "; hit" not in headers.get("cache-status", "")
    assert calls == ["websocket", "websocket"]
    get(app, witness, "/ws")  # a plain GET under the rule is stored...
    assert "; hit" in get(app, witness, "/ws")[1]["cache-status"]
    status, headers, _ = get(app, witness, "/ws", headers=UPGRADE)  # ...and never answers an upgrade
    assert calls == ["websocket", "websocket", "", "websocket"]
    assert "; hit" not in headers.get("cache-status", "")


# --------------------------------------------------------------------------- over real servers


@pytest.fixture(scope="module")
def uvicorn_url() -> Iterator[str]:
    with run_server("uvicorn", "tests.cache.streams_app:asgi_app") as base_url:
        yield base_url


@pytest.fixture(scope="module")
def gunicorn_url() -> Iterator[str]:
    with run_server("gunicorn", "tests.cache.streams_app:wsgi_app",
                    extra_args=("--threads", "8")) as base_url:
        yield base_url


def origin_calls(base_url: str, name: str) -> int:
    return int(httpx.get(f"{base_url}/__calls?name={name}", timeout=READ_SECONDS).text)


def open_gate(base_url: str, gate: str) -> None:
    httpx.post(f"{base_url}/__open?gate={gate}", timeout=READ_SECONDS).raise_for_status()


@pytest.mark.server
def test_server_sent_events_under_uvicorn_arrive_one_by_one(uvicorn_url: str) -> None:
    with httpx.Client(base_url=uvicorn_url, timeout=READ_SECONDS) as http:
        with http.stream("GET", "/sse/live") as response:
            assert "content-length" not in response.headers and "etag" not in response.headers
            lines = (line for line in response.iter_lines() if line)
            assert next(lines) == "data: event 0"  # before the app may produce the next one
            open_gate(uvicorn_url, "live-1")
            assert next(lines) == "data: event 1"
            open_gate(uvicorn_url, "live-2")
            assert list(lines) == ["data: event 2"]
        assert "; hit" not in http.get("/sse/live").headers.get("cache-status", "")
    assert origin_calls(uvicorn_url, "live") == 2


@pytest.mark.server
@pytest.mark.parametrize("kind", ["uvicorn", "gunicorn"])
def test_two_clients_stream_at_once_and_the_copy_is_stored(kind: str, request: pytest.FixtureRequest) -> None:
    base_url = str(request.getfixturevalue(f"{kind}_url"))
    path = "/stream/both" if kind == "uvicorn" else "/gen/both"
    with httpx.Client(base_url=base_url, timeout=READ_SECONDS) as one, \
            httpx.Client(base_url=base_url, timeout=READ_SECONDS) as two:
        with one.stream("GET", path) as first, two.stream("GET", path) as second:
            first_lines, second_lines = first.iter_lines(), second.iter_lines()
            assert next(first_lines).endswith("part 0") and next(second_lines).endswith("part 0")
            open_gate(base_url, "both-1")
            open_gate(base_url, "both-2")
            assert len(list(first_lines)) == len(list(second_lines)) == CHUNKS - 1
        third = one.get(path)
    assert "; hit" in third.headers["cache-status"]
    assert origin_calls(base_url, "both") == 2


@pytest.mark.server
def test_an_endless_stream_under_uvicorn_is_delivered_and_never_stored(uvicorn_url: str) -> None:
    for _ in range(2):
        with httpx.Client(base_url=uvicorn_url, timeout=READ_SECONDS) as http, \
                http.stream("GET", "/endless/river") as response:
            lines = response.iter_lines()
            assert [next(lines) for _ in range(3)] == ["line 0", "line 1", "line 2"]
    assert origin_calls(uvicorn_url, "river") == 2


@pytest.mark.server
def test_websockets_under_uvicorn_pass_through_the_layers(uvicorn_url: str) -> None:
    from websockets.sync.client import connect

    for word in ("one", "two"):
        with connect(uvicorn_url.replace("http://", "ws://") + "/ws", open_timeout=READ_SECONDS) as ws:
            ws.send(word)
            assert ws.recv(timeout=READ_SECONDS) == f"echo {word}"


@pytest.mark.server
def test_an_upgrade_a_wsgi_server_passes_as_http_is_never_cached(gunicorn_url: str) -> None:
    host = gunicorn_url.removeprefix("http://")
    request = ("GET /ws HTTP/1.1\r\nHost: " + host + "\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
               "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").encode()
    for _ in range(2):
        with socket.create_connection(tuple(host.split(":")), timeout=READ_SECONDS) as sock:  # type: ignore[arg-type]
            sock.sendall(request)
            head = sock.recv(65536).split(b"\r\n\r\n")[0].lower()
        assert head.startswith(b"http/1.1 404") and b"; hit" not in head
    assert origin_calls(gunicorn_url, "ws") == 2
