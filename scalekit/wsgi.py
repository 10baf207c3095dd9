"""The WSGI driver: the pipeline root and the small I/O helpers every WSGI layer shell uses.

The root creates the request's :class:`~scalekit.context.RequestContext`; each enabled layer
is a thin PEP 3333 middleware around the next, in the order metrics, cdn, cache, pool. Layers
that only need to act once the response has been sent wrap the app's iterable with
:class:`ClosingBody`, because a WSGI response is over when the server calls ``close()``, not
when the app returns.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any, Protocol

from .calls import direct
from .context import CONTEXT_KEY, RequestContext, activate
from .messages import Response, status_line

__all__ = [
    "ClosingBody",
    "EarlyFirst",
    "EarlyPath",
    "PassBody",
    "StartResponse",
    "WSGIApp",
    "WSGIRoot",
    "close_body",
    "context_of",
    "read_produced",
    "send_response",
]

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]
Environ = dict[str, Any]


class StartResponse(Protocol):
    def __call__(
        self, status: str, headers: list[tuple[str, str]], exc_info: ExcInfo | None = ..., /
    ) -> Callable[[bytes], object]: ...


WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]
# A layer's answer to a request without a request context (the cache's plain hits): status
# line, headers and body, or None for the full path.
EarlyPath = Callable[[Environ], tuple[str, list[tuple[str, str]], list[bytes]] | None]


class EarlyFirst:
    """``__call__`` of a layer around the cache's early path (``serve_early``, None: no cache
    inside): a plain hit is answered from it; every other request goes to ``handle``, the layer
    without it. Used wherever the layer is not under a root that asks the early path itself."""

    serve_early: EarlyPath | None
    handle: WSGIApp

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if self.serve_early is not None:
            early = self.serve_early(environ)
            if early is not None:
                start_response(early[0], early[1])
                return early[2]
        return self.handle(environ, start_response)


class WSGIRoot:
    """Outermost WSGI callable returned by :func:`scalekit.wrap`: creates the request context."""

    def __init__(self, app: WSGIApp, chain: WSGIApp, runtime: Any) -> None:
        self.app = app  # the user's app, unwrapped
        self.runtime = runtime
        self._started = False  # a plain attribute: checked on every request
        # An outermost layer that can answer without a request context (the cache's plain
        # hits) is asked first; what it leaves goes to the rest of it, then inward.
        self.serve_early: EarlyPath | None = getattr(chain, "serve_early", None)
        self.chain: WSGIApp = getattr(chain, "handle", chain) if self.serve_early is not None else direct(chain)

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if not self._started:
            # WSGI has no lifespan: the first request of each (forked) worker starts the layers.
            self.runtime.startup()
            self._started = True
        if self.serve_early is not None:
            early = self.serve_early(environ)
            if early is not None:
                start_response(early[0], early[1])
                return early[2]
        ctx = RequestContext(environ.get("REQUEST_METHOD", "GET"), environ.get("PATH_INFO", ""))
        environ[CONTEXT_KEY] = ctx
        # Each WSGI request runs on its own thread (or sequentially on one), so setting the
        # variable at the start is enough; the next request on this thread overwrites it.
        activate(ctx)
        return self.chain(environ, start_response)

    def __repr__(self) -> str:
        return f"<scalekit WSGI wrapper around {self.app!r}>"


def context_of(environ: Environ) -> RequestContext:
    """The request's context, creating one if a layer is used without the root (tests, adapters)."""
    ctx: RequestContext | None = environ.get(CONTEXT_KEY)
    if ctx is None:
        ctx = RequestContext(environ.get("REQUEST_METHOD", "GET"), environ.get("PATH_INFO", ""))
        environ[CONTEXT_KEY] = ctx
        activate(ctx)
    return ctx


def send_response(start_response: StartResponse, response: Response, *, head: bool = False) -> list[bytes]:
    """Send a layer's whole :class:`Response` through WSGI (no body for HEAD)."""
    start_response(status_line(response.status), list(response.headers))
    return [] if head or not response.body else [response.body]


def close_body(body: Iterable[bytes]) -> None:
    """Call the response iterable's ``close()`` if it has one (PEP 3333: always, exactly once)."""
    close = getattr(body, "close", None)
    if close is not None:
        close()


class PassBody:
    """Chunks already read, then the rest of the app's iterable; ``close()`` reaches the app's."""

    __slots__ = ("body", "head", "iterator")

    def __init__(self, head: list[bytes], iterator: Iterable[bytes], body: Iterable[bytes]) -> None:
        self.head, self.iterator, self.body = head, iterator, body

    def __iter__(self) -> Iterator[bytes]:
        yield from self.head
        yield from self.iterator

    def close(self) -> None:
        close_body(self.body)


class ClosingBody:
    """Wraps a response iterable so ``on_close(failed)`` runs once the server has sent it.

    PEP 3333: the server calls ``close()`` when the response is done, also when the client went
    away or iteration raised; the wrapped iterable's own ``close()`` is always called first, and
    exactly once. Chunks pass one by one, never buffered. ``failed`` is True when iterating the
    body raised. Always this wrapper, even around a list: handing on a list subclass with a
    ``close()`` (iterated in C) was tried, and granian's WSGI server sends a list without ever
    calling its ``close()`` (tests/test_cli.py::test_scalekit_serve_really_serves_the_wrapped_app).

    >>> body = ClosingBody([b"a", b"b"], lambda failed: print("sent, failed =", failed))
    >>> list(body); body.close()
    [b'a', b'b']
    sent, failed = False
    """

    __slots__ = ("_closed", "_failed", "_iterable", "_iterator", "_on_close")

    def __init__(self, iterable: Iterable[bytes], on_close: Callable[[bool], None]) -> None:
        self._iterable = iterable
        self._iterator: Iterator[bytes] | None = None
        self._on_close = on_close
        self._failed = False
        self._closed = False

    def __iter__(self) -> Iterator[bytes]:
        # A plain iterator, not a generator: a generator left unfinished would close the app's
        # iterable a second time when it is garbage collected.
        if self._iterator is None:
            # Once only: a re-iterable body (Django's HttpResponse) would start over, and
            # servers such as werkzeug's call iter() again after reading the first chunk.
            self._iterator = iter(self._iterable)
        return self

    def __next__(self) -> bytes:
        iterator = self._iterator
        if iterator is None:
            iterator = self._iterator = iter(self._iterable)
        try:
            return next(iterator)
        except StopIteration:
            raise
        except BaseException:
            self._failed = True
            raise

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            close_body(self._iterable)
        finally:
            self._on_close(self._failed)


def read_produced(body: Iterable[bytes], iterator: Iterator[bytes], chunks: list[bytes]) -> bool:
    """Append to ``chunks`` what the app's ``body`` has produced without waiting for more, read
    from ``iterator`` (``iter(body)``, made once); True when that is the whole body.

    A list or tuple is in memory already and is read whole. Of anything else (a generator, a
    framework's streaming body) at most the first non-empty chunk is pulled, which a server
    waits for anyway before it sends the headers (PEP 3333); later chunks may not exist yet,
    and a layer must not hold a stream back to wait for them. ``chunks`` may hold chunks
    already pulled while waiting for ``start_response``.
    """
    if isinstance(body, (list, tuple)):
        chunks.extend(iterator)
        return True
    if any(chunks):
        return False
    for chunk in iterator:
        chunks.append(chunk)
        if chunk:
            return False
    return True
