"""L1: an in-process LRU bounded in bytes, with a per-entry lifetime and a per-entry size cap.

An ``OrderedDict`` in least recently used order, bounded by the sum of its entries' sizes. Each
entry keeps its own lifetime (``kept_until``), checked when it is read: an entry past it is a
miss and is dropped then, and the LRU order pushes expired entries out first anyway, since
nothing reads them (a TTL cache that drops them eagerly pays a timer, an expiry scan and a
heap push on every write, a third of the cost of storing an entry). The size of an entry is what it really costs in
this process (measured with ``sys.getsizeof`` on
the stored objects plus the cache's own bookkeeping), so ``max_bytes`` bounds real memory,
not just body bytes: a flood of small distinct keys cannot grow the process past the bound.

>>> from scalekit.cache.entry import CachedEntry
>>> tier = MemoryTier(max_bytes=1_000_000, max_entry_bytes=10_000, clock=lambda: 100.0)
>>> tier.set("k", CachedEntry(status=200, headers=(("content-type", "text/plain"),), body=b"hi",
...                            request_time=100.0, response_time=100.0,
...                            corrected_initial_age_seconds=0.0, freshness_lifetime_seconds=60.0))
>>> tier.get("k")[0].body, tier.get("k")[1]
(b'hi', 'memory')
"""

from __future__ import annotations

import dataclasses
import functools
import operator
import os
import sys
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from itertools import chain

from ...metrics.instruments import (
    CACHE_LOOKUPS,
    CACHE_MAX_BYTES,
    CACHE_STORES,
    Tally,
    counter_handle,
    gauge_handle,
    tier_gauge,
)
from ..entry import CachedEntry
from .base import SizedTierMetrics, kept_until

__all__ = ["MemoryTier", "memory_footprint"]

# Bookkeeping per item inside the LRU, measured with tracemalloc on CPython 3.11 (see
# bench/cache_tiers.py): the OrderedDict's slot and link, the (entry, kept-until, size) tuple
# with its float and int, and the slack of the dict under evictions.
ITEM_OVERHEAD_BYTES = 200
_getsizeof = sys.getsizeof
_PAIR_BYTES = sys.getsizeof(("", ""))
_EMPTY_TUPLE_BYTES = sys.getsizeof(())
_TUPLE_SLOT_BYTES = sys.getsizeof((None,)) - _EMPTY_TUPLE_BYTES
_EMPTY_STR_BYTES = sys.getsizeof("")  # a compact ASCII str: this plus one byte per character
_EMPTY_BYTES_BYTES = sys.getsizeof(b"")
# An int of one 30-bit digit (a tag's generation, as a rule); 0 and larger ones are asked.
_SMALL_INT_BYTES = sys.getsizeof(1)
_SMALL_INT_LIMIT = 1 << sys.int_info.bits_per_digit
_FLOAT_BYTES = sys.getsizeof(0.0)
_FLOAT_FIELDS = ("request_time", "response_time", "corrected_initial_age_seconds",
                 "freshness_lifetime_seconds", "stale_while_revalidate_seconds",
                 "stale_if_error_seconds", "origin_seconds", "db_seconds")
# Fields that cost nothing of their own: the status (a small int, cached by CPython, counted
# below when it is not) and the booleans (singletons).
_SHARED_FIELDS = ("status", "requires_revalidation", "must_revalidate", "is_vary_index")
_SEQUENCE_FIELDS = ("headers", "body", "tags", "vary", "secondary_key", "variants_id", "route")
_KNOWN_FIELDS = {*_FLOAT_FIELDS, *_SHARED_FIELDS, *_SEQUENCE_FIELDS}
if {field.name for field in dataclasses.fields(CachedEntry)} != _KNOWN_FIELDS:
    # Loud at import, not a silent undercount of L1's memory: a new field needs a line below.
    raise RuntimeError("CachedEntry's fields changed: count the new ones in memory_footprint() "
                       "(scalekit/cache/tiers/memory.py)")
_ENTRY_BYTES = sys.getsizeof(CachedEntry(status=200, headers=(), body=b"", request_time=0.0,
                                         response_time=0.0, corrected_initial_age_seconds=0.0,
                                         freshness_lifetime_seconds=0.0))  # slots: fixed size
# What every entry costs: the entry, its L1 item, its body's bytes object and its floats.
_FIXED_BYTES = _ENTRY_BYTES + ITEM_OVERHEAD_BYTES + _EMPTY_BYTES_BYTES + len(_FLOAT_FIELDS) * _FLOAT_BYTES


