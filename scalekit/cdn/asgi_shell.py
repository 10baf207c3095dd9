"""The CDN layer's ASGI shell: wraps ``send`` and holds ``http.response.start`` until stamped.

The body is held back only to compute an ETag, and only when the app sends it whole in a single
``http.response.body`` message of the declared Content-Length (within
``cdn.etag_max_body_bytes``). A body sent in pieces, ``pathsend`` and trailers stream through
without an ETag. See :mod:`scalekit.cdn.layer` for the layer.
"""

from __future__ import annotations

from collections.abc import Awaitable

from .. import asgi
from ..calls import direct
from ..context import CONTEXT_KEY, RequestContext
from .exchange import STATE_KEY, record_answer
from .hits import early_path
from .policy import Stamper
from .respond import (
    PRECONDITION_FIELDS,
    Preconditions,
    answer_conditional,
    buffer_limit,
    collect_preconditions,
    with_etag,
)
from .unchanged import UnchangedStamps

__all__ = ["ASGICDN"]

_ASGI_PRECONDITIONS = {name.encode("latin-1"): name for name in PRECONDITION_FIELDS}
# Every request header the layer reads: a browser sends a dozen or more, most of them none of
# these, and each costs one set lookup.
_READ_NAMES = frozenset({b"authorization", b"cookie", *_ASGI_PRECONDITIONS})


class _FieldNames(dict[bytes, str]):
    """Response header names as the stamper reads them (str, lower case), decoded once per name.

    An app sends a few dozen distinct names, so after the first responses a name is a dict
    lookup instead of a decode and a lower() (bench: the CDN layer's share of a miss). At most
    ``MAX_NAMES`` short names are kept; any other name is decoded each time.
    """

    MAX_NAMES = 512
    MAX_NAME_BYTES = 64

    def __missing__(self, name: bytes) -> str:
        text = name.decode("latin-1").lower()
        if len(name) <= self.MAX_NAME_BYTES and len(self) < self.MAX_NAMES:
            self[name] = text
        return text


_FIELD_NAMES = _FieldNames()


_STREAM, _BUFFER, _DROP = 0, 1, 2


class ASGICDN(asgi.EarlyFirst):
    """The CDN layer around an ASGI app: stamps at ``http.response.start``."""

    def __init__(self, app: asgi.ASGIApp, stamper: Stamper) -> None:
        self.app = app
        self.stamper = stamper
        self.max_body_bytes = stamper.config.etag_max_body_bytes
        self.conditional = stamper.config.conditional_requests
        self.unchanged_stamps = UnchangedStamps(stamper, encoded=True)
        self.serve_early: asgi.EarlyPath | None = early_path(
            self, app, stamper, ("special_names", "unplain_names"), b"authorization", b"cookie")
        self.inner: asgi.ASGIApp = getattr(app, "handle", app) if self.serve_early else direct(app)

    async def handle(self, scope: asgi.Scope, receive: asgi.Receive, send: asgi.Send) -> None:
        """The whole layer but the early path."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        has_authorization = has_cookie = False
        fields: dict[str, str] = {}
        for name, value in scope.get("headers", ()):
            if name not in _READ_NAMES:
                continue
            if name == b"authorization":
                has_authorization = True
            elif name == b"cookie":
                has_cookie = has_cookie or bool(value.strip())
            else:
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

    def send(self, message: asgi.Message) -> Awaitable[None]:
        """The app's ``send``: a plain function handing on the awaitable of the mode's step."""
        kind = message["type"]
        mode = self.mode
        if kind == "http.response.start":
            return self._on_start(message)
        if mode == _STREAM:
            return self.downstream(message)
        if mode == _DROP:
            return asgi.DONE
        if kind == "http.response.body" and not message.get("more_body", False):
            return self._finish(message.get("body", b""))  # the whole body, in one message
        return self._stream_on(message)

    async def _stream_on(self, message: asgi.Message) -> None:
        # A body sent in pieces is a stream, never held back to be hashed; pathsend and
        # trailers are not bodies we can hash either.
        self.mode = _STREAM
        await self._send_start()
        await self.downstream(message)

    def _on_start(self, message: asgi.Message) -> Awaitable[None]:
        """Stamp the start message; the usual one (headers unchanged, no body to hash, no
        precondition) is handed on as the next ``send``'s own awaitable, no coroutine of its own."""
        self.status = status = message["status"]
        layer, ctx = self.layer, self.ctx
        tags = ctx.tags if ctx is not None else ()
        lines = message.get("headers", ())
        if not isinstance(lines, (list, tuple)):  # an iterator is read once, here: keep its lines
            lines = list(lines)
            message = {**message, "headers": lines}
        memo = layer.unchanged_stamps
        # An answer to preconditions reads the stamped lines: such a request is always stamped.
        key = None if self.preconditions is not None else memo.key(
            self.method, status, self.has_authorization, self.has_cookie, tags, lines)
        if memo.holds(key):
            self.unchanged = True
            self.start = message
            return self.downstream(message)  # the app's own message object, untouched
        names = _FIELD_NAMES
        headers = [(names[name], value.decode("latin-1")) for name, value in lines]
        outcome = layer.stamper.stamp(self.method, self.scope.get("path", ""), self.has_authorization,
                                      status, headers, tags, has_cookie=self.has_cookie)
        self.headers = outcome.headers
        self.unchanged = outcome.headers == headers
        self.start = message
        memo.learn(key, self.unchanged, outcome.generate_etag)
        if outcome.generate_etag:
            limit = buffer_limit(outcome.content_length, self.layer.max_body_bytes)
            if limit is not None:
                self.mode, self.limit = _BUFFER, limit
                return asgi.DONE  # held until the body is known
        if self.unchanged and self.preconditions is None:
            return self.downstream(message)  # the app's own message object, untouched
        return self._start_stamped(message)

    async def _start_stamped(self, message: asgi.Message) -> None:
        if self.preconditions is not None and await self._answered(None):
            return
        if self.unchanged:
            await self.downstream(message)
            return
        await self._send_start()

    async def _finish(self, body: bytes) -> None:
        if len(body) == self.limit:  # a HEAD without its body gets no ETag (see WSGI shell)
            with_etag(self.headers, body)
            self.unchanged = False
        if self.preconditions is not None and await self._answered(body):
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
        """Whether the request's preconditions (set) were answered 304 / 412 instead."""
        answer = answer_conditional(self.method, self.preconditions, self.status, self.headers)
        if answer is None:
            return False
        self.mode = _DROP
        record_answer(answer, self.headers, body)
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
