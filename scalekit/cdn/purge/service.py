"""The edge purger of one runtime: queues every invalidation for every target, and runs this
process's consumers.

Built once per runtime when ``cdn.purge`` has targets (``scalekit.wrap()`` does it, after the
layers, so its invalidator runs after the cache's). It registers with the runtime like the
cache does, so every tag invalidation — ``scalekit.invalidate()``, the purge endpoint, a
committed write, the change feed — is queued for the edge before the call returns; the cache
hands it the URLs unsafe methods invalidated, and ``scalekit invalidate`` queues through
:func:`queue_purges`.

Where a purge is queued:

- Redis configured and answering: the fleet's streams (sent once per fleet).
- Redis configured but not answering: the host's queue file, sent by this host's processes
  after ``cache.invalidation.max_staleness_seconds`` more (by then every instance that cannot
  hear Redis has stopped serving what it held, so the edge does not fetch the old page again).
- No Redis: the host's queue file (the host is the fleet).
- Neither could take it (disk full as well): logged as an error and counted as ``lost``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import os
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ...metrics import instruments
from .calls import Call, Reply
from .config import PurgeConfig
from .jobs import JobSource, TargetStatus, tag_items, url_items
from .localqueue import LOCAL_QUEUE_FILE, LocalJobSource, LocalPurgeQueue
from .transport import send
from .vendors import build_vendor
from .worker import TargetWorker

__all__ = ["EdgePurger", "edge_purger", "local_queue_path", "queue_purges", "urls_of_keys"]

log = logging.getLogger("scalekit.cdn")

SERVICE_KEY = "cdn.purge"
# Cache keys past this length are stored as a head and a digest (scalekit.cache.keys): they no
# longer name a URL, so no URL purge can be made of them.
_DIGEST_SEPARATOR = "\x1e"


def local_queue_path(config: Any) -> Path:
    """The host's queue file under ``state_dir``."""
    return Path(config.state_dir, LOCAL_QUEUE_FILE)


def urls_of_keys(keys: Iterable[str]) -> list[str]:
    """The URLs named by primary cache keys (``scheme://host/path?query``).

    >>> urls_of_keys(["https://shop.example/p/1", "https://shop.example/" + "x" * 600 + "\\x1e..."])
    ['https://shop.example/p/1']
    """
    return [key for key in keys if "://" in key and _DIGEST_SEPARATOR not in key]


def edge_purger(runtime: Any) -> EdgePurger | None:
    """The runtime's purger, built on first use; None when no target is configured."""
    purger: EdgePurger | None = runtime.services.get(SERVICE_KEY)
    if purger is None and runtime.config.cdn.purge.active:
        purger = runtime.services[SERVICE_KEY] = EdgePurger(runtime)
    return purger


