"""Fleet-wide tag generations: Redis holds them, pub/sub spreads them, each instance keeps a copy.

``invalidate(tags)`` runs one Lua script on Redis (INCR the sequence, HSET each tag to it,
PUBLISH ``{sequence, tags, send time, origin}``) and applies the result locally before
returning, so this instance stops serving the old entries at once (invariant 2). Every instance
runs one listener thread (serving WSGI and ASGI alike: it only updates a dict) that applies
published invalidations to its local generations, measures the propagation delay from the
send time in the message, and pings Redis every ``heartbeat_seconds``.

Bounded staleness: an instance only trusts its local copy up to ``max_staleness_seconds`` after
the last ping Redis answered (a pong proves every message published before the ping has
arrived). Past that — channel down, Redis down, never connected — ``is_current`` is False for
every tagged entry, so L1/L3 serve nothing that might have been invalidated meanwhile. On
(re)connection the listener subscribes first, then resyncs: invalidations made here while
Redis was unreachable are replayed with fresh sequence numbers; if Redis lost its data (its
sequence is behind ours) ours is raised so generation numbers never repeat; then every tag's
generation in Redis is adopted (generations only move forward).

Keys share one hash tag (``{prefix}{generations}:…``) so the scripts are Redis Cluster safe;
PUBLISH reaches every node's subscribers in a cluster.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from ... import instruments
from ..generations import LocalGenerations
from ..store import TagStamp
from .redis import REDIS_ERRORS, RedisConnections

__all__ = ["FleetGenerations"]

log = logging.getLogger("scalekit.cache")

_INVALIDATE = """
local sequence = redis.call('INCR', KEYS[1])
for i = 4, #ARGV do redis.call('HSET', KEYS[2], ARGV[i], sequence) end
local tags = {}
for i = 4, #ARGV do tags[#tags + 1] = ARGV[i] end
redis.call('PUBLISH', ARGV[1], cjson.encode({s = sequence, t = tonumber(ARGV[2]), o = ARGV[3], g = tags}))
return sequence
"""
# Raise the sequence to at least ARGV[1] (Redis restarted empty while instances remembered).
_RAISE_SEQUENCE = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local floor = tonumber(ARGV[1])
if current < floor then redis.call('SET', KEYS[1], floor); return floor end
return current
"""
_RESYNC_PAGE = 5000
_REPLAY_BATCH = 1000


