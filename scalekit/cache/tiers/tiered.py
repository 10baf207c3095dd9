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

import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ..entry import CachedEntry
from .base import KeyMask
from .plans import Either, Plan, arun, run

__all__ = ["TieredStore"]

log = logging.getLogger("scalekit.cache")

_FURTHER = object()  # L1 did not have it: ask the tiers after it


class _TierCalls:
    """One tier's calls as a plan yields them: its sync methods, and its asyncio ones unless it
    does no I/O (L1: called directly on either face, no coroutine each) or has no asyncio face.
    A tier without ``try_set``/``try_delete`` always succeeds at ``set``/``delete``."""

    __slots__ = ("_adelete", "_aget", "_aset", "_delete", "_get", "_set")

    def __init__(self, tier: Any) -> None:
        self._get, self._set, self._delete = tier.get, _trying(tier, "set"), _trying(tier, "delete")
        if getattr(tier, "in_process", False) or not hasattr(tier, "aget"):
            self._aget = self._aset = self._adelete = None
        else:
            self._aget, self._aset = tier.aget, _atrying(tier, "set")
            self._adelete = _atrying(tier, "delete")

    def get(self, key: str) -> Callable[[], Any]:
        return _call(self._get, self._aget, key)

    def set(self, key: str, entry: CachedEntry) -> Callable[[], Any]:
        return _call(self._set, self._aset, key, entry)

    def delete(self, key: str) -> Callable[[], Any]:
        return _call(self._delete, self._adelete, key)


def _call(sync: Callable[..., Any], asynchronous: Callable[..., Any] | None,
          *args: Any) -> Callable[[], Any]:
    if asynchronous is None:
        return functools.partial(sync, *args)
    return Either(functools.partial(sync, *args), functools.partial(asynchronous, *args))


def _trying(tier: Any, name: str) -> Callable[..., bool]:
    """``tier.try_<name>``, or ``tier.<name>`` reporting success."""
    trying = getattr(tier, f"try_{name}", None)
    if trying is not None:
        return trying  # type: ignore[no-any-return]
    method = getattr(tier, name)

    def done(*args: Any) -> bool:
        method(*args)
        return True
    return done


def _atrying(tier: Any, name: str) -> Callable[..., Awaitable[bool]]:
    trying = getattr(tier, f"atry_{name}", None)
    if trying is not None:
        return trying  # type: ignore[no-any-return]
    method = getattr(tier, f"a{name}")

    async def done(*args: Any) -> bool:
        await method(*args)
        return True
    return done


