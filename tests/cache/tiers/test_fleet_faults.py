"""Fleet invalidation under faults, against a real Redis reached through proxies the test controls.

Each instance is a FleetGenerations with its own connections and listener thread, as in separate
processes; the same faults with real servers are in tests/faults/. What is held:

- an invalidation made while Redis stalls is never undone by later ones (the sequence numbers of
  offline invalidations never collide with the fleet's);
- ``invalidate()`` says how far it reached, and "acknowledged" means every live instance has
  applied it;
- an instance that cannot hear the log (cut, stalled, blackholed) stops trusting its local
  entries after ``max_staleness_seconds``, and trusts them again only once caught up.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

import pytest
from prometheus_client import REGISTRY

from scalekit.cache.generations import LocalGenerations
from scalekit.cache.invalidation import InvalidationResult
from scalekit.cache.tiers.fleet import FleetGenerations
from scalekit.cache.tiers.redis import RedisConnections
from scalekit.config import RedisConfig

from .servers import RedisServer, TcpProxy, running_redis, wait_until

pytestmark = [pytest.mark.redis, pytest.mark.slow]

WAIT_SECONDS = 20.0



class Fleet:
    """Instances on one Redis (each through the URL it is given), closed at the end."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.instances: list[FleetGenerations] = []

    def instance(self, url: str, *, socket_timeout_seconds: float = 0.05,
                 max_staleness_seconds: float = 2.0,
                 monotonic: Callable[[], float] = time.monotonic) -> FleetGenerations:
        config = RedisConfig(url=url, key_prefix=self.prefix,
                             socket_timeout_seconds=socket_timeout_seconds,
                             connect_timeout_seconds=0.2, circuit_cool_down_seconds=0.2)
        generations = FleetGenerations(LocalGenerations(), RedisConnections(config),
                                       max_staleness_seconds=max_staleness_seconds,
                                       heartbeat_seconds=0.05, monotonic=monotonic,
                                       ack_timeout_seconds=1.0)
        self.instances.append(generations)
        assert generations.wait_connected(WAIT_SECONDS)
        return generations

    def close(self) -> None:
        for generations in self.instances:
            generations.close()
            generations.connections.close()


@pytest.fixture()
def fleet(request: pytest.FixtureRequest) -> Iterator[Fleet]:
    built = Fleet(f"faults:{request.node.name}:{time.monotonic_ns()}:")
    yield built
    built.close()


@pytest.fixture()
def second_proxy(redis_server: RedisServer) -> Iterator[TcpProxy]:
    proxy = TcpProxy(redis_server.port)
    yield proxy
    proxy.close()


def stall_and_invalidate(writer: FleetGenerations, proxy: TcpProxy, *tag_lists: list[str],
                         while_silent: Callable[[], None] = lambda: None) -> None:
    """Redis silent for the writer (~0.3 s): its invalidations are applied here and queued;
    ``while_silent`` runs after them, before Redis answers again (nothing can be replayed yet)."""
    proxy.stall()
    try:
        for tags in tag_lists:
            result = writer.invalidate(tags)
            assert isinstance(result, InvalidationResult)
            assert result.reach == "process" and result.queued and not result.acknowledged
        while_silent()
        time.sleep(0.3)
    finally:
        proxy.restore()


def pending() -> float:
    return REGISTRY.get_sample_value("scalekit_cache_invalidations_pending") or 0.0


def test_writes_after_a_stall_are_each_followed_by_a_fresh_read(
        fleet: Fleet, redis_proxy: TcpProxy, caplog: pytest.LogCaptureFixture) -> None:
    """The issue's first report: after one stall, every write was followed by a stale read."""
    writer = fleet.instance(redis_proxy.url)
    before = pending()
    queued: list[float] = []
    with caplog.at_level(logging.WARNING, logger="scalekit.cache"):
        # Read while Redis is silent: once it answers, the listener may replay both at once.
        stall_and_invalidate(writer, redis_proxy, ["other"], ["page"], while_silent=lambda: queued.append(pending()))
    warned = [r for r in caplog.records if "could not reach Redis" in r.getMessage()]
    assert len(warned) == 1  # the first queued invalidation warns, not each one
    assert queued == [before + 2]  # both queued
    wait_until(lambda: pending() == before, "the queue to reach the fleet")
    wait_until(lambda: writer.invalidate(["probe"]).reach == "fleet", "Redis to be usable again")
    for _ in range(8):
        stamp = writer.stamp(["page"], writer.sequence())  # the page stored after the last write
        assert stamp is not None and writer.is_current(stamp)
        result = writer.invalidate(["page"])  # the next write
        assert result.reach == "fleet"
        assert not writer.is_current(stamp), "the page written before this write is served"


def test_invalidations_elsewhere_after_a_stall_still_apply_here(
        fleet: Fleet, redis_server: RedisServer, redis_proxy: TcpProxy) -> None:
    stalled = fleet.instance(redis_proxy.url)
    other = fleet.instance(redis_server.url)
    stall_and_invalidate(stalled, redis_proxy, ["other"], ["page"])
    wait_until(lambda: not other.is_current((("page", other.local.generation("page") - 1),))
               and other.local.generation("page") > 0, "the queued invalidation to reach the fleet")
    for _ in range(5):
        stamp = stalled.stamp(["page"], stalled.sequence())
        assert stamp is not None
        result = other.invalidate(["page"])
        assert result.acknowledged, result
        assert not stalled.is_current(stamp), "an invalidation from elsewhere was ignored"


