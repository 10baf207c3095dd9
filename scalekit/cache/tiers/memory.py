"""L1: an in-process LRU bounded in bytes, with a per-entry lifetime and a per-entry size cap.

Built on ``cachetools.TLRUCache`` (time-aware LRU: each entry expires at its own time). The
size of an entry is what it really costs in this process (measured with ``sys.getsizeof`` on
the stored objects plus the cache's own bookkeeping), so ``max_bytes`` bounds real memory,
not just body bytes: a flood of small distinct keys cannot grow the process past the bound.

>>> from scalekit.cache.entry import CachedEntry
>>> tier = MemoryTier(max_bytes=1_000_000, max_entry_bytes=10_000, clock=lambda: 100.0)
>>> tier.set("k", CachedEntry(200, (("content-type", "text/plain"),), b"hi", 100.0, 100.0, 0.0, 60.0))
>>> tier.get("k")[0].body, tier.get("k")[1]
(b'hi', 'memory')
"""

from __future__ import annotations

import dataclasses
import sys
import threading
import time
from collections.abc import Callable
from itertools import chain
from typing import Any

from cachetools import TLRUCache

from ..entry import CachedEntry
from .base import TierMetrics, kept_until

__all__ = ["MemoryTier", "memory_footprint"]

# Bookkeeping per item inside TLRUCache, measured with tracemalloc on CPython 3.11 (see
# bench/cache_tiers.py): the data and size dict slots, the OrderedDict link, the heap slot, the
# _Item (expires/key/removed) and the float of its expiry time.
ITEM_OVERHEAD_BYTES = 232
_getsizeof = sys.getsizeof
_PAIR_BYTES = sys.getsizeof(("", ""))
_OTHER_FIELD_NAMES = tuple(field.name for field in dataclasses.fields(CachedEntry)
                           if field.name not in ("body", "headers", "tags"))


def memory_footprint(key: str, entry: CachedEntry) -> int:
    """Bytes ``entry`` stored under ``key`` occupies in L1, every field counted (objects shared
    with other entries are counted too, so the bound errs on the safe side).

    The miss path pays this on every store, so the big fields (body, header and tag pairs) are
    measured with C-level iteration; the other fields are walked generically, so a field added
    to CachedEntry is counted without a change here.
    """
    size = _getsizeof(key) + _getsizeof(entry) + ITEM_OVERHEAD_BYTES + _getsizeof(entry.body)
    headers = entry.headers
    if headers:
        size += _getsizeof(headers) + len(headers) * _PAIR_BYTES + sum(map(_getsizeof, chain.from_iterable(headers)))
    tags = entry.tags
    if tags:
        size += _getsizeof(tags) + len(tags) * _PAIR_BYTES + sum(map(_deep_size, chain.from_iterable(tags)))
    for name in _OTHER_FIELD_NAMES:
        size += _deep_size(getattr(entry, name))
    return size


def _deep_size(value: object) -> int:
    kind = type(value)
    if kind is tuple:
        items: tuple[object, ...] = value  # type: ignore[assignment]
        return _getsizeof(items) + sum(map(_deep_size, items)) if items else 0
    if kind is int:
        return 0 if -5 <= value <= 256 else _getsizeof(value)  # type: ignore[operator]
    if kind is str or kind is bytes:
        # The empty string and one-character latin-1 strings are shared singletons.
        return _getsizeof(value) if len(value) > 1 else 0  # type: ignore[arg-type]
    if value is None or value is True or value is False:
        return 0
    return _getsizeof(value)


class _ByteBoundedLRU(TLRUCache):  # type: ignore[type-arg]
    """TLRUCache whose size function sees the key, and which counts evictions."""

    def __init__(self, max_bytes: int, ttu: Callable[[Any, Any, float], float],
                 timer: Callable[[], float], metrics: TierMetrics) -> None:
        super().__init__(max_bytes, ttu, timer=timer, getsizeof=self._size_of)
        self._pending_size = 0
        self._metrics = metrics
        self.evictions = 0

    def _size_of(self, _value: Any) -> int:
        return self._pending_size

    def put(self, key: str, entry: CachedEntry, size: int) -> None:
        self._pending_size = size  # read by _size_of inside Cache.__setitem__
        self[key] = entry

    def popitem(self) -> tuple[Any, Any]:
        item = super().popitem()
        self.evictions += 1
        self._metrics.evicted.inc()
        return item


class MemoryTier:
    """L1 store: sync and async faces over the same locked LRU (no I/O, so async is direct)."""

    name = "memory"

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
        self._metrics = TierMetrics(self.name)
        self._lock = threading.Lock()
        self._cache = _ByteBoundedLRU(max_bytes, self._expires_at, clock, self._metrics)

    def _expires_at(self, _key: Any, entry: CachedEntry, _now: float) -> float:
        return kept_until(entry, retain_stale_seconds=self.retain_stale_seconds)

    # ----------------------------------------------------------------- sync face
    def get(self, key: str) -> tuple[CachedEntry, str] | None:
        """The entry under ``key`` if still kept (LRU order refreshed), else None."""
        with self._lock:
            entry = self._cache.get(key)
        if entry is None:
            self._metrics.miss.inc()
            return None
        self._metrics.hit.inc()
        return entry, self.name

    def set(self, key: str, entry: CachedEntry) -> None:
        """Keep ``entry`` unless it is larger than ``max_entry_bytes`` (then drop any old one)."""
        size = memory_footprint(key, entry)
        with self._lock:
            if size > self.max_entry_bytes:
                self._cache.pop(key, None)
                self._metrics.too_large.inc()
            else:
                self._cache.put(key, entry, size)
                self._metrics.stored.inc()
            self._publish_gauges()

    def delete(self, key: str) -> None:
        with self._lock:
            self._cache.pop(key, None)
            self._publish_gauges()

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()
            self._publish_gauges()

    def close(self) -> None:
        self.clear()

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
            return key in self._cache

    def _publish_gauges(self) -> None:
        self._metrics.bytes.set(self._cache.currsize)
        self._metrics.entries.set(len(self._cache))