class EdgePurger:
    """Queues purges (producer) and runs one :class:`TargetWorker` thread per target."""

    def __init__(self, runtime: Any, *, connections: Any = None) -> None:
        from ...cache.tiers import redis_connections

        self.config: PurgeConfig = runtime.config.cdn.purge
        self.clock = runtime.clock
        self.connections = connections if connections is not None else redis_connections(runtime)
        self.redis_queue = None
        if self.connections is not None:
            from .redisqueue import RedisPurgeQueue

            self.redis_queue = RedisPurgeQueue(self.connections, queue=self.config.queue,
                                               targets=list(self.config.targets))
        self.local = LocalPurgeQueue(local_queue_path(runtime.config))
        # Queued locally while Redis is configured but unreachable: wait until every instance
        # has stopped trusting what it holds (see the module docstring).
        self.fallback_delay_seconds = (runtime.config.cache.invalidation.max_staleness_seconds
                                       if self.connections is not None else 0.0)
        self.url_targets = [name for name, target in self.config.targets.items() if target.url_purges]
        self.workers: dict[str, TargetWorker] = {}
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._pid = 0
        self._queued = {name: instruments.EDGE_PURGE_QUEUED.labels(name)
                        for name in ("redis", "local", "lost")}
        runtime.add_invalidator(self.invalidate_tags, self.ainvalidate_tags)
        runtime.on_startup(self.start)
        runtime.on_shutdown(self.close)

    # ----------------------------------------------------------------- producing
    def invalidate_tags(self, tags: Sequence[str], source: str) -> None:
        """Queue a purge of ``tags`` at every target (the runtime's invalidator)."""
        items = tag_items(tags)
        if items:
            self.enqueue({name: items for name in self.config.targets}, source=source)

    async def ainvalidate_tags(self, tags: Sequence[str], source: str) -> None:
        items = tag_items(tags)
        if items:
            await self.aenqueue({name: items for name in self.config.targets}, source=source)

    def purge_urls(self, keys: Iterable[str], *, source: str = "unsafe_method") -> None:
        """Queue URL purges for the primary cache ``keys`` an unsafe method invalidated."""
        items = url_items(urls_of_keys(keys))
        if items and self.url_targets:
            self.enqueue({name: items for name in self.url_targets}, source=source)

    async def apurge_urls(self, keys: Iterable[str], *, source: str = "unsafe_method") -> None:
        items = url_items(urls_of_keys(keys))
        if items and self.url_targets:
            await self.aenqueue({name: items for name in self.url_targets}, source=source)

    def enqueue(self, items_by_target: Mapping[str, Sequence[str]], *, source: str) -> str:
        """Queue durably (see the module docstring); which queue took it."""
        now = self.clock()
        if self.redis_queue is not None and self.connections.breaker.allow():
            try:
                self.redis_queue.enqueue(self.connections.sync(), items_by_target, source=source,
                                         now=now, due=now + self.config.settle_seconds)
            except Exception as error:  # noqa: BLE001 - any Redis fault: the local queue takes it
                self.connections.breaker.failure(error)
            else:
                self.connections.breaker.success()
                return self._counted("redis")
        return self._enqueue_locally(items_by_target, source=source, now=now)

    async def aenqueue(self, items_by_target: Mapping[str, Sequence[str]], *, source: str) -> str:
        """:meth:`enqueue` without blocking the event loop."""
        now = self.clock()
        if self.redis_queue is not None and self.connections.breaker.allow():
            try:
                await self.redis_queue.aenqueue(self.connections.async_client(), items_by_target,
                                                source=source, now=now,
                                                due=now + self.config.settle_seconds)
            except Exception as error:  # noqa: BLE001 - any Redis fault: the local queue takes it
                self.connections.breaker.failure(error)
            else:
                self.connections.breaker.success()
                return self._counted("redis")
        return await asyncio.to_thread(self._enqueue_locally, items_by_target, source=source, now=now)

    def _enqueue_locally(self, items_by_target: Mapping[str, Sequence[str]], *, source: str,
                         now: float) -> str:
        due = now + self.config.settle_seconds + self.fallback_delay_seconds
        try:
            self.local.enqueue(items_by_target, source=source, now=now, due=due)
        except Exception as error:  # noqa: BLE001 - sqlite3.Error, OSError: nowhere left
            log.error("edge purge of %s lost: neither Redis nor %s could queue it (%s: %s); "
                      "purge the edge by hand", sorted({i for items in items_by_target.values()
                                                        for i in items})[:10],
                      self.local.path, type(error).__name__, error)
            return self._counted("lost")
        if self.redis_queue is not None:
            log.warning("Redis unreachable: an edge purge waits in %s (sent by this host's app "
                        "processes in %.1f s)", self.local.path, due - now)
        return self._counted("local")

    def _counted(self, queue: str) -> str:
        self._queued[queue].inc()
        return queue

    # ----------------------------------------------------------------- consuming
    def start(self) -> None:
        """Start (or, after a fork, restart) one consumer thread per target; returns at once."""
        if self._pid == os.getpid():
            return
        self._pid = os.getpid()
        self._stop = threading.Event()
        self._threads = []
        from .redisqueue import consumer_name

        consumer = consumer_name()
        for name, target in self.config.targets.items():
            worker = TargetWorker(
                name, target, self.config, vendor=functools.partial(build_vendor, target),
                sources=functools.partial(self._sources, name, consumer), send=_send,
                clock=self.clock)
            self.workers[name] = worker
            thread = threading.Thread(target=worker.run, args=(self._stop,), daemon=True,
                                      name=f"scalekit-purge-{name}")
            self._threads.append(thread)
            thread.start()

    def _sources(self, target: str, consumer: str) -> list[JobSource]:
        sources: list[JobSource] = []
        if self.redis_queue is not None:
            from .redisqueue import RedisJobSource

            client = self.connections.new_sync_client(socket_timeout_seconds=5.0)
            sources.append(RedisJobSource(self.redis_queue, target, client, consumer=consumer,
                                          reclaim_after_seconds=self.config.reclaim_after_seconds))
        sources.append(LocalJobSource(self.local, target, consumer=consumer, clock=self.clock,
                                      reclaim_after_seconds=self.config.reclaim_after_seconds))
        return sources

    def wait_idle(self, timeout_seconds: float) -> bool:
        """Block until no consumer of this process holds a purge (tests, shutdown)."""
        deadline = time.monotonic() + timeout_seconds
        for worker in self.workers.values():
            if not worker.idle.wait(max(0.0, deadline - time.monotonic())):
                return False
        return True

    def status(self) -> list[TargetStatus]:
        """Every queue's state for every target (Redis first)."""
        return queue_status(self.config, self.connections, self.local, now=self.clock())

    def close(self) -> None:
        """Stop the consumers; what they held stays queued (taken over after the reclaim time)."""
        self._stop.set()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=2.0)
        self._threads = []
        self._pid = 0
        self.local.close()