def test_acknowledged_means_every_live_instance_applied_it(
        fleet: Fleet, redis_server: RedisServer, redis_proxy: TcpProxy) -> None:
    writer = fleet.instance(redis_server.url)
    readers = [fleet.instance(redis_server.url) for _ in range(2)]
    for round_number in range(20):
        stamps = [reader.stamp(["item"], reader.sequence()) for reader in readers]
        result = writer.invalidate(["item"])
        assert result.reach == "fleet" and result.acknowledged, (round_number, result)
        for reader, stamp in zip(readers, stamps, strict=True):
            assert stamp is not None and not reader.is_current(stamp)  # no wait: already applied


def test_an_instance_that_does_not_acknowledge_in_time_is_named(
        fleet: Fleet, redis_server: RedisServer, redis_proxy: TcpProxy) -> None:
    writer = fleet.instance(redis_server.url)
    slow = fleet.instance(redis_proxy.url, socket_timeout_seconds=1.0)
    writer.ack_timeout_seconds = 0.05
    redis_proxy.delay(0.4)  # the slow instance hears everything 0.4 s late
    stamp = slow.stamp(["item"], slow.sequence())
    result = writer.invalidate(["item"])
    assert result.reach == "fleet" and not result.acknowledged
    assert result.unacknowledged == (slow.name,)
    wait_until(lambda: stamp is not None and not slow.is_current(stamp), "the late instance")


@pytest.mark.parametrize("fault", ["cut", "stall", "blackhole"])
def test_an_instance_that_cannot_hear_the_log_stops_trusting_after_the_bound(
        fleet: Fleet, redis_server: RedisServer, redis_proxy: TcpProxy, fault: str) -> None:
    partitioned = fleet.instance(redis_proxy.url, max_staleness_seconds=0.5)
    other = fleet.instance(redis_server.url)
    untagged_stamp = partitioned.stamp([], partitioned.sequence())
    stamp = partitioned.stamp(["t"], partitioned.sequence())
    assert stamp is not None and untagged_stamp == ()
    getattr(redis_proxy, fault)()
    result = other.invalidate(["t"])
    assert result.reach == "fleet"
    # Either it is named, or its lease ran out during the wait: then it had stopped trusting
    # what it holds (its trust ends no later than its lease), so nobody needs to wait for it.
    assert result.unacknowledged == (partitioned.name,) or not partitioned.is_trusted
    # Past the bound the partitioned instance serves nothing it holds, tagged or not.
    wait_until(lambda: not partitioned.is_current(stamp) and not partitioned.is_current(()),
               "the partitioned instance to stop trusting its entries")
    redis_proxy.restore()
    wait_until(lambda: partitioned.is_current(()), "the instance to catch up")
    assert not partitioned.is_current(stamp)  # caught up: the invalidation made meanwhile applies


def test_a_stopped_redis_bounds_what_every_instance_serves(fleet: Fleet) -> None:
    """Redis stopped by SIGSTOP (its own server here): the connections stay open and nothing
    answers, a silent Redis rather than a dead one. Past the bound no instance serves what it
    holds; once Redis runs again, both catch up and the invalidation queued meanwhile applies."""
    with running_redis() as server:
        writer = fleet.instance(server.url, max_staleness_seconds=0.5)
        reader = fleet.instance(server.url, max_staleness_seconds=0.5)
        stamp = reader.stamp(["t"], reader.sequence())
        assert stamp is not None and reader.is_current(stamp)
        server.pause()
        try:
            result = writer.invalidate(["t"])
            assert result.reach == "process" and result.queued, result
            wait_until(lambda: not writer.is_current(()) and not reader.is_current(()),
                       "both instances to stop trusting what they hold")
        finally:
            server.resume()
        wait_until(lambda: reader.is_current(()) and not reader.is_current(stamp),
                   "the reader to catch up and apply the replayed invalidation")
        assert writer.invalidate(["u"]).reach == "fleet"


def test_an_instance_behind_a_log_that_lost_its_entries_resyncs_instead_of_trusting(
        fleet: Fleet, redis_server: RedisServer, redis_proxy: TcpProxy) -> None:
    """The stream is trimmed or evicted (the state survives) while an instance is behind and no
    later write comes: its reads find nothing after its position. The state's sequence, given
    with every lease renewal, shows entries are missing, so it resyncs rather than trust."""
    behind = fleet.instance(redis_proxy.url, max_staleness_seconds=1.0)
    writer = fleet.instance(redis_server.url)
    stamp = behind.stamp(["t"], behind.sequence())
    redis_proxy.stall()
    writer.invalidate(["t"])
    client = writer.connections.sync()
    client.xtrim(writer.keys.log, maxlen=0)  # every entry gone, the state intact
    redis_proxy.restore()
    wait_until(lambda: behind.is_trusted and behind.is_current(()), "the instance to catch up")
    assert stamp is not None and not behind.is_current(stamp)
