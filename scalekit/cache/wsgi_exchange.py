"""One origin call under WSGI: :class:`Exchange` calls the app and answers by the policy.

The app's ``start_response`` is captured and nothing reaches the server until the policy has
decided (:meth:`~.policy.CachePolicy.decide_response`); then, by decision:

- pass (not storable): the app's iterable goes to the server as it is;
- buffer (storable): what the app has produced without waiting is read
  (:func:`~scalekit.wsgi.read_produced`). A body produced whole (a list, or a first chunk of the
  declared length, as frameworks return complete responses) is stored, then answered from; a
  body still coming is a stream, passed on chunk by chunk by :class:`~.wsgi_io.CopyingBody`,
  with a copy stored once the server has sent it all, if it stayed within ``max_body_bytes``
  and no invalidation overlapped it (the marks are read before the app is called);
- Freshen, ServeStale: the stored entry answers, the app's iterable is closed.

:meth:`Exchange.run` returns as soon as the answer is decided, before any body is sent, so the
leader's coalesced waiters (woken when it returns) never wait for a transfer. Its ``flight`` is
marked ``alone`` when nothing will be stored for them to find: they go to the origin themselves.
The app's iterable is always closed (PEP 3333): here when its body was read to be stored, or by
the server when it is passed on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, assert_never

from .. import wsgi
from ..context import CONTEXT_KEY
from ..messages import status_line
from .coalesce import Flight
from .decisions import Buffer, Forward, Freshen, PassThrough, RequestView, ServeStale, pass_outcome
from .entry import CachedEntry
from .rules import rule_of
from .wsgi_io import (
    Capture,
    CopyingBody,
    PassBody,
    close_body,
    environ_key,
    read_produced,
    send_whole,
)

if TYPE_CHECKING:
    from .wsgi import WSGICache

__all__ = ["Exchange"]


class Exchange:
    """One origin call for the request ``view`` (primary ``key``), answered to ``start_response``."""

    __slots__ = ("background", "capture", "count", "ctx", "entry_key", "flight", "forward",
                 "index", "key", "shell", "since", "start_response", "uri_mark", "view")

    def __init__(self, shell: WSGICache, start_response: wsgi.StartResponse, view: RequestView,
                 key: str, forward: Forward, index: CachedEntry | None, entry_key: str,
                 flight: Flight | None = None, background: bool = False) -> None:
        self.shell = shell
        self.start_response = start_response
        self.view = view
        self.key = key
        self.forward = forward
        self.index = index
        self.entry_key = entry_key
        self.background = background
        self.flight = flight
        self.capture = Capture()
        self.count: Callable[[str], None] = (lambda outcome: None) if background else shell.core.count
        self.ctx: Any = None
        # Generations (and the URI invalidation mark) are read before the origin
        # is called, so a response whose computation overlapped an invalidation is not stored.
        self.since = shell.generations.sequence()
        self.uri_mark = shell.core.recent.mark()

    def run(self, environ: wsgi.Environ) -> Iterable[bytes]:
        shell, forward, view, capture = self.shell, self.forward, self.view, self.capture
        policy, clock = shell.policy, shell.clock
        inner = environ
        if forward.request_headers:
            inner = dict(environ)
            for name, value in forward.request_headers:
                if value is None:
                    inner.pop(environ_key(name), None)
                else:
                    inner[environ_key(name)] = value
        request_time = clock()
        body: Iterable[bytes] = ()
        try:
            body = shell.call_app(inner, capture.start_response)
            iterator = capture.prime(body)
        except Exception:
            close_body(body)
            stale = self._stale()
            if stale is None:
                raise
            return stale
        self.ctx = ctx = environ.get(CONTEXT_KEY)
        decision = policy.decide_response(view, forward, capture.code, capture.headers, now=clock(),
                                          request_time=request_time, rule=rule_of(ctx))
        match decision:
            case PassThrough():
                if decision.delete_stored:
                    shell.store.delete(self.entry_key)
                if forward.may_store:  # the answer could not be stored: remember (hit-for-miss)
                    shell.core.pass_marks.add(self.key)
                self._alone()
                self.count(pass_outcome(forward, view.method))
                self.start_response(capture.status or "500 Internal Server Error",
                                    list(decision.headers), capture.exc_info)
                return PassBody(capture.written, iterator, body) if capture.written else body
            case Buffer():
                return self._buffer(decision, iterator, body)
            case Freshen():
                close_body(body)
                if decision.entry is not None:
                    shell.core.store_entry(self.key, decision.entry, self.index, self.uri_mark)
                else:
                    shell.store.delete(self.entry_key)
                self.count("revalidated")
                return send_whole(self.start_response, decision.status, decision.headers, decision.body)
            case ServeStale():
                close_body(body)
                self.count("stale")
                return send_whole(self.start_response, decision.status, decision.headers, decision.body)
            case _:
                assert_never(decision)

    def _alone(self) -> None:
        """Nothing will be stored for the leader's waiters to find: they go to the origin."""
        if self.flight is not None:
            self.flight.alone = True

    def _stale(self) -> Iterable[bytes] | None:
        """The origin failed before anything was sent: the stale entry where stale-if-error
        allows (RFC 5861 §4), or None (the error goes on)."""
        shell = self.shell
        stale = shell.policy.stale_fallback(self.forward, self.view, now=shell.clock(), origin_status=None)
        if stale is None:
            return None
        self.count("stale")
        return send_whole(self.start_response, stale.status, stale.headers, stale.body)

    def _buffer(self, decision: Buffer, iterator: Iterator[bytes], body: Iterable[bytes]) -> Iterable[bytes]:
        """A storable answer: stored, then sent, when the app produced it whole; else streamed."""
        shell, core, capture = self.shell, self.shell.core, self.capture
        chunks = capture.written
        try:
            ended = read_produced(body, iterator, chunks)
        except Exception:
            close_body(body)
            # Nothing was sent yet: a failure while producing the body is an origin error too.
            stale = self._stale()
            if stale is None:
                raise
            return stale
        size = sum(map(len, chunks))
        if size > core.max_body_bytes:
            # Too large to store: what was read, then the rest, untouched and streamed.
            core.pass_marks.add(self.key)
            self._alone()
            self.count("uncacheable")
            self.start_response(capture.status or "200 OK", list(decision.pass_headers), capture.exc_info)
            return PassBody(chunks, iterator, body)
        if not ended and size != decision.plan.content_length:
            return self._stream_copy(decision, iterator, body)
        close_body(body)
        data = b"".join(chunks)
        entry = core.store_response(self.key, self.view, decision.plan, data, self.index,
                                    since=self.since, uri_mark=self.uri_mark, ctx=self.ctx)
        self.count("miss")
        code = capture.code
        status, headers, out = shell.policy.stored_miss_response(
            self.view, self.forward, code, entry, decision.plan.unsent, decision.pass_headers, data, now=shell.clock())
        line = capture.status if status == code and capture.status else status_line(status)
        self.start_response(line, list(headers))
        return [out] if out else []

    def _stream_copy(self, decision: Buffer, iterator: Iterator[bytes], body: Iterable[bytes]) -> Iterable[bytes]:
        """A storable answer still being produced: passed on as it comes, never held back.
        Waiters do not wait for the end of a stream: they go to the origin themselves."""
        core, capture = self.shell.core, self.capture
        self._alone()

        def on_close(copy: list[bytes] | None, ended: bool) -> None:
            if ended and copy is None:  # outgrew max_body_bytes
                core.pass_marks.add(self.key)
                self.count("uncacheable")
                return
            if ended and copy is not None:
                core.store_response(self.key, self.view, decision.plan, b"".join(copy), self.index,
                                    since=self.since, uri_mark=self.uri_mark, ctx=self.ctx)
            self.count("miss")

        self.start_response(capture.status or "200 OK", list(decision.pass_headers), capture.exc_info)
        return CopyingBody(capture.written, iterator, body, limit=core.max_body_bytes, on_close=on_close)
