"""The cache layer's ASGI 3 shell: reads the scope, calls the store and the app, sends messages.

Pure ASGI middleware (no request/response wrapper): a hit never calls the app; a miss wraps
``send`` so the response start is held until the policy has decided, bodies to be stored are
collected (up to ``max_body_bytes``, beyond that streamed on untouched), and everything else
passes through message by message. Every decision comes from the policy.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import Any, assert_never

from .. import asgi
from ..context import CONTEXT_KEY, UNMATCHED_ROUTE, RequestContext, activate
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

__all__ = ["ASGICache", "request_view"]

log = logging.getLogger("scalekit.cache")
Found = tuple[CachedEntry, str] | None


_SPECIAL = frozenset(name.encode("latin-1") for name in SPECIAL_REQUEST_HEADERS)
_NAME_BYTES: dict[str, bytes] = {}


class ScopeHeaders:
    """Request headers by lower-case name over the scope's raw pairs (decoded on demand).

    ASGI header names are lower-case bytes; several lines with one name are joined with ", "
    (RFC 9110 §5.3).
    """

    __slots__ = ("raw",)

    def __init__(self, pairs: list[tuple[bytes, bytes]]) -> None:
        raw = dict(pairs)
        if len(raw) != len(pairs):  # repeated names: join them (rare)
            raw = {}
            for name, value in pairs:
                raw[name] = raw[name] + b", " + value if name in raw else value
        self.raw = raw

    def get(self, name: str) -> str | None:
        key = _NAME_BYTES.get(name)
        if key is None:
            key = name.encode("latin-1")
            if len(_NAME_BYTES) < 1024:
                _NAME_BYTES[name] = key
        value = self.raw.get(key)
        return None if value is None else value.decode("latin-1")


def request_view(scope: asgi.Scope) -> RequestView:
    """The policy's view of an ASGI request."""
    headers = ScopeHeaders(scope.get("headers") or [])
    host_bytes = headers.raw.get(b"host")
    if host_bytes is not None:
        host: str | None = host_bytes.decode("latin-1")
    elif scope.get("server"):
        server_host, server_port = scope["server"][:2]
        host = f"{server_host}:{server_port}" if server_port else str(server_host)
    else:
        host = None
    return RequestView(scope.get("method", "GET"), scope.get("scheme", "http"), host,
                       scope.get("path", ""), scope.get("query_string", b"").decode("latin-1"),
                       headers.get, not _SPECIAL.isdisjoint(headers.raw))


def _encode(headers: tuple[tuple[str, str], ...]) -> list[tuple[bytes, bytes]]:
    return [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers]


_ENCODED_LIMIT = 4096


class HeaderEncoder:
    """Stored header tuples encoded to ASGI bytes once per entry, not once per hit.

    Keyed by ``id()`` and holding the tuple itself, so an id is never reused while cached.
    Every hit gets a new list: outer middleware may append to ``message["headers"]``.
    """

    def __init__(self) -> None:
        self._encoded: dict[int, tuple[tuple[tuple[str, str], ...], list[tuple[bytes, bytes]]]] = {}

    def serve(self, decision: Serve) -> list[tuple[bytes, bytes]]:
        base = decision.base
        if not base:
            return _encode(decision.headers)
        cached = self._encoded.get(id(base))
        if cached is None or cached[0] is not base:
            if len(self._encoded) >= _ENCODED_LIMIT:
                self._encoded.clear()
            cached = self._encoded[id(base)] = (base, _encode(base))
        return cached[1] + _encode(decision.headers[len(base):])


