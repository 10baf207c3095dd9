"""The cache layer's PEP 3333 shell: reads the environ, calls the store and the app, sends bytes.

Every HTTP decision comes from :class:`~scalekit.cache.policy.CachePolicy`; this module only
sequences I/O. A hit never calls the app. On the miss path the app's iterable is always
closed (PEP 3333 ``close()``: the pool returns its connection there): directly when the body
was read to be stored, or by the server when a body is passed through.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable, Iterator
from dataclasses import replace
from typing import Any, assert_never

from .. import wsgi
from ..context import CONTEXT_KEY, UNMATCHED_ROUTE, RequestContext, activate
from ..messages import status_line
from .entry import CachedEntry
from .layer import CacheCore
from .policy import (
    SAFE_METHODS,
    SPECIAL_REQUEST_HEADERS,
    Buffer,
    Forward,
    Freshen,
    PassThrough,
    Refuse,
    RequestView,
    Serve,
    ServeStale,
)
from .rules import rule_of
from .storable import StorePlan

__all__ = ["WSGICache", "request_view"]

log = logging.getLogger("scalekit.cache")

_ENVIRON_KEYS: dict[str, str] = {"content-type": "CONTENT_TYPE", "content-length": "CONTENT_LENGTH"}
Found = tuple[CachedEntry, str] | None


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


_SPECIAL_KEYS = tuple(environ_key(name) for name in SPECIAL_REQUEST_HEADERS)


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
    if host is None:
        host = f"{environ.get('SERVER_NAME', '')}:{environ.get('SERVER_PORT', '')}"
    special = False
    for name in _SPECIAL_KEYS:
        if name in environ:
            special = True
            break
    return RequestView(environ.get("REQUEST_METHOD", "GET"), environ.get("wsgi.url_scheme", "http"),
                       host, path, environ.get("QUERY_STRING", ""), EnvironHeaders(environ).get, special)


class _Capture:
    """The app's ``start_response``, recorded; nothing reaches the server until we decide."""

    __slots__ = ("exc_info", "headers", "status", "written")

    def __init__(self) -> None:
        self.status: str | None = None
        self.headers: list[tuple[str, str]] = []
        self.exc_info: Any = None
        self.written: list[bytes] = []

    def __call__(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        self.status, self.headers, self.exc_info = status, headers, exc_info
        return self.written.append  # PEP 3333 write(): kept in order before the iterable's chunks

    @property
    def code(self) -> int:
        status = self.status or ""
        return int(status[:3]) if status[:3].isdigit() else 500

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


class _PassBody:
    """Chunks already read, then the rest of the app's iterable; ``close()`` reaches the app's."""

    __slots__ = ("body", "head", "iterator")

    def __init__(self, head: list[bytes], iterator: Iterator[bytes], body: Iterable[bytes]) -> None:
        self.head, self.iterator, self.body = head, iterator, body

    def __iter__(self) -> Iterator[bytes]:
        yield from self.head
        yield from self.iterator

    def close(self) -> None:
        _close(self.body)


def _close(body: Iterable[bytes]) -> None:
    close = getattr(body, "close", None)
    if close is not None:
        close()


def _send(start_response: wsgi.StartResponse, status: int, headers: tuple[tuple[str, str], ...],
          body: bytes) -> list[bytes]:
    start_response(status_line(status), list(headers))
    return [body] if body else []


def _route(ctx: Any) -> str:
    return ctx.route if ctx is not None and ctx.route != UNMATCHED_ROUTE else ""


def _restore_route(environ: wsgi.Environ, route: str) -> None:
    ctx = environ.get(CONTEXT_KEY)
    if ctx is not None:
        ctx.route = route


def _discard(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
    return lambda data: None


class WSGICache:
    """PEP 3333 middleware: serve hits, forward misses, store by policy."""

    def __init__(self, app: wsgi.WSGIApp, core: CacheCore) -> None:
        self.app = app
        self.core = core
        self.policy = core.policy
        self.store = core.store
        self.generations = core.generations
        self.clock = core.clock

    def __call__(self, environ: wsgi.Environ, start_response: wsgi.StartResponse) -> Iterable[bytes]:
        core = self.core
        if core.purge.enabled:
            purged = core.purge.handle_wsgi(environ)
            if purged is not None:
                return wsgi.send_response(start_response, purged)
        method = environ.get("REQUEST_METHOD", "GET")
        if method != "GET" and method != "HEAD":
            if method in SAFE_METHODS:
                return self.app(environ, start_response)
            return self._unsafe(environ, start_response)
        view = request_view(environ)
        key = self.policy.primary_key(view)
        if key is None:
            core.hosts_rejected.inc()
            core.count("bypass")
            return self.app(environ, start_response)
        now = self.clock()
        found = self.store.get(key)
        if found is not None and not found[0].is_vary_index and self.generations.is_current(found[0].tags):
            # The common hit: a plain entry, current (inlined _lookup).
            miss: Any = "miss"
            index, entry_key = None, key
        else:
            found, miss, index, entry_key = self._lookup(key, view, found, asked=True)
        decision = self.policy.decide_request(view, found, now=now, miss=miss)
        match decision:
            case Serve():
                core.count(decision.outcome)
                if decision.route:
                    _restore_route(environ, decision.route)
                if decision.refresh is not None:
                    self._refresh_later(environ, key, decision.refresh, index, entry_key)
                return _send(start_response, decision.status, decision.headers, decision.body)
            case Forward():
                return self._forward(environ, start_response, view, key, decision, index, entry_key, now)
            case Refuse():
                core.count("miss")
                return _send(start_response, decision.status, decision.headers, decision.body)
            case _:
                assert_never(decision)

    # ----------------------------------------------------------------- lookups
    def _lookup(self, key: str, view: RequestView, found: Found = None, *, asked: bool = False
                ) -> tuple[Found, Any, CachedEntry | None, str]:
        """(entry and tier or None, why it missed, the variant index, the entry's key);
        ``asked``: ``found`` is what the store already returned for ``key``."""
        if not asked:
            found = self.store.get(key)
        if found is None:
            return None, "uri-miss", None, key
        index = None
        entry_key = key
        if found[0].is_vary_index:
            index = found[0]
            variant = self.policy.variant_lookup(key, index, view)
            if variant is None:
                return None, "vary-miss", index, key
            entry_key = variant
            found = self.store.get(variant)
            if found is None:
                return None, "vary-miss", index, entry_key
        if not self.generations.is_current(found[0].tags):
            return None, "miss", index, entry_key  # invalidated by tag (invariant 2)
        return found, "miss", index, entry_key

    # ----------------------------------------------------------------- misses
    def _forward(self, environ: wsgi.Environ, start_response: wsgi.StartResponse, view: RequestView,
                 key: str, forward: Forward, index: CachedEntry | None, entry_key: str,
                 arrived: float) -> Iterable[bytes]:
        if not forward.coalesce:
            return self._fetch(environ, start_response, view, key, forward, index, entry_key)
        flights = self.core.thread_flights
        flight, event = flights.join(key)
        if event is None:  # the leader
            try:
                # _fetch stores before it returns, so waiters find the entry when woken.
                return self._lead(environ, start_response, view, key, forward, index, entry_key, arrived)
            finally:
                flights.finish(key, flight)
        if not event.wait(self.core.coalesce_timeout_seconds):
            return self._waited_too_long(start_response, view, forward)
        return self._after_wait(environ, start_response, view, key, arrived)

    def _lead(self, environ: wsgi.Environ, start_response: wsgi.StartResponse, view: RequestView,
              key: str, forward: Forward, index: CachedEntry | None, entry_key: str,
              arrived: float) -> Iterable[bytes]:
        """This process's one origin call for ``key``; with fleet leases, the fleet's one."""
        leases = self.core.leases
        if leases is None:
            return self._fetch(environ, start_response, view, key, forward, index, entry_key)
        lease = leases.acquire(key)
        if lease is None:  # another instance is computing it: wait, then read the shared store
            if leases.wait_release(key, timeout_seconds=self.core.coalesce_timeout_seconds):
                return self._after_wait(environ, start_response, view, key, arrived)
            stale = self.policy.stale_fallback(forward, view, now=self.clock(), origin_status=None,
                                               any_age=True)
            if stale is not None:
                self.core.count("stale")
                return _send(start_response, stale.status, stale.headers, stale.body)
            return self._fetch(environ, start_response, view, key, forward, index, entry_key)
        try:
            return self._fetch(environ, start_response, view, key, forward, index, entry_key)
        finally:
            leases.release(lease)

    def _after_wait(self, environ: wsgi.Environ, start_response: wsgi.StartResponse,
                    view: RequestView, key: str, arrived: float) -> Iterable[bytes]:
        """A coalesced waiter, woken: the leader's stored answer, or its own origin call."""
        found, miss, index, entry_key = self._lookup(key, view)
        decision = self.policy.decide_request(view, found, now=self.clock(), miss=miss,
                                              collapsed_since=arrived)
        match decision:
            case Serve():
                self.core.count(decision.outcome)
                if decision.route:
                    _restore_route(environ, decision.route)
                return _send(start_response, decision.status, decision.headers, decision.body)
            case Refuse():
                return _send(start_response, decision.status, decision.headers, decision.body)
            case Forward():
                # Nothing shareable came back (private, Set-Cookie, uncacheable): go alone.
                return self._fetch(environ, start_response, view, key, replace(decision, coalesce=False),
                                   index, entry_key)
            case _:
                assert_never(decision)

    def _waited_too_long(self, start_response: wsgi.StartResponse, view: RequestView,
                         forward: Forward) -> Iterable[bytes]:
        stale = self.policy.stale_fallback(forward, view, now=self.clock(), origin_status=None, any_age=True)
        if stale is not None:
            self.core.count("stale")
            return _send(start_response, stale.status, stale.headers, stale.body)
        self.core.count("miss")
        return _send(start_response, *self.policy.responses.refusal(504, "coalesce-timeout"))

    def _fetch(self, environ: wsgi.Environ, start_response: wsgi.StartResponse, view: RequestView,
               key: str, forward: Forward, index: CachedEntry | None, entry_key: str,
               *, background: bool = False) -> Iterable[bytes]:
        core, policy, clock = self.core, self.policy, self.clock
        # Invariant 2: generations are read before the origin is called.
        since = self.generations.sequence()
        uri_mark = core.recent.mark()
        inner = environ
        if forward.request_headers:
            inner = dict(environ)
            for name, value in forward.request_headers:
                if value is None:
                    inner.pop(environ_key(name), None)
                else:
                    inner[environ_key(name)] = value
        capture = _Capture()
        request_time = clock()
        body: Iterable[bytes] = ()
        try:
            body = self.app(inner, capture)
            iterator = capture.prime(body)
        except Exception:
            _close(body)
            stale = policy.stale_fallback(forward, view, now=clock(), origin_status=None)
            if stale is None:
                raise
            core.count("stale")
            return _send(start_response, stale.status, stale.headers, stale.body)
        now = clock()
        ctx = environ.get(CONTEXT_KEY)
        decision = policy.decide_response(view, forward, capture.code, capture.headers, now=now,
                                          request_time=request_time, rule=rule_of(ctx))
        count = (lambda outcome: None) if background else core.count
        match decision:
            case PassThrough():
                if decision.delete_stored:
                    self.store.delete(entry_key)
                count("uncacheable" if view.method == "GET" else "miss")
                start_response(capture.status or "500 Internal Server Error", list(decision.headers),
                               capture.exc_info)
                return _PassBody(capture.written, iterator, body) if capture.written else body
            case Buffer():
                return self._buffer(start_response, view, key, forward, decision.plan,
                                    decision.pass_headers, capture, iterator, body, index,
                                    since, uri_mark, ctx, count)
            case Freshen():
                _close(body)
                if decision.entry is not None and core.recent.allows(key, uri_mark):
                    for store_key, entry in policy.storage_writes(
                            key, decision.entry, index, new_variants_id=core.new_variants_id):
                        self.store.set(store_key, entry)
                elif decision.entry is None:
                    self.store.delete(entry_key)
                count("revalidated")
                return _send(start_response, decision.status, decision.headers, decision.body)
            case ServeStale():
                _close(body)
                count("stale")
                return _send(start_response, decision.status, decision.headers, decision.body)
            case _:
                assert_never(decision)

    def _buffer(self, start_response: wsgi.StartResponse, view: RequestView, key: str,
                forward: Forward, plan: StorePlan, pass_headers: tuple[tuple[str, str], ...],
                capture: _Capture, iterator: Iterator[bytes], body: Iterable[bytes],
                index: CachedEntry | None, since: int, uri_mark: int, ctx: Any,
                count: Any) -> Iterable[bytes]:
        core, policy = self.core, self.policy
        limit = core.max_body_bytes
        chunks = capture.written
        size = sum(len(chunk) for chunk in chunks)
        try:
            if size <= limit:
                for chunk in iterator:
                    chunks.append(chunk)
                    size += len(chunk)
                    if size > limit:
                        break
        except BaseException:
            _close(body)
            raise
        if size > limit:
            # Too large to store: what was read, then the rest, untouched and streamed.
            count("uncacheable")
            start_response(capture.status or "200 OK", list(pass_headers), capture.exc_info)
            return _PassBody(chunks, iterator, body)
        _close(body)
        data = b"".join(chunks)
        stamp = self.generations.stamp(core.tags_for(ctx, plan, view), since)
        entry = None
        if stamp is not None and core.recent.allows(key, uri_mark):  # invariant 2
            entry = policy.responses.complete(plan, data, stamp, _route(ctx))
        if entry is not None:
            for store_key, value in policy.storage_writes(key, entry, index,
                                                          new_variants_id=core.new_variants_id):
                self.store.set(store_key, value)
        count("miss")
        status, headers, out = policy.stored_miss_response(view, forward, capture.code, entry,
                                                           pass_headers, data, now=self.clock())
        line = capture.status if status == capture.code and capture.status else status_line(status)
        start_response(line, list(headers))
        return [out] if out else []

    # ----------------------------------------------------------------- unsafe methods (§4.4)
    def _unsafe(self, environ: wsgi.Environ, start_response: wsgi.StartResponse) -> Iterable[bytes]:
        view = request_view(environ)
        core = self.core
        core.count("bypass")
        request_time = self.clock()

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            code = int(status[:3]) if status[:3].isdigit() else 500
            keys = self.policy.invalidated_keys(view, code, headers)
            if keys:
                core.invalidate_keys(keys)
            out = list(self.policy.responses.forwarded(headers, "method", now=self.clock(),
                                                       request_time=request_time))
            return start_response(status, out, exc_info) if exc_info else start_response(status, out)

        return self.app(environ, start)

    # ----------------------------------------------------------------- stale-while-revalidate
    def _refresh_later(self, environ: wsgi.Environ, key: str, refresh: Forward,
                       index: CachedEntry | None, entry_key: str) -> None:
        """Revalidate ``key`` once in the bounded thread pool (RFC 5861 §3)."""
        core = self.core
        if not core.refreshes.try_start(key):
            return
        background = dict(environ)
        background.update({"REQUEST_METHOD": "GET", "wsgi.input": io.BytesIO(b""), "CONTENT_LENGTH": "0"})
        background.pop("gunicorn.socket", None)  # the client's socket is not ours to touch
        ctx = RequestContext("GET", environ.get("PATH_INFO", ""))
        background[CONTEXT_KEY] = ctx
        view = request_view(background)

        def run() -> None:
            activate(ctx)
            try:
                body = self._fetch(background, _discard, view, key, refresh, index, entry_key,
                                   background=True)
                try:
                    for _ in body:
                        pass
                finally:
                    _close(body)
            except Exception:
                log.warning("scalekit: background refresh of %s failed", key, exc_info=True)
            finally:
                core.refreshes.done(key)

        try:
            core.executor.submit(run)
        except RuntimeError:  # shutting down
            core.refreshes.done(key)
