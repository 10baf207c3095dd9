"""The cache's hot path: plain fresh hits from L1, answered before any request view exists.

A plain hit is a GET or HEAD with no special request header (no conditionals, Range,
Cache-Control, Pragma, Upgrade, body, nor a proxy header but those restating the request) for a current, fresh,
non-Vary'd entry in
L1: what :meth:`~.policy.CachePolicy.decide_request` would serve with the stored headers plus
``Age`` and ``Cache-Status``. Both shells ask :class:`PlainHits` first and take the full path
on None.

What the last plain hit of a request target sent is memoised, for as long as the policy says
its ``Age`` and ``ttl`` keep their whole seconds (at most a second). A memoised answer is
reused only while L1 still holds that very entry (not deleted, replaced, evicted or masked)
and its tags are current, so it serves exactly what a fresh decision would. The memo is
emptied each new second, so it never keeps an entry L1 has let go of for longer than that.

The layers outside the cache (CDN, metrics) add to a plain hit what they would add on their
full path, computed when the memo is made rather than per hit: a CDN stamps the headers once
(:meth:`PlainHits.add_stamper`), and the metrics layer counts the request through a ledger
appended to per hit (:meth:`PlainHits.count_requests`), like the cache's own hit counter.
"""

from __future__ import annotations

import math
from collections.abc import Callable, MutableMapping
from typing import Any, Generic, Protocol, TypeVar

from ..metrics import instruments
from .entry import CachedEntry

__all__ = ["EARLY_MISS_KEY", "PlainHit", "PlainHits", "RequestLedger", "Stamp"]

# Where the early path leaves, in the environ or scope, the primary key it computed and found
# nothing under in L1: the full path that follows neither computes the key nor asks L1 again.
EARLY_MISS_KEY = "scalekit.cache.early_miss"

Encoded = TypeVar("Encoded")
Target = tuple[Any, ...]  # (method, scheme, host, path, query) as the driver has them (str or bytes)
Lines = tuple[tuple[str, str], ...]
# An outer layer's headers for a plain hit (method, path, entry, the headers so far), or None
# when that layer must see the request itself (it then takes the full path).
Stamp = Callable[[str, str, CachedEntry, Lines], Lines | None]


class RequestLedger(Protocol):
    """The metrics layer's count of plain hits: :meth:`line` once per memo, what it returns
    called per hit with the hit's duration."""

    def flush(self) -> None:
        """Add the hits counted so far to the metrics."""

    def line(self, method: str, path: str, route: str, status: int) -> Callable[[float], object] | None:
        """What a hit of this kind calls with its duration (None: not counted)."""


class PlainHit(Generic[Encoded]):
    """What a plain hit sends and counts: good until ``until`` while L1 holds ``entry`` under
    ``key`` and its tags are current; ``saved`` is what it spared (route, origin and database
    seconds), ``line`` the metrics layer's (called with the hit's duration)."""

    __slots__ = ("entry", "headers", "key", "line", "saved", "until")

    def __init__(self, until: float, key: str, entry: CachedEntry, headers: list[Encoded],
                 saved: tuple[str, float, float], line: Callable[[float], object] | None) -> None:
        self.until, self.key, self.entry, self.headers = until, key, entry, headers
        self.saved, self.line = saved, line


MEMO_LIMIT = 4096
MEMO_MAX_TARGET_CHARS = 1024