def _send(call: Call, timeout_seconds: float) -> Reply:
    return send(call, timeout_seconds=timeout_seconds)


def queue_status(config: PurgeConfig, connections: Any, local: LocalPurgeQueue, *,
                 now: float) -> list[TargetStatus]:
    """The Redis streams' and the local file's state per target; raises on a Redis error."""
    statuses: list[TargetStatus] = []
    if connections is not None:
        from .redisqueue import RedisPurgeQueue

        queue = RedisPurgeQueue(connections, queue=config.queue, targets=list(config.targets))
        statuses.extend(queue.status(connections.sync(), now=now))
    if local.exists():
        statuses.extend(local.status(list(config.targets), now=now))
    return statuses


def queue_purges(config: Any, tags: Sequence[str], *, app_dir: str | os.PathLike[str] | None = None,
                 source: str = "cli") -> tuple[bool, str]:
    """Queue a purge of ``tags`` from outside the app (``scalekit invalidate``): (queued or
    nothing to do, one line saying where it went; "" when no target is configured). A relative
    ``state_dir`` is taken from ``app_dir``, as the app would."""
    if not config.cdn.purge.active:
        return True, ""
    from ...runtime import Runtime

    if app_dir is not None and not Path(config.state_dir).is_absolute():
        config = dataclasses.replace(config, state_dir=str(Path(app_dir, config.state_dir)))
    runtime = Runtime(config)
    try:
        purger = EdgePurger(runtime)
        queue = purger.enqueue({name: tag_items(tags) for name in config.cdn.purge.targets},
                               source=source)
    finally:
        runtime.close()
    targets = ", ".join(config.cdn.purge.targets)
    if queue == "redis":
        return True, f"edge purge queued for {targets} (sent by the fleet's app processes)"
    if queue == "local":
        return True, (f"edge purge queued for {targets} in {local_queue_path(config)} (sent by "
                      "this host's app processes)")
    return False, f"edge purge NOT queued for {targets}: neither Redis nor the local queue took it"
