"""What only one driver can get wrong: PEP 3333 close()/write()/lazy start_response, and ASGI
message streaming. The HTTP semantics themselves are in test_behaviour.py, run on both."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from scalekit.asgi import ASGIRoot
from scalekit.cache import layer
from scalekit.wsgi import WSGIRoot
from tests.cache.origin_app import FakeClock, make_runtime


class TrackedBody:
    """A WSGI response iterable that records whether the server (or we) closed it."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.closed = 0

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.chunks)

    def close(self) -> None:
        self.closed += 1


def call_wsgi(app: Any, path: str = "/x", method: str = "GET", **headers: str) -> tuple[str, dict[str, str], bytes]:
    environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": "", "SERVER_NAME": "test",
               "SERVER_PORT": "80", "HTTP_HOST": "test", "wsgi.url_scheme": "http"}
    environ.update({"HTTP_" + k.upper(): v for k, v in headers.items()})
    seen: dict[str, Any] = {}

    def start_response(status: str, response_headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        seen["status"], seen["headers"] = status, {k.lower(): v for k, v in response_headers}
        return lambda data: None

    result = app(environ, start_response)
    try:
        body = b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return seen["status"], seen["headers"], body


@pytest.mark.parametrize("headers, size, limit", [
    pytest.param([("cache-control", "max-age=60")], 10, 1000, id="stored"),
    pytest.param([("cache-control", "private")], 10, 1000, id="passed through"),
    pytest.param([("cache-control", "max-age=60")], 5000, 1000, id="too large, streamed"),
])
def test_wsgi_close_is_called_once_on_every_miss_path(headers: list[tuple[str, str]], size: int,
                                                      limit: int) -> None:
    bodies: list[TrackedBody] = []

    def app(environ: dict[str, Any], start_response: Any) -> TrackedBody:
        start_response("200 OK", list(headers))
        body = TrackedBody([b"x" * (size // 2), b"y" * (size - size // 2)])
        bodies.append(body)
        return body

    runtime = make_runtime(FakeClock(), max_body_bytes=limit)
    wrapped = WSGIRoot(app, layer.wrap_wsgi(app, runtime), runtime)
    status, _, body = call_wsgi(wrapped)
    assert status == "200 OK" and len(body) == size
    assert [b.closed for b in bodies] == [1]
    call_wsgi(wrapped)  # a hit when stored: the app is not called at all
    stored = headers[0][1] == "max-age=60" and size <= limit
    assert len(bodies) == (1 if stored else 2)
    assert all(b.closed == 1 for b in bodies)


def test_wsgi_lazy_start_response_and_write_are_supported() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        write = start_response("200 OK", [("cache-control", "max-age=60")])
        write(b"written-")
        yield b"yielded"

    runtime = make_runtime(FakeClock())
    wrapped = WSGIRoot(app, layer.wrap_wsgi(app, runtime), runtime)
    assert call_wsgi(wrapped)[2] == b"written-yielded"
    _, headers, body = call_wsgi(wrapped)
    assert body == b"written-yielded" and "; hit" in headers["cache-status"]


def test_wsgi_app_exception_without_stale_entry_propagates() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        raise ValueError("boom")

    runtime = make_runtime(FakeClock())
    wrapped = WSGIRoot(app, layer.wrap_wsgi(app, runtime), runtime)
    with pytest.raises(ValueError):
        call_wsgi(wrapped)


def run_asgi(app: Any, path: str = "/x", method: str = "GET") -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "query_string": b"", "scheme": "http",
             "headers": [(b"host", b"test")], "server": ("test", 80)}
    asyncio.run(app(scope, receive, send))
    return sent


def test_asgi_unstorable_response_streams_message_by_message() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"cache-control", b"no-store")]})
        for part in (b"a", b"b", b"c"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    runtime = make_runtime(FakeClock())
    wrapped = ASGIRoot(app, layer.wrap_asgi(app, runtime), runtime)
    sent = run_asgi(wrapped)
    assert [m.get("body") for m in sent[1:]] == [b"a", b"b", b"c", b""]


def test_asgi_large_body_flushes_then_streams() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"cache-control", b"max-age=60")]})
        for _ in range(4):
            await send({"type": "http.response.body", "body": b"x" * 400, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    runtime = make_runtime(FakeClock(), max_body_bytes=1000)
    wrapped = ASGIRoot(app, layer.wrap_asgi(app, runtime), runtime)
    for _ in range(2):
        sent = run_asgi(wrapped)
        assert b"".join(m.get("body", b"") for m in sent[1:]) == b"x" * 1600
        headers = dict(sent[0]["headers"])
        assert b"stored" not in headers[b"cache-status"]


def test_asgi_non_http_scopes_pass_through() -> None:
    seen: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    runtime = make_runtime(FakeClock())
    shell = layer.wrap_asgi(app, runtime)
    asyncio.run(shell({"type": "websocket"}, None, None))  # type: ignore[arg-type]
    assert seen == ["websocket"]


def test_wsgi_body_failure_falls_back_to_stale_if_error() -> None:
    clock = FakeClock()
    failing = [False]

    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("cache-control", "max-age=10, stale-if-error=60")])
        if failing[0]:
            raise RuntimeError("broken while streaming")
        yield b"good"

    runtime = make_runtime(clock)
    wrapped = WSGIRoot(app, layer.wrap_wsgi(app, runtime), runtime)
    assert call_wsgi(wrapped)[2] == b"good"
    clock.advance(20)
    failing[0] = True
    _, headers, body = call_wsgi(wrapped)
    assert body == b"good" and "fwd=stale" in headers["cache-status"]
