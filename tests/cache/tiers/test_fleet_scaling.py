"""What each instance costs Redis per invalidation, counted with INFO commandstats on servers of
the test's own (bench/fleet.py measures the same costs in time, for 100+ instances).

Every instance polls the log once per invalidation (or per batch of them), so a poll must be
cheap: plain commands, one round trip, no script but for the lease's renewal about once per
heartbeat; and on a Cluster, no COMMAND GETKEYS round trip before each read.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest
import redis

from scalekit.cache.generations import LocalGenerations
from scalekit.cache.invalidation import InvalidationResult
from scalekit.cache.tiers.fleetlog import Follower, Poll, Resync
from scalekit.cache.tiers.fleetredis import FleetKeys, FleetScripts, run
from scalekit.cache.tiers.redis import NO_CLIENT_INFO

from .servers import RedisCluster, RedisServer
from .test_fleet import WAIT_SECONDS, Fleet

pytestmark = [pytest.mark.redis, pytest.mark.slow]

LEASE_SECONDS = 3.0
# How long a writer here waits for the other instance's acknowledgement. The wait ends as soon
# as it arrives (under 15 ms on an idle machine), so this only bounds a slow run: with eight
# writing threads and the reader's listener sharing one GIL, and six busy processes on the
# 2-core machine, one invalidate() took up to 77 ms (the default 0.05 s ran out once in CI).
ACK_TIMEOUT_SECONDS = 1.0


@pytest.fixture()
def own_server() -> Iterator[RedisServer]:
    """A server nothing else talks to: its command counts are this test's alone."""
    server = RedisServer().start()
    yield server
    server.close()


@pytest.fixture()
def fleet(request: pytest.FixtureRequest) -> Iterator[Fleet]:
    built = Fleet(f"scaling:{request.node.name}:", ack_timeout_seconds=ACK_TIMEOUT_SECONDS)
    yield built
    built.close()


