"""The CDN layer's PEP 3333 shell: holds the app's ``start_response`` until stamped.

The body is touched only to compute an ETag, and only when the app produced it whole at once:
a list of bytes, or a first chunk of the declared Content-Length (within
``cdn.etag_max_body_bytes``). A body produced in pieces leaves chunk by chunk without an ETag,
like a file wrapper or the legacy ``write()``. See :mod:`scalekit.cdn.layer` for the layer.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .. import wsgi
from ..calls import direct
from ..context import CONTEXT_KEY, RequestContext
from ..memo import TextMemo
from ..messages import status_line
from ..wsgi import read_produced
from .etag import body_etag
from .exchange import STATE_KEY, record_answer
from .hits import early_path
from .policy import Outcome, Stamper
from .respond import PRECONDITION_FIELDS, Preconditions, answer_conditional, collect_preconditions
from .unchanged import UnchangedStamps

__all__ = ["WSGICDN"]

_WSGI_PRECONDITIONS = tuple((name, "HTTP_" + name.upper().replace("-", "_")) for name in PRECONDITION_FIELDS)


_STATUS_CODES: TextMemo[int] = TextMemo(max_entries=512, max_text_chars=128)


def _status_code(line: str) -> int:
    """``"200 OK"`` -> 200, memoised: apps send a handful of distinct status lines."""
    code = _STATUS_CODES.get(line)
    if code is None:
        code = int(line[:3])
        _STATUS_CODES.put(line, code)
    return code


class WSGICDN(wsgi.EarlyFirst):
    """The CDN layer around a WSGI app."""

    def __init__(self, app: wsgi.WSGIApp, stamper: Stamper) -> None:
        self.app = app
        self.stamper = stamper
        config = stamper.config
        self.max_body_bytes = config.etag_max_body_bytes
        self.conditional = config.conditional_requests
        self.unchanged_stamps = UnchangedStamps(stamper, encoded=False)
        # Around the cache: its plain hits leave stamped from its early path, and the rest
        # of its requests go to its full path (they have been offered to the early one).
        self.serve_early: wsgi.EarlyPath | None = early_path(
            self, app, stamper, ("special_keys", "unplain_keys"), "HTTP_AUTHORIZATION", "HTTP_COOKIE")
        self.inner: wsgi.WSGIApp = getattr(app, "handle", app) if self.serve_early else direct(app)

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
        exchange = _WSGIExchange(self, environ, start_response, preconditions, ctx)
        iterable = self.inner(environ, exchange.start)
        if exchange.status is None or exchange.sent:
            return exchange.run_late(iterable)
        # Most apps call start_response before they return: decided here, one hop fewer.
        try:
            return exchange.respond(iterable, [], iterable)
        except BaseException:
            wsgi.close_body(iterable)
            raise


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

    def run_late(self, iterable: Iterable[bytes]) -> Iterable[bytes]:
        """The app returned before its response was decided: it calls start_response when its
        first chunk is pulled (a generator), or it already pushed the response with write()."""
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
            return wsgi.PassBody(prefix, rest, iterable)
        try:
            return self.respond(iterable, prefix, rest)
        except BaseException:
            wsgi.close_body(iterable)
            raise

    def respond(self, iterable: Iterable[bytes], prefix: list[bytes], rest: Iterable[bytes]) -> Iterable[bytes]:
        """Stamp, hash and answer once the app's response start is known (``prefix``: chunks
        already pulled from ``iterable``, ``rest`` its remainder); the caller closes
        ``iterable`` if this raises."""
        # The hot path of every response: kept to few calls and lookups on purpose (bench/cdn.py).
        ctx, environ, layer = self.ctx, self.environ, self.layer
        status_text: str = self.status  # type: ignore[assignment]  # run() checked it is set
        tags = ctx.tags if ctx is not None else ()
        has_authorization = "HTTP_AUTHORIZATION" in environ
        has_cookie = "HTTP_COOKIE" in environ and bool(environ["HTTP_COOKIE"].strip())
        memo = layer.unchanged_stamps
        # An answer to preconditions reads the stamped lines: such a request is always stamped.
        key = None if self.preconditions is not None else memo.key(
            self.method, status_text, has_authorization, has_cookie, tags, self.headers)
        if memo.holds(key):
            self.sent = True
            self.real_write = self.start_response(status_text, self.headers)
            return wsgi.PassBody(prefix, rest, iterable) if prefix else iterable
        app_headers = [(name.lower(), value) for name, value in self.headers]
        status = _STATUS_CODES.get(status_text) or _status_code(status_text)
        outcome = layer.stamper.stamp(self.method, environ.get("PATH_INFO", ""), has_authorization,
                                      status, app_headers, tags, has_cookie=has_cookie)
        headers = outcome.headers
        unchanged = headers == app_headers
        memo.learn(key, unchanged, outcome.generate_etag)
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
                record_answer(answer, headers, body)
                self._send(list(answer.headers), status_line(answer.status))
                return [] if answer.status == 304 or self.method == "HEAD" else [answer.body]
        # Unchanged headers leave exactly as the app wrote them (names in its case).
        self.sent = True
        self.real_write = self.start_response(status_text, self.headers if unchanged and body is None else headers)
        if body is not None:
            return [body]
        return wsgi.PassBody(prefix, rest, iterable) if prefix else iterable

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

