"""The cache layer's ASGI 3 shell: reads the scope, calls the store and the app, sends messages.

Pure ASGI middleware (no request/response wrapper): a hit never calls the app; a miss is
coalesced with concurrent misses on its key (one origin call per process; the others wait for
its headers only, see :mod:`scalekit.cache.coalesce`) and wraps ``send`` in an
:class:`~.asgi_exchange.Exchange`, which holds the response start until the policy has decided,
stores a body sent whole, and passes streams on message by message (copying them to store).
Every decision comes from the policy.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, assert_never

from .. import asgi
from ..context import CONTEXT_KEY, RequestContext, activate
from .asgi_exchange import Exchange
from .asgi_io import (
    SPECIAL_HEADER_NAMES,
    UNPLAIN_HEADER_NAMES,
    HeaderEncoder,
    ScopeHeaders,
    discard_message,
    encode_headers,
    request_view,
    send_served,
    send_whole,
    with_header,
)
from .coalesce import Lead
from .entry import CachedEntry
from .flow import admit, adrive
from .hot import EARLY_MISS_KEY
from .layer import CacheCore, CacheShell, restore_route
from .policy import (
    SAFE_METHODS,
    Forward,
    Refuse,
    RequestView,
    Serve,
)

__all__ = ["ASGICache", "request_view"]

log = logging.getLogger("scalekit.cache")


async def _released(waiting: Awaitable[bool]) -> None:
    """A fleet lease wait as a coalescing wait: TimeoutError when it timed out."""
    if not await waiting:
        raise TimeoutError


class ASGICache(CacheShell, asgi.EarlyFirst):
    """ASGI 3 middleware: serve hits, forward misses, store by policy."""

    app: asgi.ASGIApp
    call_app: asgi.ASGIApp

    def __init__(self, app: asgi.ASGIApp, core: CacheCore) -> None:
        super().__init__(app, core, encode_headers)
        self._tasks: set[asyncio.Task[None]] = set()
        self.encoder = HeaderEncoder()
        # Request headers that make a request special, and those of them that always send it
        # down the full path; an outer layer that reads one more (the CDN: Authorization)
        # adds it to both.
        self.special_names, self.unplain_names = SPECIAL_HEADER_NAMES, UNPLAIN_HEADER_NAMES

    def serve_early(self, scope: asgi.Scope) -> tuple[asgi.Message, asgi.Message] | None:
        """Both messages of a plain fresh L1 hit (a GET or HEAD with no special header but proxy
        headers restating it), or None: :meth:`handle` decides. Needs no request context, so
        the pipeline root calls it before making one when this layer is the outermost."""
        method = scope["method"]
        if method != "GET" and method != "HEAD":
            return None
        host = None
        forwarded = False
        special, unplain = self.special_names, self.unplain_names
        for name, value in scope["headers"]:
            if name == b"host":
                if host is not None:
                    return None  # two Host lines: request_view joins them, the policy rejects
                host = value
            elif name in special:
                if name in unplain:
                    return None
                forwarded = True
        if host is None:
            return None
        if forwarded and not self.plain_hits.restated(  # proxy headers restating it keep it plain
                method, scope.get("scheme", "http"), host.decode("latin-1"),
                ScopeHeaders(scope["headers"]).get):
            return None
        target = (method, scope.get("scheme", "http"), host, scope["path"], scope.get("query_string", b""))
        hit = self.recall(target)
        if hit is None:
            hit = self.plain_hits.decide(target, scope)
            if hit is None:
                return None
        entry = hit.entry
        if entry.route:
            restore_route(scope, entry.route)
        return ({"type": "http.response.start", "status": entry.status, "headers": hit.headers.copy()},
                {"type": "http.response.body", "body": b"" if method == "HEAD" else entry.body})

    async def handle(self, scope: asgi.Scope, receive: asgi.Receive, send: asgi.Send) -> None:
        """The whole layer but :meth:`serve_early`: every request it did not answer."""
        if scope["type"] != "http":
            await self.call_app(scope, receive, send)
            return
        core = self.core
        if core.purge.enabled:
            purged = await core.purge.handle_asgi(scope)  # type: ignore[arg-type]
            if purged is not None:
                await asgi.send_response(send, purged)
                return
        method = scope["method"]
        if method != "GET" and method != "HEAD":
            if method in SAFE_METHODS:
                await self.call_app(scope, receive, send)
            else:
                await self._unsafe(scope, receive, send)
            return
        view = request_view(scope)
        early = scope.pop(EARLY_MISS_KEY, None)
        if early is not None and not view.special:  # the early path keyed it: L1 had nothing
            key, header, first = early, None, self.aget_past_memory
        else:
            (key, header), first = admit(core, view), None
        if key is None:
            await self.call_app(scope, receive, send if header is None else with_header(send, header))
            return
        now = self.clock()
        aget: Callable[[str], Any] = self.store.aget
        if self.amemory_lookups is not None and not view.special and key in core.pass_marks:
            # Hit-for-miss: L1 alone is asked (see the WSGI shell).
            aget, missed = self.amemory_lookups
            first = None if first is None else missed
        decision, index, entry_key = await adrive(core, view, key, now, aget, first)
        match decision:
            case Serve():
                core.served(decision, scope)
                if decision.refresh is not None:
                    self._refresh_later(scope, key, decision.refresh, index, entry_key)
                await send_served(send, decision, self.encoder)
            case Forward():
                await self._forward(scope, receive, send, view, key, decision, index, entry_key, now)
            case Refuse():
                core.count("miss")
                await send_whole(send, decision.status, decision.headers, decision.body)
            case _:
                assert_never(decision)

    # ----------------------------------------------------------------- misses
    async def _forward(self, scope: asgi.Scope, receive: asgi.Receive, send: asgi.Send,
                       view: RequestView, key: str, forward: Forward, index: CachedEntry | None,
                       entry_key: str, arrived: float) -> None:
        core = self.core
        if not forward.coalesce or key in core.pass_marks:
            await self._fetch(scope, receive, send, view, key, forward, index, entry_key)
            return
        flights = core.async_flights
        flight, event = flights.join(key)
        if event is None:  # the leader
            lead = Lead(flights, key, flight)
            try:
                if core.leases is None:  # no fleet lease to take first: this process's call is the one
                    await self._fetch(scope, receive, send, view, key, forward, index, entry_key, lead=lead)
                else:
                    await self._lead(scope, receive, send, view, key, forward, index, entry_key, arrived, lead)
            finally:
                # Mostly done already, once the response was decided (the Exchange ends it).
                lease = lead.finish()
                if lease is not None:
                    await self.release_lease(lease)
            return
        if not await self._wait(scope, lambda seconds: asyncio.wait_for(event.wait(), seconds)):
            await self._waited_too_long(scope, receive, send, view, key, forward, index, entry_key)
        elif flight.alone:  # the leader's answer is not shared: no lookup, straight to the origin
            core.count_wait("origin")
            await self._fetch(scope, receive, send, view, key, replace(forward, coalesce=False),
                              index, entry_key)
        else:
            await self._after_wait(scope, receive, send, view, key, arrived)

    async def _lead(self, scope: asgi.Scope, receive: asgi.Receive, send: asgi.Send,
                    view: RequestView, key: str, forward: Forward, index: CachedEntry | None,
                    entry_key: str, arrived: float, lead: Lead) -> None:
        """The fleet's one origin call for ``key``, under its lease (fleet coalescing on)."""
        leases = self.core.leases
        assert leases is not None  # _forward calls _fetch itself without leases
        lease = await leases.aacquire(key)
        if lease is None:  # another instance is computing it: wait, then read the shared store
            if await self._wait(scope, lambda seconds: _released(leases.await_release(
                    key, timeout_seconds=seconds))):
                await self._after_wait(scope, receive, send, view, key, arrived)
            else:
                await self._waited_too_long(scope, receive, send, view, key, forward, index, entry_key)
            return
        lead.lease = lease
        await self._fetch(scope, receive, send, view, key, forward, index, entry_key, lead=lead)

    async def _wait(self, scope: asgi.Scope, wait: Callable[[float], Awaitable[Any]]) -> bool:
        """Wait up to coalesce_timeout_seconds for another request's answer (True: it came);
        the time is added to the request's ``waited_seconds``, which later waits (the pool's)
        take off their own timeouts."""
        core = self.core
        core.waiting.inc()
        started = time.monotonic()
        try:
            await wait(core.coalesce_timeout_seconds)
            return True
        except TimeoutError:
            return False
        finally:
            core.waiting.dec()
            ctx = scope.get(CONTEXT_KEY)
            if ctx is not None:
                ctx.waited_seconds += time.monotonic() - started

    async def release_lease(self, lease: Any) -> None:
        await self.core.leases.arelease(lease)  # type: ignore[union-attr]  # set only with leases

    async def _after_wait(self, scope: asgi.Scope, receive: asgi.Receive, send: asgi.Send,
                          view: RequestView, key: str, arrived: float) -> None:
        """A coalesced waiter, woken: the leader's stored answer, or its own origin call."""
        decision, index, entry_key = await adrive(self.core, view, key, self.clock(), self.store.aget,
                                                  collapsed_since=arrived)
        decision = self.core.woken(decision)
        if isinstance(decision, Forward):
            await self._fetch(scope, receive, send, view, key, decision, index, entry_key)
        elif isinstance(decision, Serve):
            self.core.served(decision, scope)
            await send_served(send, decision, self.encoder)
        else:
            await send_whole(send, decision.status, decision.headers, decision.body)

    async def _waited_too_long(self, scope: asgi.Scope, receive: asgi.Receive, send: asgi.Send,
                               view: RequestView, key: str, forward: Forward,
                               index: CachedEntry | None, entry_key: str) -> None:
        stale = self.core.timed_out(forward, view)
        if stale is not None:
            await send_whole(send, stale.status, stale.headers, stale.body)
        else:
            await self._fetch(scope, receive, send, view, key, replace(forward, coalesce=False),
                              index, entry_key)

    async def _fetch(self, scope: asgi.Scope, receive: asgi.Receive, send: asgi.Send,
                     view: RequestView, key: str, forward: Forward, index: CachedEntry | None,
                     entry_key: str, *, background: bool = False, lead: Lead | None = None) -> None:
        # Generations are read before the origin is called: a response whose computation
        # overlapped an invalidation of its tags is not stored as fresh.
        since = self.generations.sequence()
        exchange = Exchange(self, send, view, key, forward, index, entry_key, since,
                            scope.get(CONTEXT_KEY), background, lead)
        inner = scope
        if forward.request_headers:
            changed = {name.encode("latin-1") for name, _ in forward.request_headers}
            headers = [item for item in scope.get("headers", ()) if item[0].lower() not in changed]
            headers += [(name.encode("latin-1"), value.encode("latin-1"))
                        for name, value in forward.request_headers if value is not None]
            inner = dict(scope)
            inner["headers"] = headers
        try:
            await self.call_app(inner, receive, exchange.send)
        except Exception:
            if exchange.started:
                raise
            stale = self.policy.stale_fallback(forward, view, now=self.clock(), origin_status=None)
            if stale is None:
                raise
            exchange.count("stale")
            await send_whole(send, stale.status, stale.headers, stale.body)
            return
        await exchange.finish()

    # ----------------------------------------------------------------- unsafe methods (§4.4)
    async def _unsafe(self, scope: asgi.Scope, receive: asgi.Receive, send: asgi.Send) -> None:
        view = request_view(scope)
        core = self.core
        core.count("bypass")
        request_time = self.clock()

        async def send_invalidating(message: asgi.Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in message.get("headers", ())]
                keys, out = core.unsafe_answered(view, message["status"], headers, request_time)
                if keys:
                    await core.ainvalidate_keys(keys)
                message = {**message, "headers": encode_headers(out)}
            await send(message)

        await self.call_app(scope, receive, send_invalidating)

    # ----------------------------------------------------------------- stale-while-revalidate
    def _refresh_later(self, scope: asgi.Scope, key: str, refresh: Forward,
                       index: CachedEntry | None, entry_key: str) -> None:
        """Revalidate ``key`` once, in a task of its own (RFC 5861 §3)."""
        core = self.core
        if not core.refreshes.try_start(key):
            return
        background = dict(scope)
        background["method"] = "GET"
        ctx = RequestContext("GET", scope.get("path", ""))
        background[CONTEXT_KEY] = ctx
        view = request_view(background)
        finished = asyncio.Event()
        request_sent = [False]

        async def receive() -> asgi.Message:
            # An empty GET body, then (like a server) disconnect once the response is over.
            if not request_sent[0]:
                request_sent[0] = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await finished.wait()
            return {"type": "http.disconnect"}

        async def run() -> None:
            activate(ctx)
            try:
                await self._fetch(background, receive, discard_message, view, key, refresh, index,
                                  entry_key, background=True)
            except Exception:
                log.warning("scalekit: background refresh of %s failed", key, exc_info=True)
            finally:
                finished.set()
                core.refreshes.done(key)

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