class PlainHits(Generic[Encoded]):
    """Plain L1 hits for one shell; ``encode`` turns header tuples into what the driver sends
    (ASGI: a list of bytes pairs; WSGI: a list of str pairs)."""

    def __init__(self, core: Any,
                 encode: Callable[[tuple[tuple[str, str], ...]], list[Encoded]]) -> None:
        self._encode = encode
        self._policy = core.policy
        self._keys = core.policy.keys
        self._forwarded = core.policy.forwarded
        self._responses = core.policy.responses
        self._generations = core.generations
        self._clock = core.clock
        store = core.store
        memory = getattr(store, "memory", None)
        # L1's own dict, key -> (entry, kept_until, size) (identity checks on the entry without
        # its lock), its mask in the tiered store, and its lookup. Without them (no L1, a test's
        # store) there is no hot path.
        self._items: dict[str, tuple[CachedEntry, float, int]] | None = getattr(memory, "items", None)
        self._peek = getattr(store, "memory_peek", None) if self._items is not None else None
        self._mask = getattr(store, "memory_mask", None)
        # Each plain hit counts as a cache hit and an L1 lookup hit, in one C call.
        # (The tally is kept here: its counters hold it only weakly.)
        self._tally = instruments.Tally((instruments.CACHE_REQUESTS, instruments.CACHE_LOOKUPS),
                                        (core.outcomes["hit"].inc, memory.count_hit)) if memory is not None else None
        self._count = self._tally.tick if self._tally is not None else None
        # What each hit saved goes to its route's counters: the memo keeps the entry's
        # (route, origin seconds, database seconds), appended per hit (see instruments.Savings).
        savings = core.savings
        self._saved, self._save, self._saved_flush_at, self._flush_saved = (
            savings.pending, savings.pending.append, savings.flush_at, savings.flush)
        self._purge_path = core.purge.policy.path if core.purge.enabled else None
        self._memo: dict[Target, PlainHit[Encoded]] = {}  # what the last plain hit of each target sent
        self._memo_second = 0.0
        self._stampers: list[Stamp] = []
        self.stamped = False  # an outer layer finishes the hits (it reads the path it is given)
        self._ledger: RequestLedger | None = None
        # The memoised plain hit on a target (method, scheme, host, path, query: as the driver
        # has them, str or bytes) while it still serves what a fresh decision would, counted as
        # a hit; else None (then :meth:`decide`). The shell sends a copy of its headers.
        self.recall = self._recaller()

    def restated(self, method: str, scheme: str, host: str, header: Callable[[str], str | None]) -> bool:
        """Whether the request's proxy headers only restate it (absent, or the values its URL
        already has), so that its key is the plain one: the shells ask when one is present."""
        return bool(self._forwarded.key_part(method, scheme, host, header) == "")

    def add_stamper(self, stamp: Stamp) -> None:
        """Have ``stamp`` (an outer layer's, added innermost first) finish every plain hit's
        headers when its memo is made."""
        self._stampers.append(stamp)
        self.stamped = True
        self._memo.clear()

    def count_requests(self, ledger: RequestLedger) -> None:
        """Count and time every plain hit in ``ledger`` (the metrics layer's)."""
        self._ledger = ledger
        flush_saved = self._flush_saved

        def flush_both() -> None:  # one length check per hit bounds both queues
            flush_saved()
            ledger.flush()

        self._flush_saved = flush_both
        self.stamped = True
        self._memo.clear()

    def _recaller(self) -> Callable[[Target], PlainHit[Encoded] | None]:
        """:attr:`recall`: a closure over what it reads, so that a hit is one small frame with
        no lookups on ``self`` (the savings' flush, rare, still goes through ``self``: the
        metrics layer may replace it)."""
        memo_get, items, mask, clock = self._memo.get, self._items, self._mask, self._clock
        is_current, count, save, saved = self._generations.is_current, self._count, self._save, self._saved
        if items is None or count is None:
            return lambda target: None  # no L1: no hot path
        items_get = items.get

        def recall(target: Target) -> PlainHit[Encoded] | None:
            hit = memo_get(target)
            if hit is None:
                return None
            now = clock()
            key, entry = hit.key, hit.entry
            if now >= hit.until:
                return None
            held = items_get(key)
            if (held is None or held[0] is not entry or (mask and key in mask)
                    or not is_current(entry.tags)):  # untagged too: a fleet's trust may lapse
                return None
            count()
            if hit.line is not None:
                hit.line(clock() - now)  # the request's duration, for the metrics layer
            save(hit.saved)
            if len(saved) >= self._saved_flush_at:
                self._flush_saved()
            return hit

        return recall

    def decide(self, target: Target, request: MutableMapping[str, Any]) -> PlainHit[Encoded] | None:
        """After :attr:`recall` found nothing: the plain hit on ``target``, made, memoised and
        counted; else None, and the full path decides, told the target's primary key in
        ``request`` (environ or scope, under :data:`EARLY_MISS_KEY`) when L1 holds nothing
        under it."""
        decided = self._decide(target, self._clock())
        if isinstance(decided, str):
            request[EARLY_MISS_KEY] = decided
            return None
        return decided

    def _decide(self, target: Target, now: float) -> PlainHit[Encoded] | str | None:
        peek = self._peek
        method, scheme, host, path, query = target
        if peek is None or path == self._purge_path:
            return None
        if type(host) is bytes:
            host = host.decode("latin-1")
        if type(query) is bytes:
            query = query.decode("latin-1")
        key: str | None = self._keys.primary_key(scheme, host, path, query)
        if key is None:
            return None
        entry = peek(key)  # refreshes the LRU order (hot hits refresh it once a second)
        if entry is None:
            return key
        if not self._generations.is_current(entry.tags):
            return None
        answer = self._policy.plain_hit(entry, now)
        if answer is None:
            return None
        age, ttl, until = answer
        lines: Lines | None = entry.headers + self._responses.plain_hit_headers("memory", age, ttl)
        for stamp in self._stampers:
            lines = stamp(method, path, entry, lines)  # type: ignore[arg-type]
            if lines is None:
                return None
        line = self._ledger.line(method, path, entry.route, entry.status) if self._ledger else None
        headers = self._encode(lines)  # type: ignore[arg-type]
        hit = PlainHit(until, key, entry, headers, (entry.route, entry.origin_seconds, entry.db_seconds), line)
        if len(path) + len(query) + len(host) <= MEMO_MAX_TARGET_CHARS:  # client text: bytes bounded
            memo = self._memo
            if now >= self._memo_second or len(memo) >= MEMO_LIMIT:
                memo.clear()
                self._memo_second = math.floor(now) + 1.0
            memo[target] = hit
        self._count()  # type: ignore[misc]
        if line is not None:
            line(self._clock() - now)
        self._save(hit.saved)
        if len(self._saved) >= self._saved_flush_at:
            self._flush_saved()
        return hit