def memory_footprint(key: str, entry: CachedEntry) -> int:
    """Bytes ``entry`` stored under ``key`` occupies in L1, every field counted (objects shared
    with other entries are counted too, so the bound errs on the safe side).

    The miss path pays this on every store, so the common shapes are computed rather than
    asked for (``sys.getsizeof`` looks ``__sizeof__`` up and calls it: about 1,200 instructions
    an object): bytes and tuples from their lengths, ASCII text (nearly all of it) and small
    ints from theirs; anything else is asked.
    """
    size = _FIXED_BYTES + len(entry.body) + (_EMPTY_STR_BYTES + len(key) if key.isascii() else _getsizeof(key))
    headers = entry.headers
    if headers:
        count = len(headers)
        size += _EMPTY_TUPLE_BYTES + count * (_TUPLE_SLOT_BYTES + _PAIR_BYTES)
        text = "".join(chain.from_iterable(headers))  # one C pass: ASCII, and how long
        if text.isascii():
            size += 2 * count * _EMPTY_STR_BYTES + len(text)
        else:  # latin-1 or wider text: ask each string
            size += sum(map(_getsizeof, chain.from_iterable(headers)))
    tags = entry.tags
    if tags:
        size += _EMPTY_TUPLE_BYTES + len(tags) * (_TUPLE_SLOT_BYTES + _PAIR_BYTES)
        for name, generation in tags:
            size += _EMPTY_STR_BYTES + len(name) if name.isascii() else _getsizeof(name)
            size += _SMALL_INT_BYTES if 0 < generation < _SMALL_INT_LIMIT else _getsizeof(generation)
    vary = entry.vary
    if vary:
        size += _getsizeof(vary) + sum(map(_getsizeof, vary))
    if not -5 <= entry.status <= 256:
        size += _getsizeof(entry.status)
    # The empty string and one-character latin-1 strings are shared singletons.
    for text in (entry.secondary_key, entry.variants_id, entry.route):
        if len(text) > 1:
            size += _EMPTY_STR_BYTES + len(text) if text.isascii() else _getsizeof(text)
    return size


# Every L1 of this process (their LRUs, held weakly): the gauges are the process's, so two apps
# wrapped in one process, an L1 each, show the sum of both, not whichever set the gauge last.
# Added to and read under the lock: a set that grows while another thread iterates it raises.
_LIVE_LRUS: weakref.WeakSet[_ByteBoundedLRU] = weakref.WeakSet()
_LIVE_LOCK = threading.Lock()


def _summed(read: Callable[[_ByteBoundedLRU], int]) -> float:
    """``read`` (bytes held, entries, byte bound) summed over every live L1 of this process."""
    with _LIVE_LOCK:
        lrus = list(_LIVE_LRUS)
    return float(sum(map(read, lrus)))


_held_bytes = functools.partial(_summed, operator.attrgetter("currsize"))
_held_entries = functools.partial(_summed, len)
_bound_bytes = functools.partial(_summed, operator.attrgetter("maxsize"))


class _ByteBoundedLRU:
    """``key -> (entry, kept_until, size)`` in least recently used order, bounded by the sum of
    the sizes: storing past the bound evicts from the least recently used end.

    One ``OrderedDict`` (the standard library's, public API only): a hit is one dict read and
    one ``move_to_end``, both in C. The cache's hot path reads :attr:`items` without the lock,
    only to ask whether a key still holds the entry it served a moment ago; a single dict read
    is atomic under the GIL, and the answer is checked again under the lock by anything that
    changes the LRU.
    """

    def __init__(self, max_bytes: int, metrics: SizedTierMetrics) -> None:
        self.items: OrderedDict[str, tuple[CachedEntry, float, int]] = OrderedDict()
        self.maxsize = max_bytes
        self.currsize = 0
        self.evictions = 0
        self._evicted = counter_handle(metrics.evicted)

    def lookup(self, key: str) -> tuple[CachedEntry, float, int] | None:
        """The value under ``key`` with its LRU order refreshed, or None."""
        value = self.items.get(key)
        if value is not None:
            self.items.move_to_end(key)
        return value

    def put(self, key: str, entry: CachedEntry, until: float, size: int) -> None:
        """Store ``entry`` of ``size`` bytes (at most ``maxsize``), evicting as needed."""
        items = self.items
        self.pop(key)
        evicted = 0
        while items and self.currsize + size > self.maxsize:
            self.currsize -= items.popitem(last=False)[1][2]
            evicted += 1
        if evicted:
            self.evictions += evicted
            self._evicted.inc(evicted)
        items[key] = (entry, until, size)
        self.currsize += size

    def pop(self, key: str) -> None:
        value = self.items.pop(key, None)
        if value is not None:
            self.currsize -= value[2]

    def clear(self) -> None:
        self.items.clear()
        self.currsize = 0

    def __len__(self) -> int:
        return len(self.items)


