"""I/O helpers of the cache layer's WSGI shell: request views over the environ, the captured
``start_response``, and response iterables that keep PEP 3333 ``close()`` semantics."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .. import wsgi
from ..messages import status_line
from ..wsgi import PassBody, close_body, read_produced
from .decisions import SPECIAL_REQUEST_HEADERS, UNPLAIN_REQUEST_HEADERS, RequestView
from .keys import DEFAULT_PORTS

__all__ = [
    "SPECIAL_ENVIRON_KEYS",
    "UNPLAIN_ENVIRON_KEYS",
    "Capture",
    "CopyingBody",
    "EnvironHeaders",
    "PassBody",
    "close_body",
    "discard_start_response",
    "environ_key",
    "read_produced",
    "request_view",
    "send_whole",
    "with_header",
]

log = logging.getLogger("scalekit.cache")
_ENVIRON_KEYS: dict[str, str] = {"content-type": "CONTENT_TYPE", "content-length": "CONTENT_LENGTH"}


def environ_key(name: str) -> str:
    """The environ key of lower-case request header ``name`` (``HTTP_IF_NONE_MATCH``)."""
    key = _ENVIRON_KEYS.get(name)
    if key is None:
        key = "HTTP_" + name.upper().replace("-", "_")
        if len(_ENVIRON_KEYS) < 1024:
            _ENVIRON_KEYS[name] = key
    return key


class EnvironHeaders:
    """Request headers by lower-case name, read from the environ on demand."""

    __slots__ = ("environ",)

    def __init__(self, environ: wsgi.Environ) -> None:
        self.environ = environ

    def get(self, name: str) -> str | None:
        key = _ENVIRON_KEYS.get(name) or environ_key(name)
        value: str | None = self.environ.get(key)
        return value


SPECIAL_ENVIRON_KEYS = frozenset(environ_key(name) for name in SPECIAL_REQUEST_HEADERS)
UNPLAIN_ENVIRON_KEYS = frozenset(environ_key(name) for name in UNPLAIN_REQUEST_HEADERS)


def request_view(environ: wsgi.Environ) -> RequestView:
    """The policy's view of a WSGI request (paths as text, like ASGI's ``scope["path"]``)."""
    path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    if not path.isascii():
        # PEP 3333 hands paths over as bytes decoded as latin-1; keys use the UTF-8 text.
        try:
            path = path.encode("latin-1").decode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            pass
    host = environ.get("HTTP_HOST")
    scheme = environ.get("wsgi.url_scheme", "http")
    if host is None:  # PEP 3333 URL reconstruction: the port only when not the scheme's default
        host = environ.get("SERVER_NAME", "")
        port = environ.get("SERVER_PORT", "")
        if port and port != DEFAULT_PORTS.get(scheme):
            host = f"{host}:{port}"
    special = not environ.keys().isdisjoint(SPECIAL_ENVIRON_KEYS)
    return RequestView(environ.get("REQUEST_METHOD", "GET"), scheme, host, path,
                       environ.get("QUERY_STRING", ""), EnvironHeaders(environ).get, special)


class Capture:
    """The app's ``start_response``, recorded; nothing reaches the server until we decide."""

    __slots__ = ("code", "exc_info", "headers", "status", "written")

    def __init__(self) -> None:
        self.status: str | None = None
        self.code = 500  # the status line's code, 500 for a line without one
        self.headers: list[tuple[str, str]] = []
        self.exc_info: Any = None
        self.written: list[bytes] = []

    def start_response(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        """The ``start_response`` the app is given (a bound method: cheaper to call than an
        object)."""
        self.status, self.headers, self.exc_info = status, headers, exc_info
        code = status[:3]
        self.code = int(code) if code.isdigit() else 500
        return self.written.append  # PEP 3333 write(): kept in order before the iterable's chunks

    def prime(self, body: Iterable[bytes]) -> Iterator[bytes]:
        """Pull chunks until the app has called start_response (generators call it lazily)."""
        iterator = iter(body)
        if self.status is None:
            for chunk in iterator:
                self.written.append(chunk)
                if self.status is not None:
                    break
        if self.status is None:
            raise RuntimeError("the WSGI app returned without calling start_response")
        return iterator


class CopyingBody:
    """Chunks already read, then the rest of the app's iterable passed on as it is produced,
    while a copy is kept up to ``limit`` bytes.

    When the server closes it, the app's iterable is closed first (the pool gets its connection
    back there), then ``on_close(copy, ended)`` runs: ``ended`` says the iterable was read to
    its end (not abandoned by a client that went away, nor broken by an error), ``copy`` is the
    whole body, or None once it outgrew ``limit``. A plain iterator, not a generator, so the
    app's iterable is never closed twice.
    """

    __slots__ = ("body", "copy", "ended", "head", "iterator", "limit", "on_close", "size")

    def __init__(self, head: list[bytes], iterator: Iterator[bytes], body: Iterable[bytes], *,
                 limit: int, on_close: Callable[[list[bytes] | None, bool], None]) -> None:
        self.head = list(reversed(head))
        self.iterator = iterator
        self.body = body
        self.size = sum(map(len, head))
        self.copy: list[bytes] | None = list(head) if self.size <= limit else None
        self.limit = limit
        self.on_close: Callable[[list[bytes] | None, bool], None] | None = on_close
        self.ended = False

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if self.head:
            return self.head.pop()
        try:
            chunk = next(self.iterator)
        except StopIteration:
            self.ended = True
            raise
        copy = self.copy
        if copy is not None:
            self.size += len(chunk)
            if self.size > self.limit:
                self.copy = None
            else:
                copy.append(chunk)
        return chunk

    def close(self) -> None:
        on_close, self.on_close = self.on_close, None
        try:
            close_body(self.body)
        finally:
            if on_close is not None:
                try:
                    on_close(self.copy, self.ended)
                except Exception:
                    # The response went out whole; failing to keep a copy must not fail it.
                    log.warning("scalekit: storing a streamed response failed", exc_info=True)


def send_whole(start_response: wsgi.StartResponse, status: int, headers: tuple[tuple[str, str], ...],
          body: bytes) -> list[bytes]:
    start_response(status_line(status), list(headers))
    return [body] if body else []


def discard_start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
    return lambda data: None


def with_header(start_response: wsgi.StartResponse, header: tuple[str, str]) -> wsgi.StartResponse:
    """``start_response`` that adds ``header`` to whatever the app sends."""

    def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        return start_response(status, [*headers, header], exc_info) if exc_info else start_response(
            status, [*headers, header])

    return start
