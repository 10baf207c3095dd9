"""L1 specifics: byte bound with real footprints, per-entry cap, per-entry lifetime, LRU order."""

from __future__ import annotations

import sys

from hypothesis import given
from hypothesis import strategies as st

from scalekit.cache.entry import CachedEntry
from scalekit.cache.tiers.memory import ITEM_OVERHEAD_BYTES, MemoryTier, memory_footprint


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_entry(body: bytes = b"x", *, at: float = 1000.0, ttl: float = 60.0) -> CachedEntry:
    return CachedEntry(status=200, headers=(("content-type", "text/plain"),), body=body,
                       request_time=at, response_time=at, corrected_initial_age_seconds=0.0,
                       freshness_lifetime_seconds=ttl)


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


_header_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)


@given(headers=st.lists(st.tuples(_header_text, _header_text), max_size=8),
       body=st.binary(max_size=3000), key=st.text(max_size=60),
       tags=st.lists(st.tuples(st.text(max_size=20), st.integers(0, 2**40)), max_size=4),
       route=st.text(max_size=30), secondary=st.text(max_size=30))
def test_footprint_is_what_each_object_reports(headers: list[tuple[str, str]], body: bytes, key: str,
                                                tags: list[tuple[str, int]], route: str, secondary: str) -> None:
    """The computed footprint equals sys.getsizeof over every object the entry holds (ASCII,
    latin-1 and wider text alike, ints of every size), so the byte bound counts real memory."""
    entry = CachedEntry(status=200, headers=tuple(headers), body=body, request_time=1000.0,
                        response_time=1000.0, corrected_initial_age_seconds=0.0,
                        freshness_lifetime_seconds=60.0, tags=tuple(tags), route=route,
                        secondary_key=secondary)
    texts = [text for pair in headers for text in pair]
    walked = (sys.getsizeof(key) + sys.getsizeof(entry) + ITEM_OVERHEAD_BYTES + sys.getsizeof(body)
              + 8 * sys.getsizeof(0.0))  # its eight float fields
    if headers:
        walked += (sys.getsizeof(entry.headers) + sum(sys.getsizeof(pair) for pair in entry.headers)
                   + sum(map(sys.getsizeof, texts)))
    if tags:
        walked += (sys.getsizeof(entry.tags) + sum(sys.getsizeof(pair) for pair in entry.tags)
                   + sum(sys.getsizeof(part) for pair in entry.tags for part in pair))
    # The empty string and one-character strings are counted as shared singletons.
    walked += sum(sys.getsizeof(text) for text in (route, secondary) if len(text) > 1)
    assert memory_footprint(key, entry) == walked
