"""The cache layer's PEP 3333 shell: reads the environ, calls the store and the app, sends bytes.

Every HTTP decision comes from :class:`~scalekit.cache.policy.CachePolicy`; this module only
sequences I/O. A hit never calls the app. A miss is coalesced with concurrent misses on its key
(one origin call per process; the others wait for its headers only, see
:mod:`scalekit.cache.coalesce`), and the origin call itself is :mod:`.wsgi_exchange`'s.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any, assert_never

from .. import wsgi
from ..context import CONTEXT_KEY, RequestContext, activate
from ..messages import status_line
from .coalesce import Flight, Lead
from .entry import CachedEntry
from .flow import admit, drive
from .hot import EARLY_MISS_KEY
from .layer import CacheCore, CacheShell, restore_route
from .policy import (
    SAFE_METHODS,
    Forward,
    Refuse,
    RequestView,
    Serve,
)
from .wsgi_exchange import Exchange
from .wsgi_io import (
    SPECIAL_ENVIRON_KEYS,
    UNPLAIN_ENVIRON_KEYS,
    EnvironHeaders,
    close_body,
    discard_start_response,
    request_view,
    send_whole,
    with_header,
)

__all__ = ["WSGICache", "request_view"]

log = logging.getLogger("scalekit.cache")


class WSGICache(CacheShell, wsgi.EarlyFirst):
    """PEP 3333 middleware: serve hits, forward misses, store by policy."""

    app: wsgi.WSGIApp
    call_app: wsgi.WSGIApp

    def __init__(self, app: wsgi.WSGIApp, core: CacheCore) -> None:
        super().__init__(app, core, list)
        # Request headers that make a request special, and those of them that always send it
        # down the full path; an outer layer that reads one more (the CDN: Authorization)
        # adds it to both.
        self.special_keys, self.unplain_keys = SPECIAL_ENVIRON_KEYS, UNPLAIN_ENVIRON_KEYS

    def serve_early(self, environ: wsgi.Environ) -> tuple[str, list[tuple[str, str]], list[bytes]] | None:
        """Status line, headers and body of a plain fresh L1 hit (a GET or HEAD with no special
        header but proxy headers restating it), or None: :meth:`handle` decides. Needs no
        request context, so the pipeline root calls it before making one when this layer is
        the outermost."""
        method = environ.get("REQUEST_METHOD")
        if method != "GET" and method != "HEAD":
            return None
        host = environ.get("HTTP_HOST")
        if host is None:
            return None
        if not environ.keys().isdisjoint(self.special_keys) and not (
                environ.keys().isdisjoint(self.unplain_keys)
                and self.plain_hits.restated(method, environ.get("wsgi.url_scheme", "http"), host,
                                             EnvironHeaders(environ).get)):
            return None  # proxy headers that only restate the request keep it plain
        path = environ.get("PATH_INFO", "")
        script = environ.get("SCRIPT_NAME")
        if script:
            if self.plain_hits.stamped:
                return None  # outer layers read PATH_INFO alone, the memo the whole path
            path = script + path
        if not path.isascii():
            return None  # request_view decodes it
        target = (method, environ.get("wsgi.url_scheme", "http"), host, path, environ.get("QUERY_STRING", ""))
        hit = self.recall(target)
        if hit is None:
            hit = self.plain_hits.decide(target, environ)
            if hit is None:
                return None
        entry = hit.entry
        if entry.route:
            restore_route(environ, entry.route)
        return (status_line(entry.status), hit.headers.copy(),
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
                return self.call_app(environ, start_response)
            return self._unsafe(environ, start_response)
        view = request_view(environ)
        early = environ.pop(EARLY_MISS_KEY, None)
        if early is not None and not view.special:  # the early path keyed it: L1 had nothing
            key, header, first = early, None, self.get_past_memory
        else:
            (key, header), first = admit(core, view), None
        if key is None:
            return self.call_app(environ, start_response if header is None else with_header(start_response, header))
        now = self.clock()
        get: Callable[[str], Any] = self.store.get
        if self.memory_lookups is not None and not view.special and key in core.pass_marks:
            # Hit-for-miss: the last answer could not be stored, so L1 alone is asked, not Redis
            # or the disk on every request to an endpoint that is never cached.
            get, missed = self.memory_lookups
            first = None if first is None else missed
        decision, index, entry_key = drive(core, view, key, now, get, first)
        match decision:
            case Serve():
                core.served(decision, environ)
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

    # ----------------------------------------------------------------- misses
    def _forward(self, environ: wsgi.Environ, start_response: wsgi.StartResponse, view: RequestView,
                 key: str, forward: Forward, index: CachedEntry | None, entry_key: str,
                 arrived: float) -> Iterable[bytes]:
        core = self.core
        if not forward.coalesce or key in core.pass_marks:
            return self._fetch(environ, start_response, view, key, forward, index, entry_key)
        flights = core.thread_flights
        flight, event = flights.join(key)
        if event is None:  # the leader
            lead = Lead(flights, key, flight)
            try:
                # The exchange returns once the response is decided, and stores before it
                # returns what it stores whole: waiters are woken right after, at the headers.
                if core.leases is None:  # no fleet lease to take first: this process's call is the one
                    # By position: a class called with keywords costs a dict (scalekit/records.py).
                    return Exchange(self, start_response, view, key, forward, index, entry_key,
                                    flight).run(environ)
                return self._lead(environ, start_response, view, key, forward, index, entry_key,
                                  arrived, lead)
            finally:
                self._finish(lead)
        if not self._wait(environ, event.wait):
            return self._waited_too_long(environ, start_response, view, key, forward, index, entry_key)
        if flight.alone:  # the leader's answer is not shared: no lookup, straight to the origin
            core.count_wait("origin")
            return self._fetch(environ, start_response, view, key, replace(forward, coalesce=False),
                               index, entry_key)
        return self._after_wait(environ, start_response, view, key, arrived)

    def _lead(self, environ: wsgi.Environ, start_response: wsgi.StartResponse, view: RequestView,
              key: str, forward: Forward, index: CachedEntry | None, entry_key: str,
              arrived: float, lead: Lead) -> Iterable[bytes]:
        """The fleet's one origin call for ``key``, under its lease (fleet coalescing on)."""
        leases = self.core.leases
        assert leases is not None  # _forward runs the exchange itself without leases
        lease = leases.acquire(key)
        if lease is None:  # another instance is computing it: wait, then read the shared store
            if self._wait(environ, lambda seconds: leases.wait_release(key, timeout_seconds=seconds)):
                return self._after_wait(environ, start_response, view, key, arrived)
            return self._waited_too_long(environ, start_response, view, key, forward, index, entry_key)
        lead.lease = lease
        return self._fetch(environ, start_response, view, key, forward, index, entry_key,
                               flight=lead.flight)

    def _wait(self, environ: wsgi.Environ, wait: Callable[[float], bool]) -> bool:
        """Wait up to coalesce_timeout_seconds for another request's answer (True: it came);
        the time is added to the request's ``waited_seconds``, which later waits (the pool's)
        take off their own timeouts."""
        core = self.core
        core.waiting.inc()
        started = time.monotonic()
        try:
            return wait(core.coalesce_timeout_seconds)
        finally:
            core.waiting.dec()
            ctx = environ.get(CONTEXT_KEY)
            if ctx is not None:
                ctx.waited_seconds += time.monotonic() - started

    def _finish(self, lead: Lead) -> None:
        """End the lead once its response is decided (stored, or passed on: ``_fetch`` returns
        before any body is sent): its waiters wake, its fleet lease is returned."""
        lease = lead.finish()
        if lease is not None:
            self.core.leases.release(lease)  # type: ignore[union-attr]  # set only with leases

    def _after_wait(self, environ: wsgi.Environ, start_response: wsgi.StartResponse,
                    view: RequestView, key: str, arrived: float) -> Iterable[bytes]:
        """A coalesced waiter, woken: the leader's stored answer, or its own origin call."""
        decision, index, entry_key = drive(self.core, view, key, self.clock(), self.store.get,
                                           collapsed_since=arrived)
        decision = self.core.woken(decision)
        if isinstance(decision, Forward):
            return self._fetch(environ, start_response, view, key, decision, index, entry_key)
        if isinstance(decision, Serve):
            self.core.served(decision, environ)
        return send_whole(start_response, decision.status, decision.headers, decision.body)

    def _waited_too_long(self, environ: wsgi.Environ, start_response: wsgi.StartResponse,
                         view: RequestView, key: str, forward: Forward, index: CachedEntry | None,
                         entry_key: str) -> Iterable[bytes]:
        stale = self.core.timed_out(forward, view)
        if stale is not None:
            return send_whole(start_response, stale.status, stale.headers, stale.body)
        return self._fetch(environ, start_response, view, key, replace(forward, coalesce=False),
                           index, entry_key)

    def _fetch(self, environ: wsgi.Environ, start_response: wsgi.StartResponse, view: RequestView,
               key: str, forward: Forward, index: CachedEntry | None, entry_key: str,
               *, background: bool = False, flight: Flight | None = None) -> Iterable[bytes]:
        """Call the origin and answer by the policy (see :mod:`.wsgi_exchange`)."""
        return Exchange(self, start_response, view, key, forward, index, entry_key, flight,
                        background).run(environ)

    # ----------------------------------------------------------------- unsafe methods (§4.4)
    def _unsafe(self, environ: wsgi.Environ, start_response: wsgi.StartResponse) -> Iterable[bytes]:
        view = request_view(environ)
        core = self.core
        core.count("bypass")
        request_time = self.clock()

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            code = int(status[:3]) if status[:3].isdigit() else 500
            keys, out = core.unsafe_answered(view, code, headers, request_time)
            if keys:
                core.invalidate_keys(keys)
            return start_response(status, list(out), exc_info) if exc_info else start_response(status, list(out))

        return self.call_app(environ, start)

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
