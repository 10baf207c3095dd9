"""The tiered store: lookup order, promotion upward, and no resurrection after a missed write."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from scalekit.cache.codec import Codec
from scalekit.cache.entry import CachedEntry
from scalekit.cache.tiers.disk import DiskTier
from scalekit.cache.tiers.memory import MemoryTier
from scalekit.cache.tiers.redis import RedisConnections, RedisTier
from scalekit.cache.tiers.tiered import TieredStore
from scalekit.config import RedisConfig

from .conftest import FakeClock
from .servers import TcpProxy

pytestmark = pytest.mark.redis


def make_entry(clock: FakeClock, body: bytes = b"hello") -> CachedEntry:
    return CachedEntry(status=200, headers=(("content-type", "text/plain"),), body=body,
                       request_time=clock.now, response_time=clock.now,
                       corrected_initial_age_seconds=0.0, freshness_lifetime_seconds=60.0)


@pytest.fixture()
def store(redis_proxy: TcpProxy, tmp_path: Path, clock: FakeClock,
          request: pytest.FixtureRequest) -> Iterator[TieredStore]:
    config = RedisConfig(url=redis_proxy.url, key_prefix=f"tiered:{request.node.name}:",
                         socket_timeout_seconds=0.5, circuit_cool_down_seconds=5.0)
    codec = Codec()
    tiered = TieredStore([
        MemoryTier(max_bytes=1_000_000, clock=clock, retain_stale_seconds=0),
        RedisTier(RedisConnections(config, monotonic=clock), codec=codec, clock=clock,
                  retain_stale_seconds=0),
        DiskTier(tmp_path, codec=codec, clock=clock, retain_stale_seconds=0),
    ])
    yield tiered
    tiered.close()
    tiered.tier("redis").connections.close()


def test_write_goes_to_every_tier(store: TieredStore, clock: FakeClock) -> None:
    store.set("k", make_entry(clock))
    for name in ("memory", "redis", "disk"):
        assert store.tier(name).get("k") is not None, name


def test_redis_hit_is_promoted_to_memory(store: TieredStore, clock: FakeClock) -> None:
    store.set("k", make_entry(clock))
    store.tier("memory").clear()
    assert store.get("k")[1] == "redis"
    assert store.get("k")[1] == "memory"


def test_disk_hit_is_promoted_to_memory_and_redis(store: TieredStore, clock: FakeClock) -> None:
    store.set("k", make_entry(clock))
    store.tier("memory").clear()
    store.tier("redis").delete("k")
    assert store.get("k")[1] == "disk"
    assert store.tier("redis").get("k") is not None
    assert store.get("k")[1] == "memory"


def test_write_missed_by_redis_never_resurfaces_the_old_entry(
        store: TieredStore, redis_proxy: TcpProxy, clock: FakeClock) -> None:
    store.set("k", make_entry(clock, b"old"))
    redis_proxy.cut()
    store.set("k", make_entry(clock, b"new"))  # memory and disk take it; Redis keeps "old"
    redis_proxy.restore()
    clock.advance(6.0)  # past the breaker's cool-down
    store.tier("memory").clear()
    store.tier("disk").delete("k")
    assert store.get("k") is None  # "old" in Redis is masked, then deleted on this lookup
    assert store.tier("redis").get("k") is None


def test_delete_missed_by_redis_never_resurfaces_the_entry(
        store: TieredStore, redis_proxy: TcpProxy, clock: FakeClock) -> None:
    store.set("k", make_entry(clock))
    redis_proxy.cut()
    store.delete("k")
    assert store.get("k") is None
    redis_proxy.restore()
    clock.advance(6.0)
    assert store.get("k") is None
    store.set("k", make_entry(clock, b"again"))
    assert store.get("k")[0].body == b"again"


def test_redis_down_keeps_memory_and_disk_working(
        store: TieredStore, redis_proxy: TcpProxy, clock: FakeClock) -> None:
    redis_proxy.cut()
    store.set("k", make_entry(clock))
    assert store.get("k")[1] == "memory"
    store.tier("memory").clear()
    assert store.get("k")[1] == "disk"


def test_async_face_promotes_too(store: TieredStore, clock: FakeClock) -> None:
    import asyncio

    async def scenario() -> None:
        await store.aset("k", make_entry(clock))
        store.tier("memory").clear()
        assert (await store.aget("k"))[1] == "redis"
        assert (await store.aget("k"))[1] == "memory"
        await store.adelete("k")
        assert await store.aget("k") is None
        await store.tier("redis").connections.aclose()

    asyncio.run(scenario())