class MemoryTier:
    """L1 store: sync and async faces over the same locked LRU (no I/O, so async is direct)."""

    name = "memory"
    in_process = True  # no I/O: TieredStore's async face calls the sync methods directly

    def __init__(
        self,
        *,
        max_bytes: int = 64 * 1024 * 1024,
        max_entry_bytes: int = 1024 * 1024,
        clock: Callable[[], float] = time.time,
        retain_stale_seconds: float = 30.0,
    ) -> None:
        self.max_bytes = max_bytes
        self.max_entry_bytes = min(max_entry_bytes, max_bytes)
        self.retain_stale_seconds = retain_stale_seconds
        self._metrics = SizedTierMetrics(self.name)
        self._hits = counter_handle(self._metrics.hit)
        # A miss and a store are counted with one C call each, added before any read.
        self._miss_tally = Tally((CACHE_LOOKUPS,), (counter_handle(self._metrics.miss).inc,))
        self._stored_tally = Tally((CACHE_STORES,), (counter_handle(self._metrics.stored).inc,))
        self._count_miss, self._count_stored = self._miss_tally.tick, self._stored_tally.tick
        self._bytes = gauge_handle(self._metrics.bytes)
        self._entries = gauge_handle(self._metrics.entries)
        # In one process the gauges are read from the LRU when scraped, so a write pays
        # nothing for them; gunicorn's multiprocess mode reads files each worker writes, so
        # there every write publishes (set_function does not reach those files).
        self._publish_on_write = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self._lock = threading.Lock()
        self._clock = clock
        self._cache = _ByteBoundedLRU(max_bytes, self._metrics)
        # The LRU's item dict, read without the lock by the cache's hot path, which only asks
        # whether a key still holds an entry it served a moment ago.
        self.items = self._cache.items
        with _LIVE_LOCK:
            _LIVE_LRUS.add(self._cache)  # held weakly: the registry must not keep the entries
        self._bound = tier_gauge(CACHE_MAX_BYTES, self.name)
        if self._publish_on_write:
            self._bound.set(_bound_bytes())
        else:
            self._metrics.bytes.set_function(_held_bytes)
            self._metrics.entries.set_function(_held_entries)
            self._bound.set_function(_bound_bytes)

    # ----------------------------------------------------------------- sync face
    def get(self, key: str) -> tuple[CachedEntry, str] | None:
        """The entry under ``key`` if still kept (LRU order refreshed), else None."""
        entry = self.peek(key)
        if entry is None:
            self._count_miss()
            return None
        self._hits.inc(1)
        return entry, self.name

    def peek(self, key: str) -> CachedEntry | None:
        """:meth:`get` without counting: the cache's hot path counts a hit only once it serves
        it (:meth:`count_hit`), and otherwise asks the tiered store again, which counts."""
        cache = self._cache
        with self._lock:
            value = cache.lookup(key)
            if value is None:
                return None
            if self._clock() >= value[1]:
                cache.pop(key)
                return None
            return value[0]

    def count_hit(self, amount: int = 1) -> None:
        self._hits.inc(amount)

    def count_miss(self) -> None:
        """Count a miss found by :meth:`peek` (which counts nothing)."""
        self._count_miss()

    def set(self, key: str, entry: CachedEntry) -> None:
        """Keep ``entry`` unless it is larger than ``max_entry_bytes`` (then drop any old one)."""
        size = memory_footprint(key, entry)
        with self._lock:
            if size > self.max_entry_bytes:
                self._cache.pop(key)
                self._metrics.too_large.inc()
            else:
                until = kept_until(entry, retain_stale_seconds=self.retain_stale_seconds)
                if self._clock() < until:
                    self._cache.put(key, entry, until, size)
                    self._count_stored()
                else:  # nothing left to keep; an older entry under the key goes too
                    self._cache.pop(key)
            if self._publish_on_write:
                self._publish_gauges()

    def delete(self, key: str) -> None:
        with self._lock:
            self._cache.pop(key)
            self._publish_gauges()

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()
            self._publish_gauges()

    def close(self) -> None:
        with _LIVE_LOCK:
            _LIVE_LRUS.discard(self._cache)  # its bound no longer counts either
        self.clear()
        if self._publish_on_write:
            self._bound.set(_bound_bytes())

    # ----------------------------------------------------------------- async face
    async def aget(self, key: str) -> tuple[CachedEntry, str] | None:
        return self.get(key)

    async def aset(self, key: str, entry: CachedEntry) -> None:
        self.set(key, entry)

    async def adelete(self, key: str) -> None:
        self.delete(key)

    # ----------------------------------------------------------------- introspection
    @property
    def current_bytes(self) -> int:
        """Bytes accounted to live entries (never above ``max_bytes``)."""
        return int(self._cache.currsize)

    @property
    def evictions(self) -> int:
        return self._cache.evictions

    def __len__(self) -> int:
        return len(self._cache)

    def __contains__(self, key: str) -> bool:
        with self._lock:
            value = self._cache.items.get(key)  # a look that leaves the LRU order alone
            return value is not None and self._clock() < value[1]

    def _publish_gauges(self) -> None:
        if not self._publish_on_write:
            return
        self._bytes.set(_held_bytes())
        self._entries.set(_held_entries())