async def _send(send: asgi.Send, status: int, headers: tuple[tuple[str, str], ...], body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": _encode(headers)})
    await send({"type": "http.response.body", "body": body})


def _route(ctx: Any) -> str:
    return ctx.route if ctx is not None and ctx.route != UNMATCHED_ROUTE else ""


def _restore_route(scope: asgi.Scope, route: str) -> None:
    ctx = scope.get(CONTEXT_KEY)
    if ctx is not None:
        ctx.route = route


async def _send_served(send: asgi.Send, decision: Serve, encoder: HeaderEncoder) -> None:
    await send({"type": "http.response.start", "status": decision.status,
                "headers": encoder.serve(decision)})
    await send({"type": "http.response.body", "body": decision.body})


async def _discard(message: asgi.Message) -> None:
    return None


class ASGICache:
    """ASGI 3 middleware: serve hits, forward misses, store by policy."""

    def __init__(self, app: asgi.ASGIApp, core: CacheCore) -> None:
        self.app = app
        self.core = core
        self.policy = core.policy
        self.store = core.store
        self.generations = core.generations
        self.clock = core.clock
        self._tasks: set[asyncio.Task[None]] = set()
        self.encoder = HeaderEncoder()

    async def __call__(self, scope: asgi.Scope, receive: asgi.Receive, send: asgi.Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
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
                await self.app(scope, receive, send)
            else:
                await self._unsafe(scope, receive, send)
            return
        view = request_view(scope)
        key = self.policy.primary_key(view)
        if key is None:
            core.hosts_rejected.inc()
            core.count("bypass")
            await self.app(scope, receive, send)
            return
        now = self.clock()
        found = await self.store.aget(key)
        if found is not None and not found[0].is_vary_index and self.generations.is_current(found[0].tags):
            # The common hit: a plain entry, current (inlined _lookup, no coroutine hop).
            miss: Any = "miss"
            index, entry_key = None, key
        else:
            found, miss, index, entry_key = await self._lookup(key, view, found, asked=True)
        decision = self.policy.decide_request(view, found, now=now, miss=miss)
        match decision:
            case Serve():
                core.count(decision.outcome)
                if decision.route:
                    _restore_route(scope, decision.route)
                if decision.refresh is not None:
                    self._refresh_later(scope, key, decision.refresh, index, entry_key)
                await send({"type": "http.response.start", "status": decision.status,
                            "headers": self.encoder.serve(decision)})
                await send({"type": "http.response.body", "body": decision.body})
            case Forward():
                await self._forward(scope, receive, send, view, key, decision, index, entry_key, now)
            case Refuse():
                core.count("miss")
                await _send(send, decision.status, decision.headers, decision.body)
            case _:
                assert_never(decision)

    # ----------------------------------------------------------------- lookups
    async def _lookup(self, key: str, view: RequestView, found: Found = None, *, asked: bool = False
                      ) -> tuple[Found, Any, CachedEntry | None, str]:
        """(entry and tier or None, why it missed, the variant index, the entry's key);
        ``asked``: ``found`` is what the store already returned for ``key``."""
        if not asked:
            found = await self.store.aget(key)
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
            found = await self.store.aget(variant)
            if found is None:
                return None, "vary-miss", index, entry_key
        if not self.generations.is_current(found[0].tags):
            return None, "miss", index, entry_key  # invalidated by tag (invariant 2)
        return found, "miss", index, entry_key

    # ----------------------------------------------------------------- misses
    async def _forward(self, scope: asgi.Scope, receive: asgi.Receive, send: asgi.Send,
                       view: RequestView, key: str, forward: Forward, index: CachedEntry | None,
                       entry_key: str, arrived: float) -> None:
        if not forward.coalesce:
            await self._fetch(scope, receive, send, view, key, forward, index, entry_key)
            return
        flights = self.core.async_flights
        flight, event = flights.join(key)
        if event is None:  # the leader
            try:
                await self._lead(scope, receive, send, view, key, forward, index, entry_key, arrived)
            finally:
                flights.finish(key, flight)
            return
        try:
            await asyncio.wait_for(event.wait(), self.core.coalesce_timeout_seconds)
        except TimeoutError:
            await self._waited_too_long(send, view, forward)
            return
        await self._after_wait(scope, receive, send, view, key, arrived)

    async def _lead(self, scope: asgi.Scope, receive: asgi.Receive, send: asgi.Send,
                    view: RequestView, key: str, forward: Forward, index: CachedEntry | None,
                    entry_key: str, arrived: float) -> None:
        """This process's one origin call for ``key``; with fleet leases, the fleet's one."""
        leases = self.core.leases
        if leases is None:
            await self._fetch(scope, receive, send, view, key, forward, index, entry_key)
            return
        lease = await leases.aacquire(key)
        if lease is None:  # another instance is computing it: wait, then read the shared store
            if await leases.await_release(key, timeout_seconds=self.core.coalesce_timeout_seconds):
                await self._after_wait(scope, receive, send, view, key, arrived)
                return
            stale = self.policy.stale_fallback(forward, view, now=self.clock(), origin_status=None,
                                               any_age=True)
            if stale is not None:
                self.core.count("stale")
                await _send(send, stale.status, stale.headers, stale.body)
                return
            await self._fetch(scope, receive, send, view, key, forward, index, entry_key)
            return
        try:
            await self._fetch(scope, receive, send, view, key, forward, index, entry_key)
        finally:
            await leases.arelease(lease)

    async def _after_wait(self, scope: asgi.Scope, receive: asgi.Receive, send: asgi.Send,
                          view: RequestView, key: str, arrived: float) -> None:
        """A coalesced waiter, woken: the leader's stored answer, or its own origin call."""
        found, miss, index, entry_key = await self._lookup(key, view)
        decision = self.policy.decide_request(view, found, now=self.clock(), miss=miss,
                                              collapsed_since=arrived)
        match decision:
            case Serve():
                self.core.count(decision.outcome)
                if decision.route:
                    _restore_route(scope, decision.route)
                await _send_served(send, decision, self.encoder)
            case Refuse():
                await _send(send, decision.status, decision.headers, decision.body)
            case Forward():
                # Nothing shareable came back (private, Set-Cookie, uncacheable): go alone.
                await self._fetch(scope, receive, send, view, key, replace(decision, coalesce=False),
                                  index, entry_key)
            case _:
                assert_never(decision)

    async def _waited_too_long(self, send: asgi.Send, view: RequestView, forward: Forward) -> None:
        stale = self.policy.stale_fallback(forward, view, now=self.clock(), origin_status=None, any_age=True)
        if stale is not None:
            self.core.count("stale")
            await _send(send, stale.status, stale.headers, stale.body)
            return
        self.core.count("miss")
        await _send(send, *self.policy.responses.refusal(504, "coalesce-timeout"))

    async def _fetch(self, scope: asgi.Scope, receive: asgi.Receive, send: asgi.Send,
                     view: RequestView, key: str, forward: Forward, index: CachedEntry | None,
                     entry_key: str, *, background: bool = False) -> None:
        # Invariant 2: generations are read before the origin is called.
        since = await self.generations.asequence()
        exchange = _Exchange(self, send, view, key, forward, index, entry_key, since,
                             scope.get(CONTEXT_KEY), background)
        inner = scope
        if forward.request_headers:
            changed = {name.encode("latin-1") for name, _ in forward.request_headers}
            headers = [item for item in scope.get("headers", ()) if item[0].lower() not in changed]
            headers += [(name.encode("latin-1"), value.encode("latin-1"))
                        for name, value in forward.request_headers if value is not None]
            inner = dict(scope)
            inner["headers"] = headers
        try:
            await self.app(inner, receive, exchange.send)
        except Exception:
            if exchange.started:
                raise
            stale = self.policy.stale_fallback(forward, view, now=self.clock(), origin_status=None)
            if stale is None:
                raise
            exchange.count("stale")
            await _send(send, stale.status, stale.headers, stale.body)
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
                keys = self.policy.invalidated_keys(view, message["status"], headers)
                if keys:
                    await core.ainvalidate_keys(keys)
                out = self.policy.responses.forwarded(headers, "method", now=self.clock(),
                                                      request_time=request_time)
                message = {**message, "headers": _encode(out)}
            await send(message)

        await self.app(scope, receive, send_invalidating)

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
                await self._fetch(background, receive, _discard, view, key, refresh, index,
                                  entry_key, background=True)
            except Exception:
                log.warning("scalekit: background refresh of %s failed", key, exc_info=True)
            finally:
                finished.set()
                core.refreshes.done(key)

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


class _Exchange:
    """One origin call: holds the response start until the policy decides, then passes
    messages through, collects the body to store it, or swallows it (304, stale-if-error)."""

    def __init__(self, shell: ASGICache, downstream: asgi.Send, view: RequestView, key: str,
                 forward: Forward, index: CachedEntry | None, entry_key: str, since: int,
                 ctx: Any, background: bool) -> None:
        self.shell = shell
        self.downstream = downstream
        self.view = view
        self.key = key
        self.forward = forward
        self.index = index
        self.entry_key = entry_key
        self.since = since
        self.uri_mark = shell.core.recent.mark()
        self.ctx = ctx
        self.background = background
        self.request_time = shell.clock()
        self.started = False
        self.mode = "start"
        self.status = 500
        self.decision: Any = None
        self.chunks: list[bytes] = []
        self.size = 0

    def count(self, outcome: str) -> None:
        if not self.background:
            self.shell.core.count(outcome)

    async def send(self, message: asgi.Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            await self._start(message)
        elif kind == "http.response.body" and self.mode == "buffer":
            await self._collect(message)
        elif self.mode == "pass":
            await self.downstream(message)
        elif self.mode == "buffer":
            # Trailers or an extension message: not a plain body, so it is not stored.
            await self._flush_unstored(more_body=True)
            await self.downstream(message)
        # mode "discard" (answered from the stored entry) or "done": drop the message

    async def _start(self, message: asgi.Message) -> None:
        shell = self.shell
        self.status = status = message["status"]
        headers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in message.get("headers", ())]
        self.decision = decision = shell.policy.decide_response(
            self.view, self.forward, status, headers, now=shell.clock(),
            request_time=self.request_time, rule=rule_of(self.ctx))
        match decision:
            case PassThrough():
                if decision.delete_stored:
                    await shell.store.adelete(self.entry_key)
                self.count("uncacheable" if self.view.method == "GET" else "miss")
                self.mode = "pass"
                self.started = True
                await self.downstream({**message, "headers": _encode(decision.headers)})
            case Buffer():
                self.mode = "buffer"
                self.start_message = message
                if message.get("trailers"):
                    await self._flush_unstored(more_body=True)
            case Freshen() | ServeStale():
                self.mode = "discard"
            case _:
                assert_never(decision)

    async def _collect(self, message: asgi.Message) -> None:
        chunk = message.get("body", b"")
        if chunk:
            self.chunks.append(chunk)
            self.size += len(chunk)
        more = message.get("more_body", False)
        if self.size > self.shell.core.max_body_bytes:
            await self._flush_unstored(more_body=more)  # too large: stream the rest untouched
        elif not more:
            await self._store_and_answer()

    async def _flush_unstored(self, *, more_body: bool) -> None:
        self.count("uncacheable")
        self.mode = "pass"
        self.started = True
        await self.downstream({**self.start_message, "headers": _encode(self.decision.pass_headers)})
        await self.downstream({"type": "http.response.body", "body": b"".join(self.chunks),
                               "more_body": more_body})
        self.chunks = []

    async def _store_and_answer(self) -> None:
        shell, core, policy = self.shell, self.shell.core, self.shell.policy
        plan = self.decision.plan
        self.mode = "done"
        data = b"".join(self.chunks)
        stamp = await shell.generations.astamp(core.tags_for(self.ctx, plan, self.view), self.since)
        entry = None
        if stamp is not None and core.recent.allows(self.key, self.uri_mark):  # invariant 2
            entry = policy.responses.complete(plan, data, stamp, _route(self.ctx))
        if entry is not None:
            for store_key, value in policy.storage_writes(self.key, entry, self.index,
                                                          new_variants_id=core.new_variants_id):
                await shell.store.aset(store_key, value)
        self.count("miss")
        status, headers, body = policy.stored_miss_response(
            self.view, self.forward, self.status, entry, self.decision.pass_headers, data,
            now=shell.clock())
        self.started = True
        await _send(self.downstream, status, headers, body)

    async def finish(self) -> None:
        """After the app returned: answer from the stored entry if that was the decision."""
        decision = self.decision
        if self.mode == "buffer":
            await self._flush_unstored(more_body=False)  # the app ended without a final body
        elif isinstance(decision, Freshen):
            shell, core = self.shell, self.shell.core
            if decision.entry is not None and core.recent.allows(self.key, self.uri_mark):
                for store_key, value in shell.policy.storage_writes(
                        self.key, decision.entry, self.index, new_variants_id=core.new_variants_id):
                    await shell.store.aset(store_key, value)
            elif decision.entry is None:
                await shell.store.adelete(self.entry_key)
            self.count("revalidated")
            await _send(self.downstream, decision.status, decision.headers, decision.body)
        elif isinstance(decision, ServeStale):
            self.count("stale")
            await _send(self.downstream, decision.status, decision.headers, decision.body)
