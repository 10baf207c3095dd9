"""Fleet-wide generations against real Redis (single server and 3-node cluster).

Instances are FleetGenerations objects with their own connections and listener threads, as
in separate processes; the app-level version with real servers is test_fleet_apps.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from scalekit.cache.entry import CachedEntry
from scalekit.cache.generations import LocalGenerations
from scalekit.cache.hostgenerations import HostGenerations
from scalekit.cache.tiers.disk import DiskTier
from scalekit.cache.tiers.fleet import FleetGenerations
from scalekit.cache.tiers.redis import RedisConnections
from scalekit.config import RedisConfig

from .conftest import FakeClock
from .servers import RedisCluster, RedisServer, TcpProxy, wait_until

pytestmark = [pytest.mark.redis, pytest.mark.slow]

WAIT_SECONDS = 20.0



class Fleet:
    """Builds instances on one Redis URL and closes them all at the end."""

    def __init__(self, prefix: str, *, ack_timeout_seconds: float = 0.05) -> None:
        self.prefix = prefix
        self.ack_timeout_seconds = ack_timeout_seconds  # 0.05: FleetGenerations' default
        self.instances: list[FleetGenerations] = []

    def instance(self, url: str, *, cluster: bool = False, local: LocalGenerations | None = None,
                 monotonic: Callable[[], float] = time.monotonic,
                 max_staleness_seconds: float = 1.0) -> FleetGenerations:
        config = RedisConfig(url=url, cluster=cluster, key_prefix=self.prefix,
                             socket_timeout_seconds=1.0, circuit_cool_down_seconds=0.2)
        generations = FleetGenerations(local or LocalGenerations(),
                                       RedisConnections(config), max_staleness_seconds=max_staleness_seconds,
                                       heartbeat_seconds=0.1, monotonic=monotonic,
                                       ack_timeout_seconds=self.ack_timeout_seconds)
        self.instances.append(generations)
        return generations

    def close(self) -> None:
        for generations in self.instances:
            generations.close()
            generations.connections.close()


@pytest.fixture()
def fleet(request: pytest.FixtureRequest) -> Iterator[Fleet]:
    built = Fleet(f"fleet:{request.node.name}:")
    yield built
    built.close()


@pytest.fixture(params=["server", "cluster"])
def redis_url(request: pytest.FixtureRequest) -> tuple[str, bool]:
    if request.param == "server":
        return request.getfixturevalue("redis_server").url, False
    return request.getfixturevalue("redis_cluster").nodes[1].url, True


def test_invalidation_reaches_the_other_instance(fleet: Fleet, redis_url: tuple[str, bool]) -> None:
    url, cluster = redis_url
    first, second = fleet.instance(url, cluster=cluster), fleet.instance(url, cluster=cluster)
    assert first.wait_connected(WAIT_SECONDS) and second.wait_connected(WAIT_SECONDS)
    stamp_first = first.stamp(["product:1"], first.sequence())
    stamp_second = second.stamp(["product:1", "other"], second.sequence())
    assert stamp_first is not None and stamp_second is not None
    assert second.is_current(stamp_second)
    first.invalidate(["product:1"])
    assert not first.is_current(stamp_first)  # at once where it was invalidated
    delay = wait_until(lambda: not second.is_current(stamp_second), "the invalidation to arrive")
    print(f"propagation delay {delay * 1000:.1f} ms")  # shown with -s; bench/ measures p99
    assert second.is_current((("other", 0),))
    assert second.sequence() == first.sequence()


def test_silent_channel_bounds_staleness(fleet: Fleet, redis_proxy: TcpProxy, clock: FakeClock) -> None:
    generations = fleet.instance(redis_proxy.url, monotonic=clock, max_staleness_seconds=3.0)
    assert generations.wait_connected(WAIT_SECONDS)
    stamp = generations.stamp(["t"], generations.sequence())
    assert stamp is not None and generations.is_current(stamp)
    redis_proxy.cut()
    wait_until(lambda: not generations.connected.is_set(), "the listener to notice")
    clock.advance(2.9)
    assert generations.review_trust() and generations.is_current(stamp)  # within the bound
    clock.advance(0.2)
    assert not generations.review_trust()
    assert not generations.is_current(stamp)  # past it: every entry is a miss, tagged or not
    assert not generations.is_current(())  # (an unsafe method may have invalidated its URI)
    redis_proxy.restore()
    wait_until(lambda: generations.is_current(stamp), "the resync after reconnection")


def test_invalidation_made_while_redis_was_unreachable_is_replayed(
        fleet: Fleet, redis_server: RedisServer, redis_proxy: TcpProxy) -> None:
    cut_off = fleet.instance(redis_proxy.url)
    other = fleet.instance(redis_server.url)
    assert cut_off.wait_connected(WAIT_SECONDS) and other.wait_connected(WAIT_SECONDS)
    stamp_other = other.stamp(["t"], other.sequence())
    stamp_cut = cut_off.stamp(["t"], cut_off.sequence())
    redis_proxy.cut()
    cut_off.invalidate(["t"])  # Redis unreachable: applied here, queued for the fleet
    assert not cut_off.is_current(stamp_cut)
    assert other.is_current(stamp_other)
    redis_proxy.restore()
    wait_until(lambda: not other.is_current(stamp_other), "the replayed invalidation")
    assert not cut_off.is_current(stamp_cut)


def test_redis_losing_its_data_never_rolls_generations_back(fleet: Fleet) -> None:
    server = RedisServer().start()
    try:
        first = fleet.instance(server.url)
        assert first.wait_connected(WAIT_SECONDS)
        stamp = first.stamp(["t"], first.sequence())
        for _ in range(3):
            first.invalidate(["t"])
        assert stamp is not None and not first.is_current(stamp)
        forgotten = first.local.generation("t")
        server.restart()  # no persistence: Redis comes back empty
        wait_until(lambda: first.connected.is_set() and first.is_trusted, "reconnection")
        newcomer = fleet.instance(server.url)
        assert newcomer.wait_connected(WAIT_SECONDS)
        # The survivor pushed what Redis forgot; the newcomer adopts it: the old stamp is dead.
        wait_until(lambda: newcomer.local.generation("t") > forgotten, "the newcomer to learn 't'")
        assert not newcomer.is_current(stamp) and not first.is_current(stamp)
        first.invalidate(["t"])
        assert first.local.generation("t") > forgotten
    finally:
        server.close()


def _entry(tags: tuple[tuple[str, int], ...]) -> CachedEntry:
    now = time.time()
    return CachedEntry(status=200, headers=(("content-type", "text/plain"),), body=b"cached",
                       request_time=now, response_time=now, corrected_initial_age_seconds=0.0,
                       freshness_lifetime_seconds=3600.0, tags=tags)


def test_restart_keeps_disk_entries_but_not_ones_invalidated_while_down(
        fleet: Fleet, redis_url: tuple[str, bool], tmp_path: Path) -> None:
    url, cluster = redis_url
    host = tmp_path / "host-a"
    generations = fleet.instance(url, cluster=cluster, local=HostGenerations(host / "generations.sqlite3"))
    assert generations.wait_connected(WAIT_SECONDS)
    disk = DiskTier(host)
    since = generations.sequence()
    disk.set("/doomed", _entry(generations.stamp(["doomed"], since) or ()))
    disk.set("/kept", _entry(generations.stamp(["kept"], since) or ()))
    generations.close()
    disk.close()
    # While host A is down, another instance invalidates one of its entries' tags.
    other = fleet.instance(url, cluster=cluster)
    assert other.wait_connected(WAIT_SECONDS)
    other.invalidate(["doomed"])
    # Host A restarts on the same state directory.
    restarted = fleet.instance(url, cluster=cluster,
                               local=HostGenerations(host / "generations.sqlite3"))
    disk = DiskTier(host)
    doomed, kept = disk.get("/doomed"), disk.get("/kept")
    assert doomed is not None and kept is not None  # L3 survived the restart
    assert not restarted.is_current(doomed[0].tags)  # not trusted before it has heard Redis
    assert restarted.wait_connected(WAIT_SECONDS)
    wait_until(lambda: restarted.is_current(kept[0].tags), "trust after the resync")
    assert not restarted.is_current(doomed[0].tags)
    disk.close()


def test_restart_without_redis_follows_the_host_file(tmp_path: Path) -> None:
    """Embedded mode: `scalekit invalidate` (or another worker) while this process is down."""
    path = tmp_path / "generations.sqlite3"
    running = HostGenerations(path)
    stamp = running.stamp(["doomed"], running.sequence())
    running.close()
    HostGenerations(path).invalidate(["doomed"])  # the CLI, while the app is down
    restarted = HostGenerations(path)
    assert stamp is not None and not restarted.is_current(stamp)
    restarted.close()


def test_cluster_restart_resumes_invalidation(fleet: Fleet, redis_cluster: RedisCluster) -> None:
    first = fleet.instance(redis_cluster.nodes[0].url, cluster=True)
    second = fleet.instance(redis_cluster.nodes[2].url, cluster=True)
    assert first.wait_connected(WAIT_SECONDS) and second.wait_connected(WAIT_SECONDS)
    redis_cluster.restart()
    stamp = second.stamp(["after-restart"], second.sequence())
    wait_until(lambda: first.is_trusted and second.is_trusted and first.connected.is_set()
               and second.connected.is_set(), "both listeners to reconnect")
    first.connections.breaker.reset()
    first.connections.close()  # drop the client that still knows the old connections
    first.invalidate(["after-restart"])
    wait_until(lambda: stamp is not None and not second.is_current(stamp),
               "an invalidation after the cluster restart")


def test_invalidation_skipped_by_an_open_breaker_still_reaches_the_fleet(
        fleet: Fleet, redis_server: RedisServer) -> None:
    """The request path's breaker is open (say, one slow reply) while the channel is fine."""
    first, second = fleet.instance(redis_server.url), fleet.instance(redis_server.url)
    assert first.wait_connected(WAIT_SECONDS) and second.wait_connected(WAIT_SECONDS)
    stamp = second.stamp(["t"], second.sequence())
    first.connections.breaker.cool_down_seconds = 3600.0
    first.connections.breaker.failure(TimeoutError("one slow reply"))
    first.invalidate(["t"])  # offline: applied here, queued
    wait_until(lambda: stamp is not None and not second.is_current(stamp),
               "the listener to publish the queued invalidation")


