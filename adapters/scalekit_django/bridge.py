"""Running the scalekit pipeline inside Django's middleware chain.

When scalekit is installed only through ``settings.MIDDLEWARE`` (no ``wrap()`` around the WSGI
or ASGI application), the middleware hands the request to the pipeline as the WSGI environ or
ASGI scope it came from; the pipeline's innermost app is "the rest of Django"
(``get_response``), and what the pipeline answers (a cache hit, a 304, ``/metrics``, a 503, or
Django's own response) is turned back into an ``HttpResponse``. Nothing here decides anything:
it is the translation between Django's objects and the two protocols.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any

from asgiref.sync import async_to_sync, sync_to_async
from django.http import HttpRequest, HttpResponse, HttpResponseBase, StreamingHttpResponse

from scalekit import asgi, wsgi

__all__ = ["RestOfDjango", "run_asgi", "run_wsgi"]

GetResponse = Callable[[HttpRequest], Any]
# The environ / scope key holding this request's innermost app (Django's get_response).
INNER_APP_KEY = "scalekit_django.inner_app"


class RestOfDjango:
    """The pipeline's innermost app: calls the app the bridge put in this request's environ or
    scope, so one pipeline built at start-up serves every request's ``get_response``."""

    def __call__(self, environ_or_scope: Any, *rest: Any) -> Any:
        return environ_or_scope[INNER_APP_KEY](environ_or_scope, *rest)


# --------------------------------------------------------------------------- Django -> protocol

def _header_list(response: HttpResponseBase) -> list[tuple[str, str]]:
    headers = list(response.items())
    headers.extend(("Set-Cookie", cookie.output(header="").strip()) for cookie in response.cookies.values())
    return headers


def _status_line(response: HttpResponseBase) -> str:
    return f"{response.status_code} {response.reason_phrase}"


def _close_resources(response: HttpResponseBase) -> None:
    """Close the inner response's files and iterators, but not the response itself: its
    ``close()`` sends ``request_finished``, which the server sends once for the outer one."""
    closers = getattr(response, "_resource_closers", None)
    if closers:
        for closer in list(closers):
            closer()
        closers.clear()


def _environ_of(request: HttpRequest) -> dict[str, Any]:
    environ: dict[str, Any] | None = getattr(request, "environ", None)
    if environ is not None:
        return environ  # WSGIRequest: META is the server's environ itself
    # ASGIRequest in a sync middleware chain: META is a WSGI-style dict without the wsgi.* keys.
    environ = dict(request.META)
    environ.setdefault("wsgi.url_scheme", request.scheme)
    environ.setdefault("wsgi.input", io.BytesIO(b""))
    return environ


# --------------------------------------------------------------------------- protocol -> Django

def _django_response(status: str, headers: Iterable[tuple[str, str]], body: Any, *,
    streaming: bool) -> HttpResponseBase:
    code_text, _, reason = status.partition(" ")
    response: HttpResponseBase
    if streaming:
        response = StreamingHttpResponse(body, status=int(code_text), reason=reason or None)
    else:
        response = HttpResponse(body, status=int(code_text), reason=reason or None)
    del response["Content-Type"]  # Django's default; the pipeline's headers say what it is
    for name, value in headers:
        if name.lower() == "set-cookie":
            response.cookies.load(value)
        elif name in response:
            response[name] = f"{response[name]}, {value}"  # RFC 9110 §5.3: fields combine
        else:
            response[name] = value
    return response


class _Started:
    """What ``start_response`` received."""

    __slots__ = ("headers", "status")

    def __init__(self) -> None:
        self.status = ""
        self.headers: list[tuple[str, str]] = []

    def __call__(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], object]:
        if exc_info is not None and self.status:
            raise exc_info[1].with_traceback(exc_info[2])
        self.status, self.headers = status, headers
        return _no_write


def _no_write(data: bytes) -> None:
    raise RuntimeError("the scalekit Django bridge does not support the WSGI write() callable")


def run_wsgi(pipeline: wsgi.WSGIApp, request: HttpRequest, get_response: GetResponse) -> HttpResponseBase:
    """Answer ``request`` through the WSGI pipeline whose innermost app is ``get_response``."""
    inner_streaming = False

    def django_app(environ: wsgi.Environ, start_response: wsgi.StartResponse) -> Iterable[bytes]:
        nonlocal inner_streaming
        response = get_response(request)
        inner_streaming = response.streaming
        start_response(_status_line(response), _header_list(response))
        return _ResponseBody(response)

    environ = _environ_of(request)
    environ[INNER_APP_KEY] = django_app
    started = _Started()
    result = pipeline(environ, started)
    if inner_streaming:
        chunks = iter(result)
        first = next(chunks, b"")  # a layer may call start_response at the first chunk
        body = _Chain(first, chunks, result)
        if isinstance(getattr(request, "scope", None), dict):
            # A sync middleware chain under ASGI: Django's handler iterates on the event loop
            # and would buffer a sync iterator whole; step it in a thread, chunk by chunk.
            return _django_response(started.status, started.headers, _stepped(body), streaming=True)
        return _django_response(started.status, started.headers, body, streaming=True)
    try:
        content = b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()  # the response is complete: the pool and metrics layers finish here
    return _django_response(started.status, started.headers, content, streaming=False)


