"""L1 -> L2 -> L3 behind one Store: look up in order, promote hits upward, write through.

A write or delete that a tier could not perform (Redis down, disk unwritable) leaves that tier
holding an older entry, which must not resurface when the tier comes back: the key is then
*masked* for that tier (a bounded, per-process set). A masked key is a miss in that tier until
a later write or delete of it succeeds there; each lookup of a masked key retries the delete.

>>> from scalekit.cache.entry import CachedEntry
>>> from scalekit.cache.tiers.memory import MemoryTier
>>> store = TieredStore([MemoryTier(clock=lambda: 1.0)])
>>> store.set("k", CachedEntry(status=200, headers=(), body=b"x", request_time=1.0, response_time=1.0,
...                             corrected_initial_age_seconds=0.0, freshness_lifetime_seconds=60.0))
>>> store.get("k")[1]
'memory'
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from ..entry import CachedEntry

__all__ = ["TieredStore"]

log = logging.getLogger("scalekit.cache")

MAX_MASKED_KEYS = 10_000


class _Mask(OrderedDict[str, None]):
    """Keys whose newest write or delete a tier missed (oldest dropped past the bound).

    An OrderedDict itself, so the per-request ``if mask`` and ``key in mask`` stay in C.
    """

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()

    def add(self, key: str) -> None:
        with self._lock:
            self[key] = None
            self.move_to_end(key)
            while len(self) > MAX_MASKED_KEYS:
                self.popitem(last=False)

    def discard(self, key: str) -> None:
        with self._lock:
            self.pop(key, None)


def _try_set(tier: Any, key: str, entry: CachedEntry) -> bool:
    try_set = getattr(tier, "try_set", None)
    if try_set is None:
        tier.set(key, entry)
        return True
    return bool(try_set(key, entry))


def _try_delete(tier: Any, key: str) -> bool:
    try_delete = getattr(tier, "try_delete", None)
    if try_delete is None:
        tier.delete(key)
        return True
    return bool(try_delete(key))


class TieredStore:
    """The Store the cache layer uses: tiers in lookup order (memory, redis, disk)."""

    def __init__(self, tiers: Sequence[Any]) -> None:
        self.tiers = tuple(tiers)
        self._masks = tuple(_Mask() for _ in self.tiers)
        # Tiers without I/O (L1): the async face calls their sync methods, no coroutine each.
        self._in_process = tuple(bool(getattr(tier, "in_process", False)) for tier in self.tiers)
        # The first tier when it is L1 (has peek/count_hit): the cache's hot path reads it alone.
        first = self.tiers[0] if self.tiers else None
        self.memory = first if first is not None and hasattr(first, "peek") else None
        self.memory_mask = self._masks[0] if self.memory is not None else None

    def memory_peek(self, key: str) -> CachedEntry | None:
        """L1's entry for ``key``, uncounted and not promoted (None: not in L1, or no L1).
        A hit served from it is counted with ``memory.count_hit()``."""
        memory, mask = self.memory, self.memory_mask
        if memory is None or (mask and key in mask):
            return None
        return memory.peek(key)  # type: ignore[no-any-return]

    # ----------------------------------------------------------------- sync face
    def get(self, key: str) -> tuple[CachedEntry, str] | None:
        """The first tier's entry for ``key``; tiers above the one that had it get a copy."""
        for index, tier in enumerate(self.tiers):
            mask = self._masks[index]
            if mask and key in mask:
                if not _try_delete(tier, key):
                    continue
                mask.discard(key)
                continue
            found: tuple[CachedEntry, str] | None = tier.get(key)
            if found is not None:
                for upper in range(index):
                    self._set_one(upper, key, found[0])
                return found
        return None

    def set(self, key: str, entry: CachedEntry) -> None:
        for index in range(len(self.tiers)):
            self._set_one(index, key, entry)

    def _set_one(self, index: int, key: str, entry: CachedEntry) -> None:
        mask = self._masks[index]
        if _try_set(self.tiers[index], key, entry):
            if mask:
                mask.discard(key)
        elif not _try_delete(self.tiers[index], key):
            mask.add(key)  # the tier may still hold an older entry: hide it

    def delete(self, key: str) -> None:
        for index, tier in enumerate(self.tiers):
            if _try_delete(tier, key):
                self._masks[index].discard(key)
            else:
                self._masks[index].add(key)

    # ----------------------------------------------------------------- async face
    async def aget(self, key: str) -> tuple[CachedEntry, str] | None:
        for index, tier in enumerate(self.tiers):
            mask = self._masks[index]
            if mask and key in mask:
                if not await _atry_delete(tier, key):
                    continue
                mask.discard(key)
                continue
            found: tuple[CachedEntry, str] | None = (
                tier.get(key) if self._in_process[index] else await tier.aget(key))
            if found is not None:
                for upper in range(index):
                    await self._aset_one(upper, key, found[0])
                return found
        return None

    async def aset(self, key: str, entry: CachedEntry) -> None:
        for index in range(len(self.tiers)):
            await self._aset_one(index, key, entry)

    async def _aset_one(self, index: int, key: str, entry: CachedEntry) -> None:
        if self._in_process[index]:
            self._set_one(index, key, entry)
            return
        mask = self._masks[index]
        if await _atry_set(self.tiers[index], key, entry):
            if mask:
                mask.discard(key)
        elif not await _atry_delete(self.tiers[index], key):
            mask.add(key)

    async def adelete(self, key: str) -> None:
        for index, tier in enumerate(self.tiers):
            if await _atry_delete(tier, key):
                self._masks[index].discard(key)
            else:
                self._masks[index].add(key)

    # ----------------------------------------------------------------- lifecycle
    def tier(self, name: str) -> Any:
        """The tier called ``name`` (``"memory"``, ``"redis"``, ``"disk"``), or None."""
        for tier in self.tiers:
            if tier.name == name:
                return tier
        return None

    def clear_local(self) -> None:
        """Drop every entry of the tiers kept on this host (L1, L3): the fleet's invalidation
        state they were checked against was lost. L2 is shared; its entries carry stamps the
        new state no longer matches."""
        for tier in self.tiers:
            clear = getattr(tier, "clear", None)
            if tier.name != "redis" and clear is not None and clear() is False:
                log.error("could not drop the entries of cache tier %s after Redis lost its "
                          "invalidation state; they may be stale until they expire", tier.name)

    def close(self) -> None:
        for tier in self.tiers:
            tier.close()


async def _atry_set(tier: Any, key: str, entry: CachedEntry) -> bool:
    atry_set = getattr(tier, "atry_set", None)
    if atry_set is None:
        await tier.aset(key, entry)
        return True
    return bool(await atry_set(key, entry))


async def _atry_delete(tier: Any, key: str) -> bool:
    atry_delete = getattr(tier, "atry_delete", None)
    if atry_delete is None:
        await tier.adelete(key)
        return True
    return bool(await atry_delete(key))
