"""The cache layer's place in the pipeline: one :class:`CacheCore` per runtime, two thin shells.

:class:`CacheCore` holds what both drivers share: the pure :class:`~.policy.CachePolicy`
(precomputed from config), the tiered store and tag generations from the tiers factories, the
in-process coalescing and refresh bookkeeping, the metrics children, and what the shells do
between their I/O steps (counting, storing, invalidating); :mod:`.flow` admits, looks up and
decides a request. The shells (:mod:`scalekit.cache.wsgi`, :mod:`scalekit.cache.asgi`) move
bytes and call the store.

Invalidation: tags through ``runtime.add_invalidator`` (``scalekit.invalidate``), URIs through
unsafe methods (RFC 9111 §4.4, :meth:`CacheCore.invalidate_keys`).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, cast

from .. import asgi, wsgi
from ..calls import direct
from ..context import CONTEXT_KEY, UNMATCHED_ROUTE
from ..metrics import instruments
from .coalesce import AsyncFlights, PassMarks, RecentInvalidations, RefreshRegistry, ThreadFlights
from .decisions import Decision, Forward, Serve, ServeStale
from .entry import CachedEntry
from .hot import PlainHits
from .invalidation import InvalidationResult, uri_tag
from .policy import CachePolicy, RequestView
from .purge import PurgeEndpoint
from .rules import ResponseRule, rule_of
from .storable import StorePlan
from .store import Generations, Store
from .tiers import build_generations, build_invalidator, build_leases, build_store

__all__ = ["CacheCore", "CacheShell", "core_for", "restore_route", "route_of", "wrap_asgi", "wrap_wsgi"]

log = logging.getLogger("scalekit.cache")

OUTCOMES = ("hit", "miss", "stale", "revalidated", "bypass", "uncacheable")
# How a coalesced wait ended: the leader's stored answer, the origin (nothing shareable came
# back), or coalesce_timeout_seconds.
WAIT_OUTCOMES = ("served", "origin", "timeout")
# Memory for hit-for-miss marks (keys whose last answer could not be stored).
PASS_MARKS_MAX_BYTES = 1 << 20


class CacheCore:
    """Shared state of the cache layer of one runtime (both drivers use the same one)."""

    def __init__(self, runtime: Any, *, store: Store | None = None,
                 generations: Generations | None = None) -> None:
        config = runtime.config
        cdn = config.cdn
        etag_limit = int(getattr(cdn, "etag_max_body_bytes", 1 << 20)) if (
            cdn.enabled and getattr(cdn, "etag", False)) else -1
        self.config = config.cache
        self.store: Store = store if store is not None else build_store(runtime)
        self.max_body_bytes = storable_body_bytes(config.cache.max_body_bytes,
                                                  getattr(self.store, "max_entry_bytes", None))
        self.policy = CachePolicy(config.cache, allowed_hosts=tuple(config.allowed_hosts),
                                  etag_max_body_bytes=etag_limit, max_body_bytes=self.max_body_bytes)
        self.generations: Generations = generations if generations is not None else build_generations(runtime)
        self.clock = runtime.clock
        self.coalesce_timeout_seconds = config.cache.coalesce_timeout_seconds
        self.recent = RecentInvalidations()
        self.thread_flights = ThreadFlights()
        self.async_flights = AsyncFlights()
        self.pass_marks = PassMarks(ttl_seconds=config.cache.hit_for_miss_seconds,
                                    max_bytes=PASS_MARKS_MAX_BYTES, clock=runtime.clock)
        self.waits = {name: instruments.counter_handle(instruments.CACHE_COALESCED.labels(name))
                      for name in WAIT_OUTCOMES}
        self.waiting = instruments.CACHE_COALESCED_WAITING
        self.refreshes = RefreshRegistry(limit=config.cache.refresh_threads * 16)
        self.purge = PurgeEndpoint(runtime)
        # Fleet-wide coalescing (cache.l2.coalesce with Redis): one origin call per key per
        # fleet, on top of one per process. None when off.
        self.leases = build_leases(runtime)
        self._executor: ThreadPoolExecutor | None = None
        self._refresh_threads = config.cache.refresh_threads
        self.outcomes = {name: instruments.counter_handle(instruments.CACHE_REQUESTS.labels(name))
                         for name in OUTCOMES}
        # Every request counts its outcome with one C call, added to the counter before any read.
        self._tallies = {name: instruments.Tally((instruments.CACHE_REQUESTS,), (increment.inc,))
                         for name, increment in self.outcomes.items()}
        self._ticks = {name: tally.tick for name, tally in self._tallies.items()}
        self.hosts_rejected = instruments.HOST_REJECTED.labels("cache")
        # Said on every response to a Host outside allowed_hosts, so nobody wonders why it is
        # never cached (RFC 9211: fwd=bypass, the cache was configured not to handle it).
        self.host_rejected_status = ("cache-status", self.policy.responses.cache_status(
            fwd="bypass", detail="host-not-allowed"))
        self.uri_invalidations = instruments.CACHE_INVALIDATIONS.labels("unsafe_method")
        # Entries carry their URI's tag only where another process may hold them (a host file
        # or Redis carries invalidations there); alone, deleting the key here is enough.
        self.uri_tags = bool(getattr(self.generations, "spans_processes", True))
        self.services = runtime.services  # "cdn.purge": the edge purger, once wrap() built it
        self.savings = instruments.savings()
        if config.tracing.enabled:  # lookups, stores, invalidations as spans; off: nothing imported
            from ..tracing.spans import TracedGenerations, TracedStore
            self.store = TracedStore(self.store)
            self.generations = cast(Generations, TracedGenerations(self.generations))
        invalidate, ainvalidate = build_invalidator(self.generations)
        runtime.add_invalidator(invalidate, ainvalidate)
        runtime.on_shutdown(self.close)

    # ----------------------------------------------------------------- per request helpers
    def count(self, outcome: str) -> None:
        self._ticks[outcome]()

    def served(self, decision: Serve, request: MutableMapping[str, Any]) -> None:
        """Count an answer from the cache (a fresh hit also adds what it saved to its route's),
        and give the request (environ or scope) the route its entry was stored under."""
        outcome = decision.outcome
        self._ticks[outcome]()
        if outcome == "hit":
            self.savings.record(decision.route, decision.origin_seconds, decision.db_seconds)
        if decision.route:
            restore_route(request, decision.route)
        if decision.tags:
            restore_tags(request, decision.tags)

    def woken(self, decision: Decision) -> Decision:
        """A coalesced waiter's decision, counted: the leader's stored answer, or (nothing
        shareable came back: private, Set-Cookie, uncacheable) its own origin call, alone."""
        if isinstance(decision, Forward):
            self.count_wait("origin")
            return replace(decision, coalesce=False)
        if isinstance(decision, Serve):
            self.count_wait("served")
        return decision

    def timed_out(self, forward: Forward, view: RequestView) -> ServeStale | None:
        """The leader is slower than coalesce_timeout_seconds: a stale entry where RFC 5861
        allows (counted), else None: the origin, as if never coalesced (never an error)."""
        self.count_wait("timeout")
        stale = self.policy.stale_fallback(forward, view, now=self.clock(), origin_status=None,
                                           any_age=True)
        if stale is not None:
            self.count("stale")
        return stale

    def unsafe_answered(self, view: RequestView, status: int, headers: list[tuple[str, str]],
                        request_time: float) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
        """After an unsafe method's answer (RFC 9111 §4.4): the keys it invalidates and the
        headers to send on."""
        keys = self.policy.invalidated_keys(view, status, headers)
        out = self.policy.responses.forwarded(headers, "method", now=self.clock(),
                                              request_time=request_time)
        return keys, out

    def rule(self, ctx: Any, request: RequestView) -> ResponseRule | None:
        """``cache_response()`` of this request, else the first matching config rule."""
        return rule_of(ctx) or self.policy.rules.match(request.path)

    def tags_for(self, ctx: Any, plan: StorePlan, request: RequestView,
                 key: str | None = None) -> set[str]:
        """Everything the response is tagged with: the app's, its headers', its rule's, and
        (given its primary ``key``) its URI's, which unsafe methods invalidate fleet-wide."""
        tags = set(ctx.tags) if ctx is not None else set()
        tags.update(plan.header_tags)
        rule = self.policy.rules.match(request.path) if self.policy.has_rules else None
        if rule is not None:
            tags.update(rule.tags)
        if key is not None and self.uri_tags:
            tags.add(uri_tag(key))
        return tags

    def count_wait(self, outcome: str) -> None:
        self.waits[outcome].inc(1)

    @staticmethod
    def new_variants_id() -> str:
        return secrets.token_hex(8)

    # ----------------------------------------------------------------- storing a response
    def store_response(self, key: str, view: RequestView, plan: StorePlan, body: bytes,
                       index: CachedEntry | None, *, since: int, uri_mark: int, ctx: Any
                       ) -> CachedEntry | None:
        """Store a response read whole and return its entry (None: not stored). ``since`` and
        ``uri_mark`` were read before the origin was called: a response whose computation
        overlapped an invalidation of its tags or its URI is not stored."""
        stamp = self.generations.stamp(self.tags_for(ctx, plan, view, key), since)
        entry = self._completed(key, plan, body, stamp, uri_mark, ctx)
        if entry is not None:
            self.store_entry(key, entry, index, uri_mark)
        return entry

    async def astore_response(self, key: str, view: RequestView, plan: StorePlan, body: bytes,
                              index: CachedEntry | None, *, since: int, uri_mark: int, ctx: Any
                              ) -> CachedEntry | None:
        """:meth:`store_response` through the stores' async face."""
        stamp = self.generations.stamp(self.tags_for(ctx, plan, view, key), since)
        entry = self._completed(key, plan, body, stamp, uri_mark, ctx)
        if entry is not None:
            await self.astore_entry(key, entry, index, uri_mark)
        return entry

    def _completed(self, key: str, plan: StorePlan, body: bytes, stamp: Any, uri_mark: int,
                   ctx: Any) -> CachedEntry | None:
        recent = self.recent
        # The sequence compared here first: no URI invalidation since the mark, the usual case.
        if stamp is None or (recent.sequence > uri_mark and not recent.allows(key, uri_mark)):
            return None
        return self.policy.responses.complete(plan, body, stamp, route_of(ctx), finished_at=self.clock(),
                                              db_seconds=ctx.db_seconds if ctx is not None else 0.0)

    # ----------------------------------------------------------------- invalidation (§4.4)
    def store_entry(self, key: str, entry: CachedEntry, index: CachedEntry | None, mark: int) -> None:
        """Store ``entry`` for primary ``key`` (its variant index too), unless an unsafe method
        invalidated ``key`` since ``mark`` (RFC 9111 §4.4) — also while the tiers were being
        written, when the invalidation's delete may have landed before this write."""
        writes = self._writes(key, entry, index, mark)
        for store_key, value in writes:
            self.store.set(store_key, value)
        for store_key in self._overtaken(key, mark, writes):
            self.store.delete(store_key)

    async def astore_entry(self, key: str, entry: CachedEntry, index: CachedEntry | None, mark: int) -> None:
        """:meth:`store_entry` through the stores' async face."""
        writes = self._writes(key, entry, index, mark)
        for store_key, value in writes:
            await self.store.aset(store_key, value)
        for store_key in self._overtaken(key, mark, writes):
            await self.store.adelete(store_key)

    def _writes(self, key: str, entry: CachedEntry, index: CachedEntry | None,
                mark: int) -> tuple[tuple[str, CachedEntry], ...]:
        recent = self.recent
        if recent.sequence > mark and not recent.allows(key, mark):
            return ()
        self.pass_marks.discard(key)
        return self.policy.storage_writes(key, entry, index, new_variants_id=self.new_variants_id)

    def _overtaken(self, key: str, mark: int, writes: tuple[tuple[str, CachedEntry], ...]) -> list[str]:
        """The keys just written to delete again: ``key`` was invalidated meanwhile."""
        recent = self.recent
        if writes and recent.sequence > mark and not recent.allows(key, mark):
            return [store_key for store_key, _ in writes]
        return []

    def invalidate_keys(self, keys: Iterable[str]) -> InvalidationResult | None:
        """Invalidate primary keys after an unsafe method: here at once (every tier), and on
        every instance through their URI tags (the same log, acknowledgements and bound as
        tags). None when there was nothing to invalidate."""
        key_list = list(keys)
        if not key_list:
            return None
        self.recent.invalidate(key_list)
        for key in key_list:
            self.store.delete(key)
        result = self.generations.invalidate([uri_tag(key) for key in key_list]) if self.uri_tags else None
        self.uri_invalidations.inc()
        edge = self.services.get("cdn.purge")
        if edge is not None:
            edge.purge_urls(key_list)
        return result

    async def ainvalidate_keys(self, keys: Iterable[str]) -> InvalidationResult | None:
        """:meth:`invalidate_keys` through the stores' and generations' async faces."""
        key_list = list(keys)
        if not key_list:
            return None
        self.recent.invalidate(key_list)
        for key in key_list:
            await self.store.adelete(key)
        result = (await self.generations.ainvalidate([uri_tag(key) for key in key_list])
                  if self.uri_tags else None)
        self.uri_invalidations.inc()
        edge = self.services.get("cdn.purge")
        if edge is not None:
            await edge.apurge_urls(key_list)
        return result

    # ----------------------------------------------------------------- background refreshes
    @property
    def executor(self) -> ThreadPoolExecutor:
        """Bounded pool for WSGI stale-while-revalidate refreshes, started on first use."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=self._refresh_threads,
                                                thread_name_prefix="scalekit-refresh")
        return self._executor

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None


class CacheShell:
    """What both shells hold: the app they wrap, the core, the parts of it they call on every
    request, and the plain-hit path answering with headers made by ``encode``."""

    def __init__(self, app: Any, core: CacheCore,
                 encode: Callable[[tuple[tuple[str, str], ...]], list[Any]]) -> None:
        self.app = app
        self.call_app = direct(app)  # how every call of the app is made (see scalekit/calls.py)
        self.core = core
        self.policy = core.policy
        self.store = core.store
        self.generations = core.generations
        self.clock = core.clock
        self.plain_hits: PlainHits[Any] = PlainHits(core, encode)
        self.recall = self.plain_hits.recall
        # The lookups for a key the early path found nothing under in L1 (only a store with
        # L1 has them, and only then does the early path hand a key over).
        self.get_past_memory: Callable[[str], Any] = getattr(self.store, "get_past_memory", self.store.get)
        self.aget_past_memory: Callable[[str], Any] = getattr(self.store, "aget_past_memory", self.store.aget)
        # A key marked hit-for-miss is looked up in L1 alone: the lookups of a store with tiers
        # after L1 (each face's: a key's lookup, and one after the early path's L1 miss).
        store = self.store
        self.memory_lookups: tuple[Callable[[str], Any], Callable[[str], Any]] | None = None
        self.amemory_lookups: tuple[Callable[[str], Any], Callable[[str], Any]] | None = None
        if getattr(store, "has_tiers_past_memory", False):  # a TieredStore, traced or not
            tiered: Any = store
            self.memory_lookups = tiered.get_memory, tiered.memory_missed
            self.amemory_lookups = tiered.aget_memory, tiered.amemory_missed


# Room kept in a tier's entry bound for what an entry holds besides its body (key, headers).
ENTRY_HEADROOM_BYTES = 64 * 1024


def storable_body_bytes(max_body_bytes: int, largest_entry_bytes: int | None) -> int:
    """The largest body the cache stores: ``cache.max_body_bytes``, and no more than the largest
    entry some tier keeps allows, so that ``stored`` in Cache-Status is never a false claim."""
    if largest_entry_bytes is None:
        return max_body_bytes
    return max(0, min(max_body_bytes, largest_entry_bytes - ENTRY_HEADROOM_BYTES))


def restore_route(request: MutableMapping[str, Any], route: str) -> None:
    """Name the route of a request (environ or scope) answered from the cache, as the app
    would have: hits are counted under the same route as the misses that filled the cache."""
    ctx = request.get(CONTEXT_KEY)
    if ctx is not None:
        ctx.route = route


def restore_tags(request: MutableMapping[str, Any], tags: tuple[tuple[str, int], ...]) -> None:
    """Give a request answered from the cache its entry's tags, as the app gave its miss: the
    CDN layer sends them as surrogate keys, so an edge that stores this answer can be purged."""
    ctx = request.get(CONTEXT_KEY)
    if ctx is not None:
        ctx.tags.update(tag_names(tags))


def tag_names(tags: tuple[tuple[str, int], ...]) -> tuple[str, ...]:
    """The names of an entry's tags an edge may be purged by (not the internal URI tags)."""
    return tuple(name for name, _ in tags if " " not in name)


def route_of(ctx: Any) -> str:
    """The route template an adapter named for the request ("" if none), stored with its entry."""
    return ctx.route if ctx is not None and ctx.route != UNMATCHED_ROUTE else ""


def core_for(runtime: Any) -> CacheCore:
    """The runtime's cache core, built once (both wrap functions may be called)."""
    core: CacheCore | None = runtime.services.get("cache.core")
    if core is None:
        core = runtime.services["cache.core"] = CacheCore(runtime)
    return core


def wrap_wsgi(app: wsgi.WSGIApp, runtime: Any) -> wsgi.WSGIApp:
    """The cache layer around a WSGI app."""
    from .wsgi import WSGICache

    return WSGICache(app, core_for(runtime))


def wrap_asgi(app: asgi.ASGIApp, runtime: Any) -> asgi.ASGIApp:
    """The cache layer around an ASGI app."""
    from .asgi import ASGICache

    return ASGICache(app, core_for(runtime))
