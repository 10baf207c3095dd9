"""Fleet-wide coalescing leases: one holder, expiry frees a dead holder's key, faults never block."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from scalekit.cache.tiers.lease import Leases
from scalekit.cache.tiers.redis import RedisConnections
from scalekit.config import RedisConfig

from .servers import RedisServer

pytestmark = pytest.mark.redis


@pytest.fixture()
def leases(redis_server: RedisServer, request: pytest.FixtureRequest) -> Iterator[Leases]:
    config = RedisConfig(url=redis_server.url, key_prefix=f"lease:{request.node.name}:",
                         socket_timeout_seconds=1.0)
    # Long enough that a loaded machine never lets a lease expire mid-test, unless the test
    # is about expiry and asks for a short one.
    lease_seconds = getattr(request, "param", 30.0)
    built = Leases(RedisConnections(config), lease_seconds=lease_seconds, poll_seconds=0.005)
    yield built
    built.connections.close()


def test_only_one_instance_holds_a_key(leases: Leases) -> None:
    first = leases.acquire("k")
    assert first is not None and first.shared
    assert leases.acquire("k") is None  # another instance (or request) must wait or go stale
    assert leases.acquire("other") is not None
    leases.release(first)
    assert leases.acquire("k") is not None


@pytest.mark.parametrize("leases", [0.3], indirect=True)
def test_dead_holder_never_blocks_past_the_lease(leases: Leases) -> None:
    assert leases.acquire("k") is not None  # the holder "dies": never releases
    assert leases.wait_release("k", timeout_seconds=10.0)  # returns once the lease expires
    assert leases.acquire("k") is not None


@pytest.mark.parametrize("leases", [0.3], indirect=True)
def test_an_expired_holder_cannot_release_the_next_holders_lease(leases: Leases) -> None:
    stale = leases.acquire("k")
    assert stale is not None
    time.sleep(0.35)  # the lease's own expiry, in Redis time
    current = leases.acquire("k")
    assert current is not None
    leases.release(stale)
    assert leases.is_held("k")
    leases.release(current)
    assert not leases.is_held("k")


def test_redis_down_means_compute_it_yourself() -> None:
    leases = Leases(RedisConnections(RedisConfig(url="redis://127.0.0.1:1/0")))
    lease = leases.acquire("k")
    assert lease is not None and not lease.shared
    leases.release(lease)
    assert leases.wait_release("k", timeout_seconds=1.0)


def test_async_twins(leases: Leases) -> None:
    async def scenario() -> None:
        lease = await leases.aacquire("k")
        assert lease is not None and await leases.aacquire("k") is None
        await leases.arelease(lease)
        assert await leases.await_release("k", timeout_seconds=1.0)
        await leases.connections.aclose()

    asyncio.run(scenario())
