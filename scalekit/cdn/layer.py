"""The CDN layer in the pipeline: thin WSGI and ASGI shells around :mod:`scalekit.cdn.policy`.

Each shell holds the app's response start, asks the :class:`~scalekit.cdn.policy.Stamper`
for the headers, and only then lets it out. The body is touched only to compute an ETag, and
only when the app produced it whole at once: a WSGI list of bytes, a first WSGI chunk or a
single ASGI body message of the declared Content-Length (within ``cdn.etag_max_body_bytes``).
A body produced in pieces is a stream and is never held back to be hashed: it leaves chunk by
chunk without an ETag, like everything else (file wrappers and ASGI ``pathsend`` included). A conditional GET/HEAD
whose validators match is answered 304 (or 412)
without sending the body (see :mod:`scalekit.cdn.respond` for why unsafe methods are the
app's to answer). When ``cdn.assets_manifest`` is set, servestatic serves the built assets
inside this layer, so they are stamped and answered 304 like everything else.

Around the cache layer, the cache's plain hits are stamped when the cache memoises them, not
per hit (:mod:`scalekit.cdn.hits`): the headers are the same as this layer's full path gives,
and such a hit never runs this layer.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from .. import asgi, wsgi
from ..context import CONTEXT_KEY, RequestContext
from ..memo import TextMemo
from ..messages import Response, status_line
from ..metrics.instruments import CDN_BYTES_SAVED, CDN_NOT_MODIFIED
from ..wsgi import read_produced
from .assets import load_index, serve_assets_asgi, serve_assets_wsgi
from .config import CDNConfig
from .etag import body_etag
from .hits import early_path
from .policy import Outcome, Stamper
from .respond import (
    PRECONDITION_FIELDS,
    Preconditions,
    answer_conditional,
    body_length,
    buffer_limit,
    collect_preconditions,
    with_etag,
)

__all__ = ["ASGICDN", "STATE_KEY", "WSGICDN", "wrap_asgi", "wrap_wsgi"]

# ctx.state[STATE_KEY]: the request's preconditions, read by check_preconditions() in the app.
STATE_KEY = "cdn"
_WSGI_PRECONDITIONS = tuple((name, "HTTP_" + name.upper().replace("-", "_")) for name in PRECONDITION_FIELDS)
_ASGI_PRECONDITIONS = {name.encode("latin-1"): name for name in PRECONDITION_FIELDS}


_STATUS_CODES: TextMemo[int] = TextMemo(max_entries=512, max_text_chars=128)


def _status_code(line: str) -> int:
    """``"200 OK"`` -> 200, memoised: apps send a handful of distinct status lines."""
    code = _STATUS_CODES.get(line)
    if code is None:
        code = int(line[:3])
        _STATUS_CODES.put(line, code)
    return code


def _record_answer(answer: Response, headers: list[tuple[str, str]], body: bytes | None) -> None:
    """Count a 304 and the body bytes it did not send (412s are not savings)."""
    if answer.status != 304:
        return
    CDN_NOT_MODIFIED.inc()
    saved = len(body) if body is not None else (body_length(headers) or 0)
    if saved > 0:
        CDN_BYTES_SAVED.inc(saved)


class WSGICDN(wsgi.EarlyFirst):
    """The CDN layer around a WSGI app."""

    def __init__(self, app: wsgi.WSGIApp, stamper: Stamper) -> None:
        self.app = app
        self.stamper = stamper
        config = stamper.config
        self.max_body_bytes = config.etag_max_body_bytes
        self.conditional = config.conditional_requests
        # Around the cache: its plain hits leave stamped from its early path, and the rest
        # of its requests go to its full path (they have been offered to the early one).
        self.serve_early: wsgi.EarlyPath | None = early_path(
            self, app, stamper, ("special_keys", "unplain_keys"), "HTTP_AUTHORIZATION", "HTTP_COOKIE")
        self.inner: wsgi.WSGIApp = getattr(app, "handle", app) if self.serve_early else app

    def handle(self, environ: wsgi.Environ, start_response: wsgi.StartResponse) -> Iterable[bytes]:
        """The whole layer but the early path."""
        preconditions = None
        if ("HTTP_IF_NONE_MATCH" in environ or "HTTP_IF_MATCH" in environ
                or "HTTP_IF_MODIFIED_SINCE" in environ or "HTTP_IF_UNMODIFIED_SINCE" in environ):
            preconditions = collect_preconditions(
                {name: environ[key] for name, key in _WSGI_PRECONDITIONS if key in environ})
        ctx: RequestContext | None = environ.get(CONTEXT_KEY)
        if ctx is not None:
            ctx.state[STATE_KEY] = preconditions
        return _WSGIExchange(self, environ, start_response, preconditions, ctx).run()


class _WSGIExchange:
    """One request through the WSGI shell: holds the app's start_response until decided."""

    __slots__ = (
        "ctx",
        "environ",
        "headers",
        "layer",
        "method",
        "preconditions",
        "real_write",
        "sent",
        "start_response",
        "status",
    )

    def __init__(self, layer: WSGICDN, environ: wsgi.Environ, start_response: wsgi.StartResponse,
                 preconditions: Preconditions | None, ctx: RequestContext | None) -> None:
        self.layer = layer
        self.environ = environ
        self.start_response = start_response
        self.preconditions = preconditions if layer.conditional else None
        self.ctx = ctx
        self.method: str = environ.get("REQUEST_METHOD", "GET").upper()
        self.status: str | None = None
        self.headers: list[tuple[str, str]] = []
        self.sent = False
        self.real_write: Any = None

    def start(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        if self.sent:
            # PEP 3333: after the headers went out, the server must re-raise exc_info.
            return self.start_response(status, headers, exc_info)
        self.status, self.headers = status, headers
        return self.write

    def write(self, data: bytes) -> None:
        # Legacy write(): the body is being pushed, so stamp now and stream, without an ETag.
        if not self.sent:
            outcome, unchanged = self._stamp()
            self._send(self.headers if unchanged else outcome.headers)
        self.real_write(data)

    def _stamp(self) -> tuple[Outcome, bool]:
        """The stamping outcome, and whether it left the app's headers exactly as they were."""
        assert self.status is not None  # start() ran before anything reads it
        status = _status_code(self.status)
        headers = [(name.lower(), value) for name, value in self.headers]
        outcome = self.layer.stamper.stamp(
            self.method, self.environ.get("PATH_INFO", ""), "HTTP_AUTHORIZATION" in self.environ,
            status, headers, self.ctx.tags if self.ctx is not None else (),
            has_cookie=bool(self.environ.get("HTTP_COOKIE", "").strip()))
        return outcome, outcome.headers == headers

    def _send(self, headers: list[tuple[str, str]], status: str | None = None) -> None:
        self.sent = True
        self.real_write = self.start_response(status or self.status or "500 Internal Server Error", headers)

    def run(self) -> Iterable[bytes]:
        iterable = self.layer.inner(self.environ, self.start)
        prefix: list[bytes] = []
        rest: Iterable[bytes] = iterable
        if self.status is None:
            # A generator app calls start_response when its first chunk is pulled.
            iterator = iter(iterable)
            try:
                prefix = [next(iterator)]
            except StopIteration:
                pass
            except BaseException:
                wsgi.close_body(iterable)
                raise
            rest = iterator
        if self.sent or self.status is None:
            return _Prefixed(prefix, rest, iterable)
        try:
            return self._respond(iterable, prefix, rest)
        except BaseException:
            wsgi.close_body(iterable)
            raise

    def _respond(self, iterable: Iterable[bytes], prefix: list[bytes], rest: Iterable[bytes]) -> Iterable[bytes]:
        # The hot path of every response: kept to few calls and lookups on purpose (bench/cdn.py).
        app_headers = [(name.lower(), value) for name, value in self.headers]
        ctx, environ, layer = self.ctx, self.environ, self.layer
        status_text: str = self.status  # type: ignore[assignment]  # run() checked it is set
        status = _STATUS_CODES.get(status_text) or _status_code(status_text)
        outcome = layer.stamper.stamp(
            self.method, environ.get("PATH_INFO", ""), "HTTP_AUTHORIZATION" in environ,
            status, app_headers, ctx.tags if ctx is not None else (),
            has_cookie="HTTP_COOKIE" in environ and bool(environ["HTTP_COOKIE"].strip()))
        headers = outcome.headers
        unchanged = headers == app_headers
        body: bytes | None = None
        length = outcome.content_length
        if outcome.generate_etag and (length is not None and length <= layer.max_body_bytes
                                      or isinstance(iterable, (list, tuple))):
            # Hashed only when the whole body is in hand: a list, or a first chunk of the
            # declared length (most frameworks' complete responses). A body produced in pieces
            # is a stream and leaves as it comes, without an ETag.
            iterator = iter(rest)
            rest = iterator
            if read_produced(iterable, iterator, prefix) or sum(map(len, prefix)) == length:
                body = prefix[0] if len(prefix) == 1 else b"".join(prefix)
                prefix = []
                wsgi.close_body(iterable)
                if self._hashable(body, length):
                    headers.append(("etag", body_etag(body)))
        if self.preconditions is not None:
            answer = answer_conditional(self.method, self.preconditions, status, headers)
            if answer is not None:
                wsgi.close_body(iterable)
                _record_answer(answer, headers, body)
                self._send(list(answer.headers), status_line(answer.status))
                return [] if answer.status == 304 or self.method == "HEAD" else [answer.body]
        # Unchanged headers leave exactly as the app wrote them (names in its case).
        self.sent = True
        self.real_write = self.start_response(status_text, self.headers if unchanged and body is None else headers)
        if body is not None:
            return [body]
        return _Prefixed(prefix, rest, iterable) if prefix else iterable

    def _hashable(self, body: bytes, content_length: int | None) -> bool:
        """Whether ``body``, whole, may be hashed for the ETag of the GET representation."""
        if len(body) > self.layer.max_body_bytes:
            return False
        if content_length is None:
            # A HEAD's empty body says nothing about the GET body, so it gets no ETag.
            return self.method == "GET"
        # A HEAD answered without its body (or a lying Content-Length) cannot be hashed: the
        # ETag must be the one the GET representation gets.
        return len(body) == content_length


class _Prefixed:
    """The app's iterable with chunks already pulled from it put back in front; closes it."""

    __slots__ = ("iterable", "prefix", "rest")

    def __init__(self, prefix: list[bytes], rest: Iterable[bytes], iterable: Iterable[bytes]) -> None:
        self.prefix, self.rest, self.iterable = prefix, rest, iterable

    def __iter__(self) -> Iterator[bytes]:
        yield from self.prefix
        yield from self.rest

    def close(self) -> None:
        wsgi.close_body(self.iterable)


_STREAM, _BUFFER, _DROP = 0, 1, 2


class ASGICDN(asgi.EarlyFirst):
    """The CDN layer around an ASGI app: stamps at ``http.response.start``."""

    def __init__(self, app: asgi.ASGIApp, stamper: Stamper) -> None:
        self.app = app
        self.stamper = stamper
        self.max_body_bytes = stamper.config.etag_max_body_bytes
        self.conditional = stamper.config.conditional_requests
        self.serve_early: asgi.EarlyPath | None = early_path(
            self, app, stamper, ("special_names", "unplain_names"), b"authorization", b"cookie")
        self.inner: asgi.ASGIApp = getattr(app, "handle", app) if self.serve_early else app

    async def handle(self, scope: asgi.Scope, receive: asgi.Receive, send: asgi.Send) -> None:
        """The whole layer but the early path."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        has_authorization = has_cookie = False
        fields: dict[str, str] = {}
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                has_authorization = True
            elif name == b"cookie":
                has_cookie = has_cookie or bool(value.strip())
            elif name in _ASGI_PRECONDITIONS:
                key = _ASGI_PRECONDITIONS[name]
                text = value.decode("latin-1")
                fields[key] = f"{fields[key]}, {text}" if key in fields else text
        preconditions = collect_preconditions(fields) if fields else None
        ctx: RequestContext | None = scope.get(CONTEXT_KEY)
        if ctx is not None:
            ctx.state[STATE_KEY] = preconditions
        exchange = _ASGIExchange(self, scope, send, has_authorization, has_cookie,
                                 preconditions if self.conditional else None, ctx)
        await self.inner(scope, receive, exchange.send)
        if exchange.mode == _BUFFER and exchange.start is not None:
            await exchange.flush()  # the app ended without a final body message


class _ASGIExchange:
    """One request through the ASGI shell: its start message held until stamped, and its mode."""

    __slots__ = (
        "ctx",
        "downstream",
        "has_authorization",
        "has_cookie",
        "headers",
        "layer",
        "limit",
        "method",
        "mode",
        "preconditions",
        "scope",
        "start",
        "status",
        "unchanged",
    )

    def __init__(self, layer: ASGICDN, scope: asgi.Scope, downstream: asgi.Send, has_authorization: bool,
                 has_cookie: bool, preconditions: Preconditions | None, ctx: RequestContext | None) -> None:
        self.layer = layer
        self.scope = scope
        self.downstream = downstream
        self.has_authorization = has_authorization
        self.has_cookie = has_cookie
        self.preconditions = preconditions
        self.ctx = ctx
        self.method = scope.get("method", "GET").upper()
        self.mode = _STREAM
        self.start: asgi.Message | None = None
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self.unchanged = False
        self.limit = 0

    async def send(self, message: asgi.Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            await self._on_start(message)
        elif self.mode == _STREAM:
            await self.downstream(message)
        elif self.mode == _DROP:
            return
        elif kind == "http.response.body" and not message.get("more_body", False):
            await self._finish(message.get("body", b""))  # the whole body, in one message
        else:
            # A body sent in pieces is a stream, never held back to be hashed; pathsend and
            # trailers are not bodies we can hash either.
            self.mode = _STREAM
            await self._send_start()
            await self.downstream(message)

    async def _on_start(self, message: asgi.Message) -> None:
        self.status = message["status"]
        headers = [(name.decode("latin-1").lower(), value.decode("latin-1"))
                   for name, value in message.get("headers", ())]
        outcome = self.layer.stamper.stamp(
            self.method, self.scope.get("path", ""), self.has_authorization, self.status, headers,
            self.ctx.tags if self.ctx is not None else (), has_cookie=self.has_cookie)
        self.headers = outcome.headers
        self.unchanged = outcome.headers == headers
        self.start = message
        if outcome.generate_etag:
            limit = buffer_limit(outcome.content_length, self.layer.max_body_bytes)
            if limit is not None:
                self.mode, self.limit = _BUFFER, limit
                return
        if await self._answered(None):
            return
        await self._send_start()

    async def _finish(self, body: bytes) -> None:
        if len(body) == self.limit:  # a HEAD without its body gets no ETag (see WSGI shell)
            with_etag(self.headers, body)
            self.unchanged = False
        if await self._answered(body):
            return
        await self._send_start()
        self.mode = _STREAM
        await self.downstream({"type": "http.response.body", "body": body, "more_body": False})

    async def flush(self) -> None:
        """The app ended without a final body message: send the start it held, and an end."""
        self.mode = _STREAM
        await self._send_start()
        await self.downstream({"type": "http.response.body", "body": b"", "more_body": False})

    async def _answered(self, body: bytes | None) -> bool:
        answer = answer_conditional(self.method, self.preconditions, self.status, self.headers)
        if answer is None:
            return False
        self.mode = _DROP
        _record_answer(answer, self.headers, body)
        await asgi.send_response(self.downstream, answer, head=answer.status == 304 or self.method == "HEAD")
        return True

    async def _send_start(self) -> None:
        assert self.start is not None
        if self.unchanged:
            await self.downstream(self.start)  # the app's own message object, untouched
            return
        message = dict(self.start)
        message["headers"] = [(name.encode("latin-1"), value.encode("latin-1"))
                              for name, value in self.headers]
        await self.downstream(message)


def _build(runtime: Any) -> tuple[Stamper, Any]:
    config: CDNConfig = runtime.config.cdn
    stamper = Stamper(config)
    index = load_index(config.assets_manifest, prefix=config.assets_prefix, base_url=config.assets_base_url)
    runtime.services["cdn"] = stamper
    runtime.services["cdn.assets"] = index
    return stamper, index if config.assets_manifest is not None and config.serve_assets else None


def wrap_wsgi(app: wsgi.WSGIApp, runtime: Any) -> wsgi.WSGIApp:
    """The cdn layer around a WSGI app (with servestatic inside it when assets are configured)."""
    stamper, index = _build(runtime)
    inner = serve_assets_wsgi(app, index) if index is not None else app
    return WSGICDN(inner, stamper)


def wrap_asgi(app: asgi.ASGIApp, runtime: Any) -> asgi.ASGIApp:
    """The cdn layer around an ASGI app (with servestatic inside it when assets are configured)."""
    stamper, index = _build(runtime)
    inner = serve_assets_asgi(app, index) if index is not None else app
    return ASGICDN(inner, stamper)
