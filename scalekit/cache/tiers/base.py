"""What every tier shares: the tier protocol, how long an entry is kept, per-tier metrics.

A tier is a :class:`~scalekit.cache.store.Store` plus a name (its ``get`` returns the entry and
that name); :class:`TieredStore
<scalekit.cache.tiers.tiered.TieredStore>` chains them. Tiers never raise to their caller: a
fault is a miss (or a skipped write) and a metric.

>>> from scalekit.cache.entry import CachedEntry
>>> entry = CachedEntry(status=200, headers=(), body=b"", request_time=100.0, response_time=100.0,
...                     corrected_initial_age_seconds=0.0, freshness_lifetime_seconds=60.0,
...                     stale_if_error_seconds=30.0)
>>> kept_until(entry, retain_stale_seconds=10.0)
200.0
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Protocol

from ...metrics import instruments
from ..entry import CachedEntry
from ..store import Store

__all__ = ["MAX_MASKED_KEYS", "KeyMask", "SizedTierMetrics", "Tier", "TierMetrics", "kept_until"]

MAX_MASKED_KEYS = 10_000


def kept_until(entry: CachedEntry, *, retain_stale_seconds: float) -> float:
    """The wall-clock time after which no tier needs ``entry`` any more.

    RFC 9111 §4.2.3: current_age = corrected_initial_age + (now - response_time), so the entry
    is fresh until response_time - corrected_initial_age + freshness_lifetime; stale-while-
    revalidate / stale-if-error (RFC 5861) extend its use, and ``retain_stale_seconds`` keeps it
    a little longer so a stale entry with validators can still be revalidated (304).
    """
    fresh_until = (entry.response_time - entry.corrected_initial_age_seconds
                   + entry.freshness_lifetime_seconds)
    stale_use = max(entry.stale_while_revalidate_seconds, entry.stale_if_error_seconds, 0.0)
    return fresh_until + stale_use + retain_stale_seconds


class KeyMask(OrderedDict[str, None]):
    """Keys whose newest write or delete a tier missed, so it may still hold an older entry
    for them (oldest dropped past ``MAX_MASKED_KEYS``).

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


class Tier(Store, Protocol):
    """One storage level: a ``Store`` with a name that can be closed."""

    name: str

    def close(self) -> None: ...


class TierMetrics:
    """Pre-bound Prometheus children for one tier, so the hot path does no label lookups."""

    __slots__ = (
        "bypass",
        "circuit",
        "corrupt",
        "error",
        "hit",
        "miss",
        "store_error",
        "stored",
        "too_large",
    )

    def __init__(self, tier: str) -> None:
        self.hit = instruments.CACHE_LOOKUPS.labels(tier, "hit")
        self.miss = instruments.CACHE_LOOKUPS.labels(tier, "miss")
        self.error = instruments.CACHE_LOOKUPS.labels(tier, "error")
        # Skipped without asking: the tier's circuit breaker is open.
        self.bypass = instruments.CACHE_LOOKUPS.labels(tier, "bypass")
        # A garbled, unknown-version or badly signed entry: a miss, counted apart.
        self.corrupt = instruments.CACHE_LOOKUPS.labels(tier, "corrupt")
        self.stored = instruments.CACHE_STORES.labels(tier, "ok")
        self.store_error = instruments.CACHE_STORES.labels(tier, "error")
        self.too_large = instruments.CACHE_STORES.labels(tier, "too_large")
        self.circuit = instruments.CACHE_CIRCUIT_OPEN.labels(tier)


class SizedTierMetrics(TierMetrics):
    """:class:`TierMetrics` of a tier that knows what it holds (L1, L3): its bytes, entries and
    evictions too. Redis keeps those itself (``INFO``): an L2 series here would read 0 on every
    instance, and a dashboard or the status page would show a full L2 as empty."""

    __slots__ = ("bytes", "entries", "evicted")

    def __init__(self, tier: str) -> None:
        super().__init__(tier)
        self.evicted = instruments.CACHE_EVICTIONS.labels(tier)
        self.bytes = instruments.tier_gauge(instruments.CACHE_BYTES, tier)
        self.entries = instruments.tier_gauge(instruments.CACHE_ENTRIES, tier)
