"""One tier contract, run against every tier: memory, Redis, Redis Cluster, disk, and all three.

The Redis servers run with CONFIG and CLIENT renamed away (like managed Redis), so passing
here also shows that no tier ever sends them.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scalekit.cache.codec import Codec
from scalekit.cache.entry import CachedEntry
from scalekit.cache.tiers.disk import DiskTier
from scalekit.cache.tiers.memory import MemoryTier
from scalekit.cache.tiers.redis import RedisConnections, RedisTier
from scalekit.cache.tiers.tiered import TieredStore
from scalekit.config import RedisConfig

from .conftest import FakeClock

TIERS = ["memory", "redis", "cluster", "disk", "tiered"]


def make_entry(clock: FakeClock, body: bytes = b"hello", *, ttl: float = 60.0, **fields: Any) -> CachedEntry:
    return CachedEntry(status=200, headers=(("content-type", "text/plain"), ("etag", '"abc"')),
                       body=body, request_time=clock.now, response_time=clock.now,
                       corrected_initial_age_seconds=0.0, freshness_lifetime_seconds=ttl, **fields)


@pytest.fixture(params=[pytest.param(name, marks=[pytest.mark.redis] if "redis" in name
                                     or name in ("cluster", "tiered") else [])
                        for name in TIERS])
def tier(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock) -> Iterator[Any]:
    name = request.param
    codec = Codec(compress_min_bytes=512, secret=b"contract-secret-0123456789")
    built: list[Any] = []
    connections: list[RedisConnections] = []

    def redis_tier(url: str, cluster: bool = False) -> RedisTier:
        prefix = f"contract:{request.node.name}:"
        connection = RedisConnections(RedisConfig(url=url, cluster=cluster, key_prefix=prefix,
                                                  socket_timeout_seconds=1.0))
        connections.append(connection)
        return RedisTier(connection, codec=codec, clock=clock, retain_stale_seconds=0)

    if name == "memory":
        built.append(MemoryTier(max_bytes=1_000_000, clock=clock, retain_stale_seconds=0))
    elif name == "redis":
        built.append(redis_tier(request.getfixturevalue("redis_server").url))
    elif name == "cluster":
        built.append(redis_tier(request.getfixturevalue("redis_cluster").url, cluster=True))
    elif name == "disk":
        built.append(DiskTier(tmp_path, max_bytes=1_000_000, codec=codec, clock=clock,
                              retain_stale_seconds=0))
    else:
        built.append(TieredStore([
            MemoryTier(max_bytes=1_000_000, clock=clock, retain_stale_seconds=0),
            redis_tier(request.getfixturevalue("redis_server").url),
            DiskTier(tmp_path, max_bytes=1_000_000, codec=codec, clock=clock, retain_stale_seconds=0),
        ]))
    yield built[0]
    built[0].close()
    for connection in connections:
        connection.close()


def test_missing_key_is_a_miss(tier: Any) -> None:
    assert tier.get("nothing-here") is None


def test_set_then_get_returns_an_equal_entry_and_the_tier_name(tier: Any, clock: FakeClock) -> None:
    entry = make_entry(clock)
    tier.set("k", entry)
    found = tier.get("k")
    assert found is not None
    assert found[0] == entry
    assert found[1] in ("memory", "redis", "disk")


def test_every_field_survives_including_ones_added_later(tier: Any, clock: FakeClock) -> None:
    values: dict[str, Any] = {}
    for field in dataclasses.fields(CachedEntry):
        if field.type in ("bool", bool):
            values[field.name] = True
        elif field.type in ("str", str):
            values[field.name] = f"value-of-{field.name}"
    entry = make_entry(clock, b"\x00\xff" * 700, stale_while_revalidate_seconds=5.0,
                       tags=(("product:1", 3), ("table:items", 0)), vary=("accept-encoding",),
                       **{name: value for name, value in values.items()
                          if name not in ("vary",)})
    tier.set("k", entry)
    found = tier.get("k")
    assert found is not None and found[0] == entry


def test_set_replaces_and_delete_removes(tier: Any, clock: FakeClock) -> None:
    tier.set("k", make_entry(clock, b"one"))
    tier.set("k", make_entry(clock, b"two"))
    found = tier.get("k")
    assert found is not None and found[0].body == b"two"
    tier.delete("k")
    assert tier.get("k") is None
    tier.delete("k")  # deleting a missing key is fine


@pytest.mark.parametrize("keys", [
    pytest.param(("GET https://a.example/x", "GET https://b.example/x"), id="hosts differ"),
    pytest.param(("k", "k\x00"), id="trailing NUL"),
    pytest.param(("/ü", "/u"), id="non-ascii"),
    pytest.param(("x" * 5000, "x" * 4999 + "y"), id="long keys differing at the end"),
])
def test_distinct_keys_never_share_an_entry(tier: Any, clock: FakeClock, keys: tuple[str, str]) -> None:
    first, second = keys
    tier.set(first, make_entry(clock, b"first"))
    assert tier.get(second) is None
    tier.set(second, make_entry(clock, b"second"))
    assert tier.get(first)[0].body == b"first"
    assert tier.get(second)[0].body == b"second"


def test_entry_is_gone_after_its_usable_life(tier: Any, clock: FakeClock) -> None:
    tier.set("k", make_entry(clock, ttl=10.0, stale_if_error_seconds=5.0))
    clock.advance(14.0)
    assert tier.get("k") is not None  # stale-if-error still needs it
    clock.advance(1.0)
    assert tier.get("k") is None


def test_already_expired_entry_is_not_stored(tier: Any, clock: FakeClock) -> None:
    entry = make_entry(clock, ttl=10.0)
    clock.advance(20.0)
    tier.set("k", entry)
    assert tier.get("k") is None


def test_async_face_matches_the_sync_face(tier: Any, clock: FakeClock) -> None:
    async def scenario() -> None:
        entry = make_entry(clock, b"async")
        await tier.aset("k", entry)
        found = await tier.aget("k")
        assert found is not None and found[0] == entry
        assert tier.get("k")[0] == entry
        await tier.adelete("k")
        assert await tier.aget("k") is None
        for connections in _connections_of(tier):
            await connections.aclose()

    asyncio.run(scenario())


def _connections_of(tier: Any) -> list[RedisConnections]:
    tiers = getattr(tier, "tiers", (tier,))
    return [t.connections for t in tiers if isinstance(t, RedisTier)]