class _ResponseBody:
    """A Django response as a WSGI body whose ``close()`` frees its resources only."""

    __slots__ = ("response",)

    def __init__(self, response: HttpResponseBase) -> None:
        self.response = response

    def __iter__(self) -> Iterator[bytes]:
        if getattr(self.response, "is_async", False):
            return _sync_chunks(self.response.streaming_content)
        return iter(self.response)

    def close(self) -> None:
        _close_resources(self.response)


def _sync_chunks(chunks: Any) -> Iterator[bytes]:
    """An async streaming body stepped from sync code (a sync middleware chain under ASGI,
    where Django itself would have iterated it on the event loop), one chunk at a time."""
    async def next_chunk() -> Any:
        return await chunks.__anext__()

    step = async_to_sync(next_chunk)
    while True:
        try:
            yield bytes(step())
        except StopAsyncIteration:
            return


class _Chain:
    """The first chunk, then the rest; ``close()`` closes the pipeline's body (PEP 3333)."""

    __slots__ = ("body", "first", "rest")

    def __init__(self, first: bytes, rest: Iterator[bytes], body: Iterable[bytes]) -> None:
        self.first, self.rest, self.body = first, rest, body

    def __iter__(self) -> Iterator[bytes]:
        if self.first:
            yield self.first
        yield from self.rest

    def close(self) -> None:
        close = getattr(self.body, "close", None)
        if close is not None:
            close()


# --------------------------------------------------------------------------- ASGI

_DONE = object()


async def run_asgi(pipeline: asgi.ASGIApp, request: HttpRequest, get_response: GetResponse) -> HttpResponseBase:
    """Answer ``request`` through the ASGI pipeline whose innermost app is ``get_response``.

    The pipeline runs in its own task feeding a one-slot queue, so a streamed body is relayed
    chunk by chunk (with back-pressure) instead of being buffered.
    """
    messages: asyncio.Queue[Any] = asyncio.Queue(maxsize=1)

    async def django_app(scope: asgi.Scope, receive: asgi.Receive, send: asgi.Send) -> None:
        response = await get_response(request)
        await send({"type": "http.response.start", "status": response.status_code,
                    "headers": [(name.lower().encode("latin-1"), value.encode("latin-1"))
                                for name, value in _header_list(response)]})
        try:
            if response.streaming:
                async for chunk in _achunks(response):
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            else:
                await send({"type": "http.response.body", "body": response.content, "more_body": False})
        finally:
            _close_resources(response)

    scope = request.scope
    scope[INNER_APP_KEY] = django_app
    if isinstance(scope.get("query_string"), str):  # Django's AsyncClient; servers send bytes
        scope["query_string"] = scope["query_string"].encode("latin-1")

    async def run() -> None:
        try:
            await pipeline(scope, _receive_nothing(), messages.put)
        except BaseException as exc:
            await messages.put(exc)
            raise
        await messages.put(_DONE)

    task = asyncio.create_task(run())
    start = await messages.get()
    if isinstance(start, BaseException) or start is _DONE:
        await asyncio.gather(task, return_exceptions=True)
        raise start if isinstance(start, BaseException) else RuntimeError("the pipeline sent no response")
    headers = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in start.get("headers", ())]
    status = f"{start['status']} "
    first = await messages.get()
    if isinstance(first, BaseException):
        await asyncio.gather(task, return_exceptions=True)
        raise first
    if first is _DONE or not first.get("more_body", False):
        await task
        body = b"" if first is _DONE else first.get("body", b"")
        return _django_response(status, headers, body, streaming=False)
    return _django_response(status, headers, _relay(first.get("body", b""), messages, task), streaming=True)


async def _relay(first: bytes, messages: asyncio.Queue[Any], task: asyncio.Task[None]) -> AsyncIterator[bytes]:
    try:
        if first:
            yield first
        while True:
            message = await messages.get()
            if message is _DONE:
                return
            if isinstance(message, BaseException):
                raise message
            if message.get("body"):
                yield message["body"]
            if not message.get("more_body", False):
                return
    finally:
        if not task.done():
            task.cancel()  # the client went away: stop the pipeline (the pool layer releases)
        await asyncio.gather(task, return_exceptions=True)


async def _achunks(response: Any) -> AsyncIterator[bytes]:
    if getattr(response, "is_async", False):
        async for chunk in response:
            yield bytes(chunk)
        return
    async for chunk in _stepped(response, close=False):  # its resources: django_app's finally
        yield chunk


async def _stepped(body: Iterable[Any], *, close: bool = True) -> AsyncIterator[bytes]:
    """A sync body, stepped in Django's sync thread chunk by chunk: it may block (it often
    reads the database), so neither on the event loop nor all at once; closed at the end."""
    chunks = iter(body)
    step = sync_to_async(_next_chunk, thread_sensitive=True)
    try:
        while (chunk := await step(chunks)) is not None:
            yield chunk
    finally:
        closer = getattr(body, "close", None) if close else None
        if closer is not None:
            await sync_to_async(closer, thread_sensitive=True)()


def _next_chunk(chunks: Iterator[Any]) -> bytes | None:
    chunk = next(chunks, None)
    return None if chunk is None else bytes(chunk)


def _receive_nothing() -> asgi.Receive:
    """Django has already read the request body; layers see an empty one, then no disconnect."""
    sent = False

    async def receive() -> asgi.Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # never: the server, not the bridge, reports disconnects
        raise AssertionError("unreachable")

    return receive