class TieredStore:
    """The Store the cache layer uses: tiers in lookup order (memory, redis, disk)."""

    def __init__(self, tiers: Sequence[Any]) -> None:
        self.tiers = tuple(tiers)
        self._masks = tuple(KeyMask() for _ in self.tiers)
        # Every lookup, store and delete is one plan over these, run by either face.
        self._calls = tuple(_TierCalls(tier) for tier in self.tiers)
        # 1 when the first tier does no I/O (L1): its lookups skip the plan.
        self._after_memory = int(bool(self.tiers) and getattr(self.tiers[0], "in_process", False))
        # L1 and exactly one tier after it (the default: L3): a miss past L1 asks that tier
        # directly, not through a plan (about 10 calls fewer on every miss).
        self._last = self._calls[-1] if self._after_memory and len(self.tiers) == 2 else None
        # The first tier when it is L1 (has peek/count_hit): the cache's hot path reads it alone.
        first = self.tiers[0] if self.tiers else None
        self.memory = first if first is not None and hasattr(first, "peek") else None
        self.memory_mask = self._masks[0] if self.memory is not None else None
        # Tiers after L1 to skip for a key marked hit-for-miss (see get_memory).
        self.has_tiers_past_memory = len(self.tiers) > self._after_memory
        # The largest entry some tier keeps: a larger response is stored nowhere, so the cache
        # must neither claim nor attempt it (None: a tier without a bound, or no tier at all).
        bounds: list[int | None] = [getattr(tier, "max_entry_bytes", None) for tier in self.tiers]
        known = [bound for bound in bounds if bound is not None]
        self.max_entry_bytes: int | None = None if len(known) < len(bounds) else max(known, default=0)

    def memory_peek(self, key: str) -> CachedEntry | None:
        """L1's entry for ``key``, uncounted and not promoted (None: not in L1, or no L1).
        A hit served from it is counted with ``memory.count_hit()``."""
        memory, mask = self.memory, self.memory_mask
        if memory is None or (mask and key in mask):
            return None
        return memory.peek(key)  # type: ignore[no-any-return]

    # L1 (a first tier that does no I/O) is asked directly on either face, and only the tiers
    # after it through a plan: most lookups end in L1, and a plan costs more than L1 itself
    # (one timeit run: a lookup 2 -> 5 us sync and 2.5 -> 8 us asyncio, a store 6 -> 13 us).
    def get(self, key: str) -> tuple[CachedEntry, str] | None:
        """The first tier's entry for ``key``; tiers above the one that had it get a copy."""
        found = self._memory_get(key)
        return run(self._get(key, self._after_memory)) if found is _FURTHER else found

    async def aget(self, key: str) -> tuple[CachedEntry, str] | None:
        found = self._memory_get(key)
        return await arun(self._get(key, self._after_memory)) if found is _FURTHER else found

    def get_memory(self, key: str) -> tuple[CachedEntry, str] | None:
        """L1's entry for ``key`` (counted), never the tiers after it: for a key marked
        hit-for-miss, whose last answer could not be stored, a Redis round trip or a disk lookup
        on every request would almost surely find nothing."""
        found = self._memory_get(key)
        return None if found is _FURTHER else found

    async def aget_memory(self, key: str) -> tuple[CachedEntry, str] | None:
        return self.get_memory(key)

    def memory_missed(self, key: str) -> None:
        """:meth:`get_memory` for a key :meth:`memory_peek` just found nothing under: L1's
        miss is counted, nothing else asked."""
        if self._after_memory:
            self.tiers[0].count_miss()

    async def amemory_missed(self, key: str) -> None:
        self.memory_missed(key)

    def get_past_memory(self, key: str) -> tuple[CachedEntry, str] | None:
        """:meth:`get` for a key :meth:`memory_peek` just found nothing under: L1's miss is
        counted, the tiers after it asked."""
        if self._after_memory:
            self.tiers[0].count_miss()
        last = self._last
        if last is not None and not self._masks[-1]:  # L1 and one tier (the defaults: L3)
            return self._promoted(key, last._get(key))
        return run(self._get(key, self._after_memory)) if len(self.tiers) > self._after_memory else None

    async def aget_past_memory(self, key: str) -> tuple[CachedEntry, str] | None:
        if self._after_memory:
            self.tiers[0].count_miss()
        last = self._last
        if last is not None and not self._masks[-1]:
            return self._promoted(key, await last._aget(key) if last._aget is not None else last._get(key))
        return await arun(self._get(key, self._after_memory)) if len(self.tiers) > self._after_memory else None

    def _promoted(self, key: str, found: tuple[CachedEntry, str] | None) -> tuple[CachedEntry, str] | None:
        """``found`` by the tier after L1, copied up into L1 (what ``_get`` does for any tier)."""
        if found is not None:
            self._memory_set(key, found[0])
        return found

    def set(self, key: str, entry: CachedEntry) -> None:
        if self._memory_set(key, entry):
            last = self._last
            if last is None:
                run(self._set(key, entry))
            else:  # what _set_one does, without a plan
                written = last._set(key, entry)
                self._mask_last(key, written, written or last._delete(key))

    async def aset(self, key: str, entry: CachedEntry) -> None:
        if self._memory_set(key, entry):
            last = self._last
            if last is None or last._aset is None or last._adelete is None:
                await arun(self._set(key, entry))
            else:
                written = await last._aset(key, entry)
                self._mask_last(key, written, written or await last._adelete(key))

    def _mask_last(self, key: str, written: bool, gone: bool) -> None:
        """As ``_set_one``: a key written is unmasked; one neither written nor deleted (the
        tier may still hold an older entry) is masked."""
        mask = self._masks[-1]
        if written:
            if mask:
                mask.discard(key)
        elif not gone:
            mask.add(key)

    def delete(self, key: str) -> None:
        if self._memory_delete(key):
            run(self._delete(key))

    async def adelete(self, key: str) -> None:
        if self._memory_delete(key):
            await arun(self._delete(key))

    def _memory_get(self, key: str) -> Any:
        """L1's entry for ``key``; ``_FURTHER`` when the tiers after it must be asked."""
        if not self._after_memory:
            return _FURTHER
        mask = self._masks[0]
        if mask and key in mask:
            self.tiers[0].delete(key)  # L1's delete cannot fail
            mask.discard(key)
            found = None
        else:
            found = self.tiers[0].get(key)
        return _FURTHER if found is None and len(self.tiers) > 1 else found

    def _memory_set(self, key: str, entry: CachedEntry) -> bool:
        """Store in L1; whether tiers after it remain."""
        if self._after_memory:
            self.tiers[0].set(key, entry)
            if self._masks[0]:
                self._masks[0].discard(key)
        return len(self.tiers) > self._after_memory

    def _memory_delete(self, key: str) -> bool:
        if self._after_memory:
            self.tiers[0].delete(key)
            self._masks[0].discard(key)
        return len(self.tiers) > self._after_memory

    # ----------------------------------------------------------------- plans
    def _get(self, key: str, first: int) -> Plan[tuple[CachedEntry, str] | None]:
        for index in range(first, len(self.tiers)):
            calls, mask = self._calls[index], self._masks[index]
            if mask and key in mask:
                if (yield calls.delete(key)):
                    mask.discard(key)
                continue
            found: tuple[CachedEntry, str] | None = yield calls.get(key)
            if found is not None:
                for upper in range(index):
                    yield from self._set_one(upper, key, found[0])
                return found
        return None

    def _set(self, key: str, entry: CachedEntry) -> Plan[None]:
        for index in range(self._after_memory, len(self.tiers)):
            yield from self._set_one(index, key, entry)

    def _set_one(self, index: int, key: str, entry: CachedEntry) -> Plan[None]:
        calls, mask = self._calls[index], self._masks[index]
        if (yield calls.set(key, entry)):
            if mask:
                mask.discard(key)
        elif not (yield calls.delete(key)):
            mask.add(key)  # the tier may still hold an older entry: hide it

    def _delete(self, key: str) -> Plan[None]:
        for index in range(self._after_memory, len(self.tiers)):
            if (yield self._calls[index].delete(key)):
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

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Wait until the writes this process queued for a tier (L3's writer thread) are done:
        before another process must find them, or in a test; False on timeout."""
        return all(tier.flush(timeout) for tier in self.tiers if hasattr(tier, "flush"))

    def close(self) -> None:
        for tier in self.tiers:
            tier.close()

