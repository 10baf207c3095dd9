"""A stateful property of both purge queues (the host's SQLite file and the fleet's Redis
streams): whatever interleaving of invalidations, consumers taking, releasing, finishing and
crashing, every item queued is released for sending by some consumer *after* it was queued.
So no purge is lost, and none is merged into a send that had already started (the edge could
otherwise fetch the old page again between that send and the write the purge follows)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from scalekit.cdn.purge.jobs import Job
from scalekit.cdn.purge.localqueue import LocalJobSource, LocalPurgeQueue

from .harness import REDIS_URL

ITEMS = st.sets(st.sampled_from(["t:a", "t:b", "t:c", "u:http://s/p"]), min_size=1, max_size=3)
CONSUMERS = st.sampled_from(["c1", "c2"])
RECLAIM_SECONDS = 10.0


@dataclass
class Consumer:
    source: Any
    held: list[Job] = field(default_factory=list)
    released: list[Job] = field(default_factory=list)


class QueueMachine(RuleBasedStateMachine):
    """Subclasses provide ``make_queue`` / ``source`` / ``enqueue`` for one backend."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 1000.0
        self.step = 0
        self.enqueued: list[tuple[int, frozenset[str]]] = []
        self.sends: list[tuple[int, frozenset[str]]] = []
        self.make_queue()
        self.consumers = {name: Consumer(self.source(name)) for name in ("c1", "c2")}

    def make_queue(self) -> None:
        raise NotImplementedError

    def source(self, name: str) -> Any:
        raise NotImplementedError

    def enqueue(self, items: list[str]) -> None:
        raise NotImplementedError

    def tick(self) -> int:
        self.step += 1
        return self.step

    @rule(items=ITEMS)
    def invalidate(self, items: set[str]) -> None:
        self.enqueue(sorted(items))
        self.enqueued.append((self.tick(), frozenset(items)))

    @rule(name=CONSUMERS)
    def take(self, name: str) -> None:
        consumer = self.consumers[name]
        consumer.held += consumer.source.take(block_seconds=0.001, count=10)

    @rule(name=CONSUMERS)
    def reclaim(self, name: str) -> None:
        consumer = self.consumers[name]
        known = {job.id for job in consumer.held + consumer.released}
        consumer.held += [job for job in consumer.source.reclaim(count=10) if job.id not in known]

    @rule(name=CONSUMERS)
    def release_and_send(self, name: str) -> None:
        consumer = self.consumers[name]
        if consumer.held:
            consumer.source.release(consumer.held)
            for job in consumer.held:
                self.sends.append((self.tick(), frozenset(job.items)))
            consumer.released += consumer.held
            consumer.held = []

    @rule(name=CONSUMERS)
    def accepted(self, name: str) -> None:
        consumer = self.consumers[name]
        consumer.source.done(consumer.released)
        consumer.released = []

    @rule(name=CONSUMERS)
    def crash(self, name: str) -> None:
        """The process dies: what it held or was sending stays in the queue, unacknowledged."""
        self.consumers[name] = Consumer(self.source(name + uuid.uuid4().hex[:4]))

    @rule()
    def time_passes(self) -> None:
        self.now += RECLAIM_SECONDS + 1

    @invariant()
    def nothing_sent_that_was_never_queued(self) -> None:
        queued = set().union(*(items for _, items in self.enqueued)) if self.enqueued else set()
        for _, items in self.sends:
            assert items <= queued

    def teardown(self) -> None:
        try:
            # Drain: time passes, a fresh consumer takes everything left (reclaimed or new).
            self.now += RECLAIM_SECONDS + 1
            drain = Consumer(self.source("drain"))
            for _ in range(50):
                jobs = drain.source.reclaim(count=100) + drain.source.take(block_seconds=0.001, count=100)
                if not jobs:
                    break
                drain.source.release(jobs)
                self.sends += [(self.tick(), frozenset(job.items)) for job in jobs]
                drain.source.done(jobs)
            for step, items in self.enqueued:
                for item in items:
                    assert any(sent > step and item in sent_items for sent, sent_items in self.sends), (
                        f"{item} queued at step {step} was never released for sending after it")
        finally:
            self.close()

    def close(self) -> None:
        pass


class LocalQueueMachine(QueueMachine):
    directory: Path

    def make_queue(self) -> None:
        self.queue = LocalPurgeQueue(self.directory / f"{uuid.uuid4().hex}.sqlite3")

    def source(self, name: str) -> Any:
        return LocalJobSource(self.queue, "edge", consumer=name, reclaim_after_seconds=RECLAIM_SECONDS,
                              clock=lambda: self.now)

    def enqueue(self, items: list[str]) -> None:
        self.queue.enqueue({"edge": items}, source="test", now=self.now, due=self.now)

    def close(self) -> None:
        self.queue.close()


class RedisQueueMachine(QueueMachine):
    """The Redis streams; reclaiming uses Redis's own idle times, so "time passes" is real time
    there: the reclaim threshold is a few milliseconds."""

    def make_queue(self) -> None:
        from scalekit.cache.tiers.redis import RedisConnections
        from scalekit.cdn.purge.redisqueue import RedisPurgeQueue
        from scalekit.config import RedisConfig

        self.prefix = f"sk-edge-machine-{uuid.uuid4().hex[:8]}:"
        self.client = redis.Redis.from_url(REDIS_URL)
        self.connections = RedisConnections(RedisConfig(url=REDIS_URL, key_prefix=self.prefix))
        self.queue = RedisPurgeQueue(self.connections, queue="q", targets=["edge"])

    def source(self, name: str) -> Any:
        from scalekit.cdn.purge.redisqueue import RedisJobSource

        return RedisJobSource(self.queue, "edge", self.client, consumer=name, reclaim_after_seconds=0.002)

    def enqueue(self, items: list[str]) -> None:
        self.queue.enqueue(self.client, {"edge": items}, source="test", now=self.now, due=self.now)

    @rule()
    def time_passes(self) -> None:
        import time

        time.sleep(0.003)

    def teardown(self) -> None:
        import time

        time.sleep(0.003)
        super().teardown()

    def close(self) -> None:
        for key in self.client.scan_iter(match=f"{self.prefix}*"):
            self.client.delete(key)
        self.client.close()
        self.connections.close()


@pytest.fixture(autouse=True)
def _local_directory(tmp_path: Path) -> None:
    LocalQueueMachine.directory = tmp_path


TestLocalQueue = LocalQueueMachine.TestCase
TestLocalQueue.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)


@pytest.mark.redis
class TestRedisQueue(RedisQueueMachine.TestCase):  # type: ignore[misc, valid-type]
    settings = settings(max_examples=8, stateful_step_count=25, deadline=None)

    def setUp(self) -> None:
        try:
            redis.Redis.from_url(REDIS_URL, socket_timeout=2).ping()
        except redis.RedisError as error:
            pytest.skip(f"Redis on 127.0.0.1:6379 is not reachable: {error}")