class FleetGenerations:
    """Generations shared by the fleet through Redis; reads are local dict lookups."""

    def __init__(
        self,
        local: LocalGenerations,
        connections: RedisConnections,
        *,
        channel: str = "invalidations",
        max_staleness_seconds: float = 3.0,
        heartbeat_seconds: float = 0.5,
        monotonic: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.local = local
        self.connections = connections
        prefix = connections.prefix
        self.sequence_key = f"{prefix}{{generations}}:sequence"
        self.tags_key = f"{prefix}{{generations}}:tags"
        self.channel = f"{prefix}{channel}"
        self.max_staleness_seconds = max_staleness_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self._monotonic = monotonic
        self._wall_clock = wall_clock
        self.origin = uuid.uuid4().hex[:12]
        # Trust the local copy until this monotonic time; -inf: never heard from Redis yet.
        self._trusted_until = float("-inf")
        self._pending: set[str] = set()  # invalidated here, not yet in Redis
        self._pending_lock = threading.Lock()
        self._listener: threading.Thread | None = None
        self._listener_pid = 0
        self._stop = threading.Event()
        self._scripts: dict[int, tuple[Any, Any]] = {}
        self.connected = threading.Event()
        self._remote = instruments.CACHE_INVALIDATIONS.labels("remote")
        self._delay = instruments.CACHE_INVALIDATION_PROPAGATION

    # ----------------------------------------------------------------- reads (hit path)
    def sequence(self) -> int:
        if self._listener_pid != os.getpid():
            self.start()
        return self.local.sequence()

    def stamp(self, tags: Iterable[str], since: int) -> TagStamp | None:
        return self.local.stamp(tags, since)

    def is_current(self, stamp: TagStamp) -> bool:
        """Local comparisons; False for tagged entries once the channel has been silent too long."""
        if stamp and self._monotonic() >= self._trusted_until:
            return False
        return self.local.is_current(stamp)

    @property
    def is_trusted(self) -> bool:
        """Whether the channel has been heard within ``max_staleness_seconds``."""
        return self._monotonic() < self._trusted_until

    # ----------------------------------------------------------------- writes
    def invalidate(self, tags: Iterable[str]) -> None:
        """Invalidate ``tags`` here at once and, through Redis, in the whole fleet."""
        tag_list = sorted({tag for tag in tags if tag})
        if tag_list and self.publish(tag_list) is None:
            self._invalidate_offline(tag_list)

    def publish(self, tags: Iterable[str]) -> int | None:
        """Invalidate ``tags`` in Redis and here; the new sequence, or None if Redis failed
        (then nothing was applied: the caller decides, e.g. the CLI reports it)."""
        tag_list = sorted({tag for tag in tags if tag})
        breaker = self.connections.breaker
        if not tag_list or not breaker.allow():
            return None
        try:
            sequence = int(self._script(self.connections.sync(), _INVALIDATE)(
                keys=[self.sequence_key, self.tags_key], args=self._args(tag_list)))
        except Exception as error:  # noqa: BLE001 - see REDIS_ERRORS
            breaker.failure(error)
            return None
        breaker.success()
        self.local.apply(sequence, tag_list)
        return sequence

    async def ainvalidate(self, tags: Iterable[str]) -> None:
        tag_list = sorted({tag for tag in tags if tag})
        if not tag_list:
            return
        breaker = self.connections.breaker
        if breaker.allow():
            try:
                client = self.connections.async_client()
                sequence = await client.eval(_INVALIDATE, 2, self.sequence_key, self.tags_key,
                                             *self._args(tag_list))
            except Exception as error:  # noqa: BLE001 - see REDIS_ERRORS
                breaker.failure(error)
            else:
                breaker.success()
                self.local.apply(int(sequence), tag_list)
                return
        self._invalidate_offline(tag_list)

    def _invalidate_offline(self, tag_list: list[str]) -> None:
        # Redis unreachable: effective here now, replayed to the fleet on reconnection (also
        # after a restart, when the local generations keep an outbox on disk).
        self.local.invalidate(tag_list)
        remember = getattr(self.local, "remember_unpublished", None)
        if remember is not None:
            remember(tag_list)
        with self._pending_lock:
            self._pending.update(tag_list)

    def _args(self, tag_list: list[str]) -> list[str]:
        return [self.channel, repr(self._wall_clock()), self.origin, *tag_list]

    async def asequence(self) -> int:
        return self.sequence()

    async def astamp(self, tags: Iterable[str], since: int) -> TagStamp | None:
        return self.stamp(tags, since)

    def _script(self, client: Any, source: str) -> Any:
        scripts = self._scripts.get(id(client))
        if scripts is None or scripts[0] is not client:
            scripts = (client, {})
            self._scripts = {id(client): scripts}
        registered = scripts[1].get(source)
        if registered is None:
            registered = scripts[1][source] = client.register_script(source)
        return registered

    # ----------------------------------------------------------------- listener
    def start(self) -> None:
        """Start (or restart after a fork) the listener thread; returns at once."""
        if self._listener_pid == os.getpid():
            return
        self._listener_pid = os.getpid()
        self._trusted_until = float("-inf")
        self._stop = threading.Event()
        self._listener = threading.Thread(target=self._listen, args=(self._stop,),
                                          name="scalekit-invalidations", daemon=True)
        self._listener.start()

    def wait_connected(self, timeout_seconds: float) -> bool:
        """Block until the listener has subscribed and resynced (tests, start-up)."""
        self.start()
        return self.connected.wait(timeout_seconds)

    def _listen(self, stop: threading.Event) -> None:
        backoff = 0.05
        while not stop.is_set():
            client = None
            try:
                client = self.connections.new_sync_client(
                    socket_timeout_seconds=max(1.0, 2 * self.heartbeat_seconds))
                self._follow(client, stop)
                backoff = 0.05
            except Exception as error:  # the listener must outlive any fault, ours included
                if not isinstance(error, REDIS_ERRORS):
                    log.exception("invalidation listener failed; reconnecting")
                if self.connected.is_set():
                    log.warning("invalidation channel lost (%s: %s); local entries are trusted "
                                "for %.1f s more", type(error).__name__, error,
                                max(0.0, self._trusted_until - self._monotonic()))
                self.connected.clear()
            finally:
                if client is not None:
                    try:
                        client.close()
                    except REDIS_ERRORS:
                        pass
            stop.wait(backoff)
            backoff = min(backoff * 2, 1.0)

    def _follow(self, client: Any, stop: threading.Event) -> None:
        pubsub = client.pubsub()
        try:
            pubsub.subscribe(self.channel)
            ping_sent = self._monotonic()
            self._resync(client)  # after subscribing: nothing published meanwhile is missed
            self._trusted_until = ping_sent + self.max_staleness_seconds
            self.connected.set()
            next_ping = self._monotonic()
            while not stop.is_set():
                now = self._monotonic()
                if now >= next_ping:
                    pubsub.ping(repr(now))
                    next_ping = now + self.heartbeat_seconds
                if self._pending:
                    self._flush_pending(client)
                message = pubsub.get_message(timeout=self.heartbeat_seconds / 2)
                if message is not None:
                    self._handle(message)
        finally:
            try:
                pubsub.close()
            except REDIS_ERRORS:
                pass

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "pong":
            try:
                sent = float(message["data"])
            except (TypeError, ValueError):
                return
            # Every message published before that ping reached us before this pong.
            self._trusted_until = max(self._trusted_until, sent + self.max_staleness_seconds)
        elif kind == "message":
            try:
                payload = json.loads(message["data"])
                sequence, tags = int(payload["s"]), [str(tag) for tag in payload["g"]]
            except (ValueError, KeyError, TypeError):
                log.warning("ignored a malformed message on %s", self.channel)
                return
            self.local.apply(sequence, tags)
            if payload.get("o") != self.origin:
                self._remote.inc()
                sent_at = payload.get("t")
                if isinstance(sent_at, (int, float)):
                    self._delay.observe(max(0.0, self._wall_clock() - sent_at))

    def _resync(self, client: Any) -> None:
        """Adopt every generation Redis has, then replay what Redis is missing."""
        self._script(client, _RAISE_SEQUENCE)(keys=[self.sequence_key],
                                              args=[self.local.sequence()])
        remote: dict[str, int] = {}
        cursor = 0
        while True:
            cursor, page = client.hscan(self.tags_key, cursor, count=_RESYNC_PAGE)
            for tag, generation in page.items():
                remote[tag.decode("utf-8")] = int(generation)
            if cursor == 0:
                break
        with self._pending_lock:
            missing, self._pending = set(self._pending), set()
        unpublished = getattr(self.local, "unpublished", None)
        if unpublished is not None:
            missing.update(unpublished())  # queued before a restart of this instance
        # Ahead of Redis: invalidated here while it was unreachable, or Redis lost its data.
        missing.update(tag for tag, generation in self.local.snapshot().items()
                       if generation > remote.get(tag, 0))
        by_generation: dict[int, list[str]] = {}
        for tag, generation in remote.items():
            by_generation.setdefault(generation, []).append(tag)
        for generation, tags in sorted(by_generation.items()):
            self.local.apply(generation, tags)
        self._replay(client, sorted(missing))
        self.connections.breaker.success()

    def _flush_pending(self, client: Any) -> None:
        """Publish invalidations made here while the request path could not reach Redis
        (its breaker open) although the channel stayed up: the fleet must not wait for a
        reconnection to hear them."""
        with self._pending_lock:
            pending, self._pending = sorted(self._pending), set()
        self._replay(client, pending)

    def _replay(self, client: Any, tags: list[str]) -> None:
        """Invalidate ``tags`` afresh through Redis (new sequence numbers), in batches."""
        try:
            for start in range(0, len(tags), _REPLAY_BATCH):
                batch = tags[start:start + _REPLAY_BATCH]
                sequence = self._script(client, _INVALIDATE)(
                    keys=[self.sequence_key, self.tags_key], args=self._args(batch))
                self.local.apply(int(sequence), batch)
                forget = getattr(self.local, "forget_unpublished", None)
                if forget is not None:
                    forget(batch)
        except BaseException:
            with self._pending_lock:
                self._pending.update(tags)  # again on the next tick or reconnection
            raise

    def close(self) -> None:
        """Stop the listener (the connections' owner closes the clients)."""
        self._stop.set()
        listener = self._listener
        if listener is not None and listener is not threading.current_thread():
            listener.join(timeout=2.0)
        self._listener_pid = 0
        self.connected.clear()
        self.local.close()