def command_calls(ports: list[int]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for port in ports:
        with redis.Redis(port=port, **NO_CLIENT_INFO) as client:
            for name, stats in client.info("commandstats").items():
                totals[name] = totals.get(name, 0) + int(stats["calls"])
    return totals


def calls_between(before: dict[str, int], after: dict[str, int], name: str) -> int:
    return after.get(f"cmdstat_{name}", 0) - before.get(f"cmdstat_{name}", 0)


def joined(scripts: FleetScripts, name: str) -> Follower:
    follower = Follower(LocalGenerations(), max_staleness_seconds=LEASE_SECONDS, renew_seconds=0.5)
    step = follower.next_step(0.0)
    assert isinstance(step, Resync)
    epoch, sequence, remote = run(scripts.resync(
        floor=0, epoch_candidate=step.epoch_candidate, recovering=False, instance=name,
        lease_seconds=LEASE_SECONDS))
    follower.resynced(sent_at=0.0, epoch=epoch, sequence=sequence, remote=remote)
    return follower


def test_a_poll_between_renewals_acknowledges_without_a_script(own_server: RedisServer) -> None:
    client = redis.Redis.from_url(own_server.url, **NO_CLIENT_INFO)
    scripts = FleetScripts(client, FleetKeys.of("scaling:", "invalidations"))
    follower = joined(scripts, "reader")
    recorded = run(scripts.invalidate(["a"], origin="writer", sent_at=1.0, floor=0, epoch_candidate="unused"))
    sequence, epoch = recorded.sequence, recorded.epoch
    assert recorded.unacked[0] == 1  # the writer's first count came with the write
    assert run(scripts.acked(sequence, instance="writer", epoch=epoch)).missing == ("reader",)
    step = follower.next_step(0.1)  # within renew_seconds of the join: no renewal due
    assert step == Poll(epoch=epoch, after=follower.position, renew=False)
    before = command_calls([own_server.port])
    polled = run(scripts.poll(epoch=epoch, instance="reader", after=step.after,
                              lease_seconds=LEASE_SECONDS, block_seconds=None, renew=False))
    follower.polled(sent_at=0.1, entries=polled.entries, complete=polled.complete,
                    head=polled.head, renewed=False)
    after_read = command_calls([own_server.port])
    assert follower.local.generation("a") > 0
    run(scripts.poll(epoch=epoch, instance="reader", after=follower.position,
                     lease_seconds=LEASE_SECONDS, block_seconds=None, renew=False))
    after = command_calls([own_server.port])
    assert calls_between(before, after, "evalsha") == 0 and calls_between(before, after, "eval") == 0
    assert calls_between(before, after_read, "zadd") == 1  # the acknowledgement, one command
    assert run(scripts.acked(sequence, instance="writer", epoch=epoch)).missing == ()
    client.close()


def test_an_acknowledgement_for_a_lost_state_never_counts_in_the_new_one(
        own_server: RedisServer) -> None:
    client = redis.Redis.from_url(own_server.url, **NO_CLIENT_INFO)
    keys = FleetKeys.of("scaling:", "lost")
    scripts = FleetScripts(client, keys)
    old = joined(scripts, "reader")
    old_epoch = old.epoch
    assert old_epoch is not None
    client.delete(*keys.all)  # Redis loses the state; the reader rejoins the new one
    rejoined = joined(scripts, "reader")
    assert rejoined.epoch != old_epoch
    recorded = run(scripts.invalidate(["a"], origin="writer", sent_at=1.0, floor=40, epoch_candidate="unused"))
    sequence, epoch = recorded.sequence, recorded.epoch
    # A poll sent before the reader noticed (delayed on an old connection): it acknowledges
    # a position of the old state, higher than anything the new one numbered.
    polled = run(scripts.poll(epoch=old_epoch, instance="reader", after=100,
                              lease_seconds=LEASE_SECONDS, block_seconds=None, renew=False))
    assert polled.head is None  # the poll says the epoch changed
    assert run(scripts.acked(sequence, instance="writer", epoch=epoch)).missing == ("reader",)
    client.close()


def test_listeners_on_a_cluster_poll_the_node_without_asking_for_keys(
        fleet: Fleet, redis_cluster: RedisCluster) -> None:
    ports = [node.port for node in redis_cluster.nodes]
    first = fleet.instance(redis_cluster.url, cluster=True)
    second = fleet.instance(redis_cluster.url, cluster=True)
    assert first.wait_connected(WAIT_SECONDS) and second.wait_connected(WAIT_SECONDS)
    before = command_calls(ports)
    for index in range(5):
        result = first.invalidate([f"tag{index}"])
        assert result.acknowledged, result
    after = command_calls(ports)
    assert calls_between(before, after, "xread") >= 5  # the second instance followed each
    assert calls_between(before, after, "command|getkeys") == 0


def test_concurrent_invalidations_from_one_loop_share_log_entries(
        fleet: Fleet, own_server: RedisServer) -> None:
    writer, reader = fleet.instance(own_server.url), fleet.instance(own_server.url)
    assert writer.wait_connected(WAIT_SECONDS) and reader.wait_connected(WAIT_SECONDS)
    tags = [f"page:{index}" for index in range(20)]
    before = command_calls([own_server.port])

    async def invalidate_all() -> list[InvalidationResult]:
        try:
            return await asyncio.gather(*(writer.ainvalidate([tag]) for tag in tags))
        finally:
            await writer.connections.aclose()  # this loop's client

    results = asyncio.run(invalidate_all())
    after = command_calls([own_server.port])
    entries = calls_between(before, after, "xadd")
    assert 1 <= entries < len(tags)  # the first went alone; the others rode together
    assert [result.tags for result in results] == [(tag,) for tag in tags]
    assert all(result.reach == "fleet" and result.acknowledged for result in results), results
    assert len({result.sequence for result in results}) == entries
    for tag in tags:  # acknowledged: the reader applied every one, as did the writer
        assert reader.local.generation(tag) > 0 and writer.local.generation(tag) > 0


def test_concurrent_invalidations_from_threads_share_log_entries(
        fleet: Fleet, own_server: RedisServer) -> None:
    writer, reader = fleet.instance(own_server.url), fleet.instance(own_server.url)
    assert writer.wait_connected(WAIT_SECONDS) and reader.wait_connected(WAIT_SECONDS)
    threads, each = 8, 10
    start = threading.Barrier(threads)
    results: list[InvalidationResult] = []

    def invalidate_some(thread: int) -> None:
        start.wait()
        for index in range(each):
            results.append(writer.invalidate([f"t{thread}:{index}"]))

    before = command_calls([own_server.port])
    workers = [threading.Thread(target=invalidate_some, args=(thread,)) for thread in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    after = command_calls([own_server.port])
    assert len(results) == threads * each
    assert all(result.reach == "fleet" and result.acknowledged for result in results), results
    assert calls_between(before, after, "xadd") < threads * each
    for result in results:
        assert all(reader.local.generation(tag) > 0 for tag in result.tags)


def test_a_writer_counts_who_is_missing_and_names_them_once(own_server: RedisServer) -> None:
    client = redis.Redis.from_url(own_server.url, **NO_CLIENT_INFO)
    scripts = FleetScripts(client, FleetKeys.of("scaling:", "count"))
    joined(scripts, "silent")
    answering = joined(scripts, "answering")
    recorded = run(scripts.invalidate(["a"], origin="writer", sent_at=1.0, floor=0, epoch_candidate="unused"))
    sequence, epoch = recorded.sequence, recorded.epoch
    assert recorded.unacked[0] == 2  # counted in the write: nobody has applied it yet
    run(scripts.poll(epoch=epoch, instance="answering", after=sequence,
                     lease_seconds=LEASE_SECONDS, block_seconds=None, renew=False))
    assert answering.epoch == epoch
    before = command_calls([own_server.port])
    report = run(scripts.wait_acked(sequence, instance="writer", epoch=epoch, timeout_seconds=0.02))
    after = command_calls([own_server.port])
    assert report.missing == ("silent",) and not report.lost
    counts = calls_between(before, after, "zcount")
    assert counts >= 2  # waited, counting (O(log N) each)
    # each query prunes expired leases (one ZRANGEBYSCORE); only the last one lists names
    assert calls_between(before, after, "zrangebyscore") == (counts + 1) + 1
    client.close()


def test_a_writer_alone_waits_for_nobody_and_asks_redis_once(own_server: RedisServer) -> None:
    """The write's script counts who must still apply it: a writer whose fleet is itself (a
    single instance, or every other one gone) gets its answer in that round trip, no count of
    its own, no pause; a writer with others still counts them before it stops waiting."""
    client = redis.Redis.from_url(own_server.url, **NO_CLIENT_INFO)
    scripts = FleetScripts(client, FleetKeys.of("scaling:", "alone"))
    joined(scripts, "writer")
    run(scripts.invalidate(["warm"], origin="writer", sent_at=0.5, floor=0, epoch_candidate="unused"))
    before = command_calls([own_server.port])  # the script loaded (its first EVALSHA fails)
    recorded = run(scripts.invalidate(["a"], origin="writer", sent_at=1.0, floor=0, epoch_candidate="unused"))
    report = run(scripts.wait_acked(recorded.sequence, instance="writer", epoch=recorded.epoch,
                                    timeout_seconds=1.0, counted=recorded.unacked))
    after = command_calls([own_server.port])
    assert recorded.unacked[0] == 0 and report.missing == () and not report.lost
    assert calls_between(before, after, "evalsha") + calls_between(before, after, "eval") == 1
    assert calls_between(before, after, "zcount") == 1  # counted inside the write's script

    joined(scripts, "reader")  # never acknowledges: the writer counts until its timeout
    recorded = run(scripts.invalidate(["b"], origin="writer", sent_at=2.0, floor=0, epoch_candidate="unused"))
    assert recorded.unacked[0] == 1
    before = command_calls([own_server.port])
    report = run(scripts.wait_acked(recorded.sequence, instance="writer", epoch=recorded.epoch,
                                    timeout_seconds=0.02, counted=recorded.unacked))
    after = command_calls([own_server.port])
    assert report.missing == ("reader",)
    assert calls_between(before, after, "zcount") >= 1  # its first count was the write's; then it asked
    client.close()
