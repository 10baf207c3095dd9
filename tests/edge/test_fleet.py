"""Once per fleet, durably: an invalidation heard by every instance (the change feed) is
purged once; purges spread over every instance's consumers are each sent once; a purge taken
by an instance that dies before sending it is taken over and sent by another; without Redis,
and while Redis is unreachable, the host's queue file carries purges."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from .doubles import VendorDouble, cloudflare_contract, running_double
from .harness import FAST, REDIS_URL, redis_prefix, wrapped

pytestmark = [pytest.mark.redis]

TOKEN = "cf-token-0123456789-abcdefghij"
ZONE = "zone0123456789"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def prefix() -> Iterator[str]:
    with redis_prefix() as value:
        yield value


def _target(double: VendorDouble) -> dict[str, dict[str, Any]]:
    return {"cdn": {"kind": "cloudflare", "urls": [double.url], "zone_id": ZONE, "token": TOKEN}}


def _tags(received: list[Any]) -> Counter[str]:
    return Counter(tag for request in received for tag in request.json().get("tags", ()))


def test_every_instance_invalidating_the_same_tags_sends_one_purge(tmp_path: Path, prefix: str) -> None:
    """The change feed makes every instance invalidate table:products: one purge, not N."""
    with running_double(cloudflare_contract(zone_id=ZONE, token=TOKEN)) as double:
        fleet = [wrapped(_target(double), dialect="cloudflare", state_dir=tmp_path / f"i{n}",
                         prefix=prefix, purge={"settle_seconds": 0.5}) for n in range(3)]
        try:
            for app in fleet:
                app.runtime.startup()
            for app in fleet:
                app.runtime.invalidate(["table:products"], source="change_feed")
            double.wait_for(lambda got: _tags(got)["table:products"] >= 1)
            for app in fleet:
                assert app.runtime.services["cdn.purge"].wait_idle(10.0)
        finally:
            for app in fleet:
                app.runtime.close()
    assert _tags(double.received) == {"table:products": 1}
    assert double.violations == []


def test_purges_spread_over_the_fleet_are_each_sent_once(tmp_path: Path, prefix: str) -> None:
    with running_double(cloudflare_contract(zone_id=ZONE, token=TOKEN)) as double:
        fleet = [wrapped(_target(double), dialect="cloudflare", state_dir=tmp_path / f"i{n}",
                         prefix=prefix) for n in range(2)]
        try:
            for app in fleet:
                app.runtime.startup()
            for number in range(40):
                fleet[number % 2].runtime.invalidate([f"product:{number}"])
            double.wait_for(lambda got: len(_tags(got)) >= 40)
            for app in fleet:
                assert app.runtime.services["cdn.purge"].wait_idle(10.0)
        finally:
            for app in fleet:
                app.runtime.close()
    assert _tags(double.received) == {f"product:{number}": 1 for number in range(40)}


def test_a_purge_held_by_an_instance_that_dies_is_sent_by_another(tmp_path: Path, prefix: str) -> None:
    with running_double(cloudflare_contract(zone_id=ZONE, token=TOKEN)) as double:
        settings = {"state_dir": str(tmp_path / "dying"), "metrics": False,
                    "redis": {"url": REDIS_URL, "key_prefix": prefix},
                    "cdn": {"surrogate_keys": "cloudflare", "purge": {
                        **FAST, "settle_seconds": 3.0, "targets": _target(double)}}}
        environment = {**os.environ, "SK_EDGE_CONFIG": json.dumps(settings),
                       "SK_EDGE_TAGS": "product:42", "PYTHONPATH": str(REPO)}
        dying = subprocess.Popen([sys.executable, "-m", "tests.edge.holder"], cwd=REPO,
                                 env=environment, stdout=subprocess.PIPE, start_new_session=True)
        try:
            assert dying.stdout is not None and dying.stdout.readline() == b"held\n"
        finally:
            os.killpg(dying.pid, signal.SIGKILL)
            dying.wait(timeout=10)
            if dying.stdout is not None:
                dying.stdout.close()
        client = redis.Redis.from_url(REDIS_URL)
        pending = client.xpending(f"{prefix}{{edge-purges}}:q:cdn", "purgers")
        client.close()
        assert pending["pending"] == 1 and double.received == []  # taken, never sent
        survivor = wrapped(_target(double), dialect="cloudflare", state_dir=tmp_path / "survivor",
                           prefix=prefix)
        survivor.runtime.startup()
        try:
            received = double.wait_for(lambda got: len(got) >= 1)
            assert survivor.runtime.services["cdn.purge"].wait_idle(10.0)
        finally:
            survivor.runtime.close()
    assert [r.json() for r in received] == [{"tags": ["product:42"]}]


def test_without_redis_the_hosts_queue_file_carries_purges_once(tmp_path: Path) -> None:
    """Two runtimes on one state_dir stand for two app processes of a host."""
    with running_double(cloudflare_contract(zone_id=ZONE, token=TOKEN)) as double:
        host = [wrapped(_target(double), dialect="cloudflare", state_dir=tmp_path, prefix=None)
                for _ in range(2)]
        try:
            host[0].runtime.invalidate(["product:1"])  # queued before any consumer runs
            assert (tmp_path / "edge-purges.sqlite3").is_file()
            for app in host:
                app.runtime.startup()
            host[1].runtime.invalidate(["product:2"])
            double.wait_for(lambda got: len(_tags(got)) >= 2)
            for app in host:
                assert app.runtime.services["cdn.purge"].wait_idle(10.0)
            statuses = host[0].runtime.services["cdn.purge"].status()
        finally:
            for app in host:
                app.runtime.close()
    assert _tags(double.received) == {"product:1": 1, "product:2": 1}
    assert [(s.queue, s.length) for s in statuses] == [("local", 0)]


def test_while_redis_is_unreachable_purges_wait_in_the_hosts_file(tmp_path: Path) -> None:
    """Sent by this host once every instance has stopped trusting what it holds
    (cache.invalidation.max_staleness_seconds), so the edge cannot fetch the old page."""
    with running_double(cloudflare_contract(zone_id=ZONE, token=TOKEN)) as double:
        app = wrapped(_target(double), dialect="cloudflare", state_dir=tmp_path, prefix=None,
                      redis={"url": "redis://127.0.0.1:9/0"},
                      cache={"invalidation": {"max_staleness_seconds": 1.0}})
        app.runtime.startup()
        try:
            before = time.monotonic()
            app.runtime.invalidate(["product:3"])
            received = double.wait_for(lambda got: len(got) >= 1)
        finally:
            app.runtime.close()
    assert [r.json() for r in received] == [{"tags": ["product:3"]}]
    assert received[0].at - before >= 1.0


def test_consumers_of_processes_gone_are_forgotten(prefix: str) -> None:
    """Restarted processes leave their consumer names behind: once silent for ten reclaim
    periods and holding nothing, they are dropped from the group (the status counts those
    that run)."""
    from scalekit.cache.tiers.redis import RedisConnections
    from scalekit.cdn.purge.redisqueue import GROUP, RedisJobSource, RedisPurgeQueue
    from scalekit.config import RedisConfig

    connections = RedisConnections(RedisConfig(url=REDIS_URL, key_prefix=prefix))
    queue = RedisPurgeQueue(connections, queue="edge-purges", targets=["cdn"])
    client = redis.Redis.from_url(REDIS_URL)
    try:
        gone = RedisJobSource(queue, "cdn", client, consumer="gone", reclaim_after_seconds=0.01)
        queue.enqueue(client, {"cdn": ["t:a"]}, source="test", now=0.0, due=0.0)
        gone.done(gone.take(block_seconds=0.01, count=1))  # it took one, then its process ended
        time.sleep(0.2)  # past ten reclaim periods of 10 ms
        live = RedisJobSource(queue, "cdn", client, consumer="live", reclaim_after_seconds=0.01)
        queue.enqueue(client, {"cdn": ["t:b"]}, source="test", now=0.0, due=0.0)
        held = live.take(block_seconds=0.01, count=1)
        live.reclaim(count=10)
        names = {c["name"] for c in client.xinfo_consumers(queue.streams["cdn"], GROUP)}
        assert [job.items for job in held] == [("t:b",)]
    finally:
        client.close()
        connections.close()
    assert names == {b"live"}
