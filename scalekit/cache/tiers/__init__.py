"""Cache tiers: L1 memory, L2 Redis, L3 disk, behind one Store contract.

The cache layer calls only the factories here; what they build follows the config:
``cache.memory`` and ``cache.disk`` (under ``state_dir``) always, ``cache.l2`` once
``redis.url`` is set; generations persisted under ``state_dir`` (shared by the processes of the
host) and, with Redis, shared by the fleet through ``cache.invalidation.channel``.

>>> from scalekit.config import load_config
>>> from scalekit.runtime import Runtime
>>> runtime = Runtime(load_config({"cache": {"disk": {"enabled": False}}}, environ={}, cwd="/nonexistent"))
>>> build_store(runtime).get("missing") is None
True
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...metrics import instruments
from ..codec import Codec
from ..generations import LocalGenerations
from ..hostgenerations import HostGenerations
from ..invalidation import InvalidationResult
from ..store import Generations, Store
from .breaker import CircuitBreaker
from .disk import DiskTier
from .memory import MemoryTier
from .tiered import TieredStore

if TYPE_CHECKING:  # lease.py needs redis-py, an optional extra: imported only with redis.url
    from .lease import Leases

__all__ = [
    "DiskTier",
    "MemoryTier",
    "TieredStore",
    "build_generations",
    "build_invalidator",
    "build_leases",
    "build_store",
    "generations_path",
    "redis_connections",
]


def state_path(runtime: Any, *parts: str) -> Path:
    """A path under ``Config.state_dir`` (absolute parts are kept as they are)."""
    return Path(runtime.config.state_dir).joinpath(*parts)


def codec_for(runtime: Any) -> Codec:
    """The codec of L2 and L3: compression threshold and signing secret from ``cache.l2``."""
    cache = runtime.config.cache
    l2 = cache.l2
    secret = l2.signing_secret.encode("utf-8") if l2.signing_secret else None
    # Inflating stops past the largest entry a tier keeps or a stored body can make.
    largest = max(l2.max_entry_bytes, cache.disk.max_entry_bytes, cache.max_body_bytes + 1024 * 1024)
    return Codec(compress_min_bytes=l2.compress_min_bytes, secret=secret, max_payload_bytes=largest)


def redis_connections(runtime: Any) -> Any:
    """The runtime's shared Redis clients, or None without ``redis.url``."""
    if runtime.config.redis.url is None:
        return None
    connections = runtime.services.get("redis.connections")
    if connections is None:
        from .redis import RedisConnections

        connections = RedisConnections(runtime.config.redis, monotonic=runtime.monotonic)
        runtime.services["redis.connections"] = connections
        # A tier that would fail on every call is an error in the log, never a silent miss.
        runtime.on_startup(connections.report_start_up)
        runtime.on_shutdown(connections.close)
        # ASGI lifespan shutdown awaits this on the app's loop, closing that loop's asyncio
        # client (left open, its connections warn when collected); a no-op from sync close().
        runtime.on_shutdown(connections.aclose)
    return connections


def build_store(runtime: Any) -> Store:
    """The tiered store for ``runtime``: memory -> Redis (if configured) -> disk."""
    cache = runtime.config.cache
    codec = codec_for(runtime)
    tiers: list[Any] = []
    if cache.memory.enabled and cache.memory.max_bytes > 0:
        tiers.append(MemoryTier(max_bytes=cache.memory.max_bytes,
                                max_entry_bytes=cache.memory.max_entry_bytes,
                                clock=runtime.clock,
                                retain_stale_seconds=cache.memory.retain_stale_seconds))
    connections = redis_connections(runtime) if cache.l2.enabled else None
    if connections is not None:
        from .redis import RedisTier

        tiers.append(RedisTier(connections, codec=codec, clock=runtime.clock,
                               max_entry_bytes=cache.l2.max_entry_bytes,
                               retain_stale_seconds=cache.l2.retain_stale_seconds))
    if cache.disk.enabled and cache.disk.max_bytes > 0:
        breaker = CircuitBreaker("disk", cool_down_seconds=runtime.config.redis.circuit_cool_down_seconds,
                                 monotonic=runtime.monotonic)
        tiers.append(DiskTier(state_path(runtime, cache.disk.path), max_bytes=cache.disk.max_bytes,
                              max_entry_bytes=cache.disk.max_entry_bytes, codec=codec,
                              clock=runtime.clock,
                              retain_stale_seconds=cache.disk.retain_stale_seconds,
                              breaker=breaker))
    store = TieredStore(tiers)
    runtime.services["cache.store"] = store
    runtime.on_shutdown(store.close)
    return store


def generations_path(config: Any) -> Path:
    """The host's generations file (under ``state_dir``, beside L3)."""
    return Path(config.state_dir, config.cache.disk.path, "generations.sqlite3")


def build_generations(runtime: Any) -> Generations:
    """Tag generations: persisted for the host when L3 is on, fleet-wide with Redis."""
    cache = runtime.config.cache
    invalidation = cache.invalidation
    local: LocalGenerations
    if cache.disk.enabled:
        local = HostGenerations(generations_path(runtime.config),
                                ack_timeout_seconds=invalidation.ack_timeout_seconds)
    else:
        local = LocalGenerations()
    generations: Any = local
    connections = redis_connections(runtime) if invalidation.enabled else None
    if connections is not None:
        from .fleet import FleetGenerations

        generations = FleetGenerations(
            local, connections, channel=invalidation.channel,
            max_staleness_seconds=invalidation.max_staleness_seconds,
            heartbeat_seconds=invalidation.heartbeat_seconds,
            ack_timeout_seconds=invalidation.ack_timeout_seconds, monotonic=runtime.monotonic)
        store = runtime.services.get("cache.store")
        if isinstance(store, TieredStore):
            generations.add_lost_track_hook(store.clear_local)
    runtime.services["cache.generations"] = generations
    runtime.on_startup(generations.sequence)  # starts the listener / watcher thread
    runtime.on_shutdown(generations.close)
    return generations  # type: ignore[no-any-return]


def build_leases(runtime: Any) -> Leases | None:
    """Fleet-wide miss coalescing, when ``cache.l2.coalesce`` is on and Redis is configured."""
    if not runtime.config.cache.l2.coalesce:
        return None
    connections = redis_connections(runtime)
    if connections is None:
        return None
    from .lease import Leases

    leases = Leases(connections, lease_seconds=runtime.config.cache.l2.lease_seconds)
    runtime.services["cache.leases"] = leases
    return leases


Invalidate = Callable[[tuple[str, ...], str], InvalidationResult]
AInvalidate = Callable[[tuple[str, ...], str], Awaitable[InvalidationResult]]


def build_invalidator(generations: Generations) -> tuple[Invalidate, AInvalidate]:
    """``(fn, afn)`` for ``runtime.add_invalidator``: bump generations, count by source."""

    def invalidate(tags: tuple[str, ...], source: str) -> InvalidationResult:
        result = generations.invalidate(tags)
        instruments.CACHE_INVALIDATIONS.labels(source).inc()
        return result

    async def ainvalidate(tags: tuple[str, ...], source: str) -> InvalidationResult:
        result = await generations.ainvalidate(tags)
        instruments.CACHE_INVALIDATIONS.labels(source).inc()
        return result

    return invalidate, ainvalidate