def test_invalidation_queued_before_a_restart_is_still_replayed(
        fleet: Fleet, redis_server: RedisServer, redis_proxy: TcpProxy, tmp_path: Path) -> None:
    """Redis unreachable, invalidate, restart the instance, Redis back: the fleet hears it."""
    path = tmp_path / "generations.sqlite3"
    other = fleet.instance(redis_server.url)
    assert other.wait_connected(WAIT_SECONDS)
    other.invalidate(["t"])  # Redis's generation for t is now ahead of anything local below
    stamp_other = other.stamp(["t"], other.sequence())
    redis_proxy.cut()
    cut_off = fleet.instance(redis_proxy.url, local=HostGenerations(path))
    cut_off.invalidate(["t"])  # offline, with a lower local generation than Redis has
    cut_off.close()  # the instance stops before Redis is reachable again
    redis_proxy.restore()
    restarted = fleet.instance(redis_proxy.url, local=HostGenerations(path))
    assert restarted.wait_connected(WAIT_SECONDS)
    wait_until(lambda: stamp_other is not None and not other.is_current(stamp_other),
               "the invalidation queued before the restart")
    assert HostGenerations(path).unpublished() == set()


def test_a_forked_worker_trusts_nothing_until_its_own_listener_joined(
        fleet: Fleet, redis_server: RedisServer, tmp_path: Path) -> None:
    """A worker forked after its parent started (its start-up already ran there) may serve only
    hits: it must not inherit the parent's trust, nor lack a listener and a file watcher."""
    from tests.pool.helpers import in_forked_child

    path = tmp_path / "generations.sqlite3"
    parent = fleet.instance(redis_server.url, local=HostGenerations(path))
    assert parent.wait_connected(WAIT_SECONDS) and parent.is_current(())
    stamp = parent.stamp(["t"], parent.sequence())

    def child() -> bytes:
        untrusted_at_once = not parent.is_current(())
        joined = parent.wait_connected(WAIT_SECONDS)
        HostGenerations(path).invalidate(["t"])  # another process of the host, say
        deadline = time.monotonic() + WAIT_SECONDS
        while stamp is not None and parent.is_current(stamp) and time.monotonic() < deadline:
            time.sleep(0.01)
        followed = stamp is not None and not parent.is_current(stamp)
        return repr((untrusted_at_once, joined, parent.is_current(()), followed)).encode()

    assert in_forked_child(child) == b"(True, True, True, True)"
