"""Call WSGI and ASGI apps directly, as a server would, recording everything they do.

>>> result = call_wsgi(app, "GET", "/")          # doctest: +SKIP
>>> result.status, result.headers, result.body   # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from wsgiref.util import FileWrapper, setup_testing_defaults

__all__ = [
    "LAYER_HEADERS", "ASGIResult", "WSGIResult", "asgi_scope", "assert_single_date", "call_asgi",
    "call_wsgi", "comparable_headers", "raw_http", "split_raw", "without_date", "wsgi_environ",
]


def wsgi_environ(method: str = "GET", path: str = "/", *, query: str = "", body: bytes = b"",
                 headers: Sequence[tuple[str, str]] = (), remote_addr: str = "127.0.0.1") -> dict[str, Any]:
    """A complete PEP 3333 environ (wsgiref's testing defaults plus the request given)."""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method, "SCRIPT_NAME": "", "PATH_INFO": path, "QUERY_STRING": query,
        "REMOTE_ADDR": remote_addr, "wsgi.input": io.BytesIO(body),
        "CONTENT_LENGTH": str(len(body)) if body else "",
    }
    for name, value in headers:
        key = name.upper().replace("-", "_")
        if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            environ[key] = value
        else:
            environ["HTTP_" + key] = value
    setup_testing_defaults(environ)
    environ.setdefault("wsgi.file_wrapper", FileWrapper)
    return environ


@dataclass
class WSGIResult:
    status: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    chunks: list[bytes] = field(default_factory=list)
    written: list[bytes] = field(default_factory=list)  # through the legacy write() callable
    exc_info: Any = None

    @property
    def body(self) -> bytes:
        return b"".join(self.written) + b"".join(self.chunks)

    @property
    def status_code(self) -> int:
        return int(self.status[:3])


def call_wsgi(app: Callable[..., Iterable[bytes]], method: str = "GET", path: str = "/", *,
              on_chunk: Callable[[bytes], None] | None = None, stop_after: int | None = None,
              **request: Any) -> WSGIResult:
    """Run one request through ``app`` like a server: iterate the body, always call close().

    ``stop_after=N`` abandons iteration after N chunks (a client that went away).
    """
    result = WSGIResult()

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
        if exc_info is not None:
            result.exc_info = exc_info
        elif result.status:
            raise AssertionError("start_response called twice without exc_info")
        result.status, result.headers = status, list(headers)
        return result.written.append

    iterable = app(wsgi_environ(method, path, **request), start_response)
    try:
        for chunk in iterable:
            result.chunks.append(chunk)
            if on_chunk is not None:
                on_chunk(chunk)
            if stop_after is not None and len(result.chunks) >= stop_after:
                break
    finally:
        close = getattr(iterable, "close", None)
        if close is not None:
            close()
    return result


def asgi_scope(method: str = "GET", path: str = "/", *, query: bytes = b"",
               headers: Sequence[tuple[bytes, bytes]] = (), client: tuple[str, int] | None = ("127.0.0.1", 50000),
               kind: str = "http", extensions: dict[str, Any] | None = None) -> dict[str, Any]:
    """An ASGI 3 HTTP (or websocket) scope."""
    scope: dict[str, Any] = {
        "type": kind, "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
        "method": method, "scheme": "http" if kind == "http" else "ws", "path": path,
        "raw_path": path.encode(), "query_string": query, "root_path": "",
        "headers": [(b"host", b"testserver"), *headers], "client": client,
        "server": ("testserver", 80), "extensions": extensions or {},
    }
    if kind != "http":
        del scope["method"]
    return scope


@dataclass
class ASGIResult:
    sent: list[dict[str, Any]] = field(default_factory=list)

    @property
    def status(self) -> int:
        return int(next(m for m in self.sent if m["type"] == "http.response.start")["status"])

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        return list(next(m for m in self.sent if m["type"] == "http.response.start")["headers"])

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")


def call_asgi(app: Callable[..., Any], scope: dict[str, Any] | None = None,
              incoming: Sequence[dict[str, Any]] = ({"type": "http.request", "body": b""},),
              *, send_hook: Callable[[dict[str, Any]], Any] | None = None) -> ASGIResult:
    """Run ``app`` on ``scope`` with ``incoming`` messages; after them receive() waits forever
    (a real client that stays connected) unless the list ends with a disconnect."""
    result = ASGIResult()

    async def run() -> None:
        queue = list(incoming)

        async def receive() -> dict[str, Any]:
            if queue:
                return queue.pop(0)
            await asyncio.Event().wait()  # never returns: the client stays connected
            raise AssertionError("unreachable")

        async def send(message: dict[str, Any]) -> None:
            result.sent.append(message)
            if send_hook is not None:
                outcome = send_hook(message)
                if asyncio.iscoroutine(outcome):
                    await outcome

        await app(scope if scope is not None else asgi_scope(), receive, send)

    asyncio.run(run())
    return result


def raw_http(base_url: str, method: str, path: str, *, headers: Sequence[tuple[str, str]] = (),
             body: bytes = b"", timeout_seconds: float = 20.0) -> bytes:
    """Send one HTTP/1.1 request over a fresh socket and return the raw response bytes
    (``Connection: close``, read to EOF), so tests can compare framing byte for byte."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(base_url)
    lines = [f"{method} {path} HTTP/1.1", f"Host: {parts.netloc}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout_seconds) as sock:
        sock.sendall(request)
        received = bytearray()
        while chunk := sock.recv(65536):
            received += chunk
    return bytes(received)


def without_date(raw: bytes) -> bytes:
    """The raw response with its Date header line removed (it differs from one second to the next)."""
    head, sep, rest = raw.partition(b"\r\n\r\n")
    kept = [line for line in head.split(b"\r\n") if not line.lower().startswith(b"date:")]
    return b"\r\n".join(kept) + sep + rest


# Headers the default layers may add to a response they pass on without storing it: RFC 9211
# Cache-Status and Age from the cache, and Date (once) where the app sent none.
LAYER_HEADERS = frozenset({"age", "cache-status", "date"})


def comparable_headers(headers: Iterable[tuple[Any, Any]]) -> list[tuple[str, str]]:
    """Headers as a layer may legitimately re-emit them: names lower-cased, layer-added ones
    dropped, grouped by name (stable, so the order of repeated fields like Set-Cookie counts)."""
    pairs = [(_text(name).lower(), _text(value)) for name, value in headers]
    return sorted((pair for pair in pairs if pair[0] not in LAYER_HEADERS), key=lambda pair: pair[0])


def assert_single_date(headers: Iterable[tuple[Any, Any]]) -> None:
    dates = [value for name, value in headers if _text(name).lower() == "date"]
    assert len(dates) <= 1, f"Date sent {len(dates)} times: {dates}"


def split_raw(raw: bytes) -> tuple[bytes, list[tuple[str, str]], bytes]:
    """A raw HTTP/1.1 response as (status line, headers, raw body incl. chunk framing)."""
    head, _, body = raw.partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    headers = [tuple(part.strip() for part in line.decode("latin-1").split(":", 1)) for line in lines]
    return status, [(name, value) for name, value in headers], body


def _text(value: Any) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else str(value)
