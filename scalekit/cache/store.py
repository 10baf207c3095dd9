"""The contracts between the cache policy and its storage: entries by key, tag generations.

Part 1 of the cache ships in-process implementations; the tiered store (L1 memory, L2 Redis,
L3 disk) and the fleet-wide generations (Redis + pub/sub) implement the same protocols, so the
cache layer does not change when they plug in.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from .entry import CachedEntry
from .invalidation import InvalidationResult

__all__ = ["Generations", "Store", "TagStamp"]

TagStamp = tuple[tuple[str, int], ...]


class Store(Protocol):
    """Entries by key. Faults never raise: a failing tier is a miss (and a metric)."""

    def get(self, key: str) -> tuple[CachedEntry, str] | None:
        """The entry and the name of the tier that had it (``"memory"``, ``"redis"``, ``"disk"``)."""

    def set(self, key: str, entry: CachedEntry) -> None: ...

    def delete(self, key: str) -> None: ...

    async def aget(self, key: str) -> tuple[CachedEntry, str] | None: ...

    async def aset(self, key: str, entry: CachedEntry) -> None: ...

    async def adelete(self, key: str) -> None: ...


class Generations(Protocol):
    """Tag generations: invalidation in O(number of tags), never O(number of entries).

    Every invalidation advances a sequence number and sets each of its tags' generation to it.
    The cache reads :meth:`sequence` just before calling the origin and later asks
    :meth:`stamp` for the generations of the response's tags *as of that moment*: if any tag
    moved since, the response overlapped an invalidation and is not stored as fresh.
    These three reads never do I/O (every implementation keeps the generations it has heard
    of in memory), so async code calls them as they are; only invalidation has an async face.
    :meth:`is_current` is the hit-path check.
    """

    def sequence(self) -> int: ...

    def stamp(self, tags: Iterable[str], since: int) -> TagStamp | None:
        """Current generations of ``tags``, or None if any was invalidated after ``since``."""

    def is_current(self, stamp: TagStamp) -> bool: ...

    def invalidate(self, tags: Iterable[str]) -> InvalidationResult: ...

    async def ainvalidate(self, tags: Iterable[str]) -> InvalidationResult: ...
