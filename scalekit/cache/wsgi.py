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
from ..context import CONTEXT_KEY, RequestContext, activate
from ..messages import status_line
from .entry import CachedEntry
from .hot import PlainHits
from .layer import CacheCore
from .policy import (
    SAFE_METHODS,
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
from .wsgi_io import (
    SPECIAL_ENVIRON_KEYS,
    Capture,
    PassBody,
    close_body,
    discard_start_response,
    environ_key,
    request_view,
    restore_route,
    route_of,
    send_whole,
    with_header,
)

__all__ = ["WSGICache", "request_view"]

log = logging.getLogger("scalekit.cache")

Found = tuple[CachedEntry, str] | None


class WSGICache:
    """PEP 3333 middleware: serve hits, forward misses, store by policy."""

    def __init__(self, app: wsgi.WSGIApp, core: CacheCore) -> None:
        self.app = app
        self.core = core
        self.policy = core.policy
        self.store = core.store
        self.generations = core.generations
        self.clock = core.clock
        self.plain_hits = PlainHits(core, list)

    def __call__(self, environ: wsgi.Environ, start_response: wsgi.StartResponse) -> Iterable[bytes]:
        early = self.serve_early(environ)
        if early is not None:
            start_response(early[0], early[1])
            return early[2]
        return self.handle(environ, start_response)

    def serve_early(self, environ: wsgi.Environ) -> tuple[str, list[tuple[str, str]], list[bytes]] | None:
        """Status line, headers and body of a plain fresh L1 hit (a GET or HEAD with no special
        header), or None: :meth:`handle` decides. Needs no request context, so the pipeline
        root calls it before making one when this layer is the outermost."""
        method = environ.get("REQUEST_METHOD")
        if method != "GET" and method != "HEAD":
            return None
        host = environ.get("HTTP_HOST")
        if host is None or not environ.keys().isdisjoint(SPECIAL_ENVIRON_KEYS):
            return None
        path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
        if not path.isascii():
            return None  # request_view decodes it
        found = self.plain_hits.serve(environ.get("wsgi.url_scheme", "http"), host, path,
                                      environ.get("QUERY_STRING", ""))
        if found is None:
            return None
        entry, headers = found
        if entry.route:
            restore_route(environ, entry.route)
        return (status_line(entry.status), headers,
                [] if method == "HEAD" or not entry.body else [entry.body])

    def handle(self, environ: wsgi.Environ, start_response: wsgi.StartResponse) -> Iterable[bytes]:
        """The whole layer but :meth:`serve_early`: every request it did not answer."""
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
            return self.app(environ, with_header(start_response, core.host_rejected_status))
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
                    restore_route(environ, decision.route)
                if decision.refresh is not None:
                    self._refresh_later(environ, key, decision.refresh, index, entry_key)
                return send_whole(start_response, decision.status, decision.headers, decision.body)
            case Forward():
                return self._forward(environ, start_response, view, key, decision, index, entry_key, now)
            case Refuse():
                core.count("miss")
                return send_whole(start_response, decision.status, decision.headers, decision.body)
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
                return send_whole(start_response, stale.status, stale.headers, stale.body)
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
                    restore_route(environ, decision.route)
                return send_whole(start_response, decision.status, decision.headers, decision.body)
            case Refuse():
                return send_whole(start_response, decision.status, decision.headers, decision.body)
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
            return send_whole(start_response, stale.status, stale.headers, stale.body)
        self.core.count("miss")
        return send_whole(start_response, *self.policy.responses.refusal(504, "coalesce-timeout"))

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
        capture = Capture()
        request_time = clock()
        body: Iterable[bytes] = ()
        try:
            body = self.app(inner, capture)
            iterator = capture.prime(body)
        except Exception:
            close_body(body)
            stale = policy.stale_fallback(forward, view, now=clock(), origin_status=None)
            if stale is None:
                raise
            core.count("stale")
            return send_whole(start_response, stale.status, stale.headers, stale.body)
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
                return PassBody(capture.written, iterator, body) if capture.written else body
            case Buffer():
                return self._buffer(start_response, view, key, forward, decision.plan,
                                    decision.pass_headers, capture, iterator, body, index,
                                    since, uri_mark, ctx, count)
            case Freshen():
                close_body(body)
                if decision.entry is not None:
                    core.store_entry(key, decision.entry, index, uri_mark)
                else:
                    self.store.delete(entry_key)
                count("revalidated")
                return send_whole(start_response, decision.status, decision.headers, decision.body)
            case ServeStale():
                close_body(body)
                count("stale")
                return send_whole(start_response, decision.status, decision.headers, decision.body)
            case _:
                assert_never(decision)

    def _buffer(self, start_response: wsgi.StartResponse, view: RequestView, key: str,
                forward: Forward, plan: StorePlan, pass_headers: tuple[tuple[str, str], ...],
                capture: Capture, iterator: Iterator[bytes], body: Iterable[bytes],
                index: CachedEntry | None, since: int, uri_mark: int, ctx: Any,
                count: Any) -> Iterable[bytes]:
        core, policy = self.core, self.policy
        limit = core.max_body_bytes
        chunks = capture.written
        size = sum(map(len, chunks))
        try:
            if size <= limit:
                for chunk in iterator:
                    chunks.append(chunk)
                    size += len(chunk)
                    if size > limit:
                        break
        except Exception:
            close_body(body)
            # Nothing was sent yet: a failure while producing the body is an origin error too.
            stale = policy.stale_fallback(forward, view, now=self.clock(), origin_status=None)
            if stale is None:
                raise
            count("stale")
            return send_whole(start_response, stale.status, stale.headers, stale.body)
        if size > limit:
            # Too large to store: what was read, then the rest, untouched and streamed.
            count("uncacheable")
            start_response(capture.status or "200 OK", list(pass_headers), capture.exc_info)
            return PassBody(chunks, iterator, body)
        close_body(body)
        data = b"".join(chunks)
        stamp = self.generations.stamp(core.tags_for(ctx, plan, view, key), since)
        entry = None
        if stamp is not None and core.recent.allows(key, uri_mark):  # invariant 2
            entry = policy.responses.complete(plan, data, stamp, route_of(ctx))
        if entry is not None:
            core.store_entry(key, entry, index, uri_mark)
        count("miss")
        code = capture.code
        status, headers, out = policy.stored_miss_response(view, forward, code, entry,
                                                           pass_headers, data, now=self.clock())
        line = capture.status if status == code and capture.status else status_line(status)
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
                body = self._fetch(background, discard_start_response, view, key, refresh, index, entry_key,
                                   background=True)
                try:
                    for _ in body:
                        pass
                finally:
                    close_body(body)
            except Exception:
                log.warning("scalekit: background refresh of %s failed", key, exc_info=True)
            finally:
                core.refreshes.done(key)

        try:
            core.executor.submit(run)
        except RuntimeError:  # shutting down
            core.refreshes.done(key)
