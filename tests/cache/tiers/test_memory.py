"""L1 specifics: byte bound with real footprints, per-entry cap, per-entry lifetime, LRU order."""

from __future__ import annotations

from scalekit.cache.entry import CachedEntry
from scalekit.cache.tiers.memory import MemoryTier, memory_footprint


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_entry(body: bytes = b"x", *, at: float = 1000.0, ttl: float = 60.0) -> CachedEntry:
    return CachedEntry(200, (("content-type", "text/plain"),), body, at, at, 0.0, ttl)


def test_byte_bound_holds_and_evicts_least_recently_used() -> None:
    clock = FakeClock()
    one = memory_footprint("k0", make_entry(b"a" * 1000))
    tier = MemoryTier(max_bytes=one * 3, max_entry_bytes=one * 2, clock=clock, retain_stale_seconds=0)
    for index in range(3):
        tier.set(f"k{index}", make_entry(b"a" * 1000))
    assert tier.get("k0") is not None  # k0 now most recently used
    tier.set("k3", make_entry(b"a" * 1000))
    assert tier.get("k1") is None
    assert tier.get("k0") is not None and tier.get("k3") is not None
    assert tier.current_bytes <= tier.max_bytes
    assert tier.evictions == 1


def test_entry_above_cap_is_not_kept_and_replaces_nothing_else() -> None:
    tier = MemoryTier(max_bytes=100_000, max_entry_bytes=2_000, clock=FakeClock())
    tier.set("small", make_entry(b"s"))
    tier.set("big", make_entry(b"b" * 5_000))
    assert tier.get("big") is None
    assert tier.get("small") is not None


def test_oversized_rewrite_drops_the_old_entry() -> None:
    tier = MemoryTier(max_bytes=100_000, max_entry_bytes=2_000, clock=FakeClock())
    tier.set("k", make_entry(b"s"))
    tier.set("k", make_entry(b"b" * 5_000))
    assert tier.get("k") is None


def test_entry_expires_after_its_usable_life_plus_retention() -> None:
    clock = FakeClock()
    tier = MemoryTier(max_bytes=100_000, clock=clock, retain_stale_seconds=10)
    tier.set("k", make_entry(ttl=60))
    clock.now = 1069.0
    assert tier.get("k") is not None
    clock.now = 1070.0
    assert tier.get("k") is None
    assert len(tier) == 0 or "k" not in tier


def test_delete_and_clear() -> None:
    tier = MemoryTier(max_bytes=100_000, clock=FakeClock())
    tier.set("a", make_entry())
    tier.set("b", make_entry())
    tier.delete("a")
    assert tier.get("a") is None and tier.get("b") is not None
    tier.clear()
    assert tier.current_bytes == 0 and len(tier) == 0
