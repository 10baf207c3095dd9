"""L2: Redis shared by the fleet, with short timeouts and a circuit breaker.

:class:`RedisConnections` owns the clients of one runtime: a sync client (WSGI, listener
thread), one asyncio client per event loop (ASGI), plain Redis or Redis Cluster, hiredis when
installed (redis-py picks it up). It never sends CLIENT or CONFIG (managed Redis often forbids
them): no client name, no ``CLIENT SETINFO`` (:data:`NO_CLIENT_INFO`, for every redis-py from
5.0), no retries (a retry would multiply the timeout a request can pay). Clients are created
lazily, so a Redis that is down at start-up is just an open breaker.

:class:`RedisTier` keeps entries under ``{key_prefix}e:{blake2b(key)}`` — a fixed-length key
that spreads over cluster slots; the cache key itself is inside the signed payload, so a hash
collision or a copied value is a miss, never someone else's response.

>>> from scalekit.config import RedisConfig
>>> connections = RedisConnections(RedisConfig(url="redis://127.0.0.1:1/0"))
>>> tier = RedisTier(connections)
>>> [tier.get("k") for _ in range(3)]  # nothing listens on port 1: misses, never exceptions
[None, None, None]
>>> connections.breaker.is_open  # three failures in a row
True
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import inspect
import logging
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from ...metrics.instruments import counter_handle
from ..codec import Codec
from ..entry import CachedEntry
from .base import TierMetrics, kept_until
from .breaker import CircuitBreaker
from .plans import Either, Plan, arun, run
from .redisget import (
    ASYNC_IDLE_CONNECTIONS,
    EventLoopLateError,
    HitPathGet,
    packed_get,
    was_loop_late,
)

__all__ = [
    "ASYNC_IDLE_CONNECTIONS",
    "NO_CLIENT_INFO",
    "UNANSWERED",
    "EventLoopLateError",
    "RedisConnections",
    "RedisTier",
    "entry_key",
    "packed_get",
    "redacted_url",
    "was_loop_late",
]

log = logging.getLogger("scalekit.cache")

# Failures that mean "Redis is not usable right now": network, timeouts, server errors such as
# OOM or CLUSTERDOWN, and the cluster client's own errors (RedisClusterException is not a
# RedisError: "cannot be connected", "slot not covered"). Tiers catch every Exception all
# the same — a cache fault must never fail a request — and log the unexpected ones.
REDIS_ERRORS = (redis.RedisError, redis.exceptions.RedisClusterException, OSError,
                asyncio.TimeoutError)


def _no_client_info() -> dict[str, Any]:
    """The options that keep redis-py from sending ``CLIENT SETINFO`` on connect.

    redis-py 7.2 and later take ``driver_info`` (and warn on ``lib_name``/``lib_version``);
    5.0 to 7.1 know only ``lib_name``/``lib_version`` and refuse ``driver_info`` with a
    TypeError on every connection. Which one is asked of the installed client's signature.
    """
    if "driver_info" in inspect.signature(redis.Redis.__init__).parameters:
        return {"driver_info": None}
    return {"lib_name": None, "lib_version": None}


NO_CLIENT_INFO = _no_client_info()

UNANSWERED: Any = object()  # what RedisConnections.ask gives when Redis was not asked or failed


def entry_key(prefix: str, key: str) -> str:
    """The Redis key of cache key ``key``: fixed length, spread over cluster slots."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
    return f"{prefix}e:{digest}"


class RedisConnections(HitPathGet):
    """The Redis clients of one runtime, the breaker they share, and L2's hit path GET."""

    def __init__(self, config: Any, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.prefix: str = config.key_prefix
        # Three failures in a row or half of twenty calls: one slow reply is not an outage.
        self.breaker = CircuitBreaker("redis", cool_down_seconds=config.circuit_cool_down_seconds,
                                      consecutive_failures=3, failure_rate=0.5,
                                      window_seconds=10.0, min_calls=20, monotonic=monotonic)
        super().__init__()
        self._sync: Any = None
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary())
        self._lock = threading.Lock()

    def _options(self) -> dict[str, Any]:
        options: dict[str, Any] = {
            "socket_timeout": self.config.socket_timeout_seconds,
            "socket_connect_timeout": self.config.connect_timeout_seconds,
            **NO_CLIENT_INFO,  # no CLIENT SETINFO: managed Redis may forbid CLIENT
        }
        password = self.config.resolved_password()  # given apart from the URL (then it has none)
        if password is not None:
            options["password"] = password
        return options

    def sync(self) -> Any:
        """The sync client (raises a Redis error if a cluster cannot be reached to build it)."""
        client = self._sync
        if client is None:
            with self._lock:
                if self._sync is None:
                    self._sync = self.new_sync_client()
                client = self._sync
        return client


    def new_sync_client(self, *, socket_timeout_seconds: float | None = None) -> Any:
        """A new sync client (the pub/sub listener uses its own, with a longer read timeout)."""
        options = self._options()
        if socket_timeout_seconds is not None:
            options["socket_timeout"] = socket_timeout_seconds
        factory = redis.cluster.RedisCluster if self.config.cluster else redis.Redis
        return factory.from_url(self.config.url, retry=Retry(NoBackoff(), 0), **options)

    def async_client(self) -> Any:
        """The asyncio client of the running event loop (clients cannot cross loops)."""
        loop = asyncio.get_running_loop()
        client = self._async.get(loop)
        if client is None:
            factory = redis.asyncio.cluster.RedisCluster if self.config.cluster else redis.asyncio.Redis
            client = factory.from_url(self.config.url, retry=AsyncRetry(NoBackoff(), 0),
                                      **self._options())
            self._async[loop] = client
        return client

    def ask(self, call: Either, *, failures: Any = None, bypassed: Any = None) -> Plan[Any]:
        """Redis's answer to ``call``, or :data:`UNANSWERED`: the breaker is open (counted in
        ``bypassed``) or the call failed (counted in ``failures``; the breaker hears of it
        unless the event loop, not Redis, was late). Never raises."""
        if not self.breaker.allow():
            if bypassed is not None:
                bypassed.inc()
            return UNANSWERED
        try:
            answer = yield call
        except Exception as error:  # every fault: a cache call never fails a request
            if failures is not None:
                failures.inc()
            if not isinstance(error, REDIS_ERRORS):
                log.error("unexpected error in a Redis call", exc_info=error)
            if not isinstance(error, EventLoopLateError):
                self.breaker.failure(error)
            return UNANSWERED
        self.breaker.success()
        return answer

    def command(self, name: str, *args: Any, **options: Any) -> Either:
        """Client command ``name`` as a plan yields it: on the sync client, or awaited on this
        event loop's asyncio client, where a timeout that only a late loop explains is raised
        as :class:`EventLoopLateError` (never counted against Redis)."""
        return Either(lambda: getattr(self.sync(), name)(*args, **options),
                      lambda: self._acommand(name, args, options))

    async def _acommand(self, name: str, args: tuple[Any, ...], options: dict[str, Any]) -> Any:
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            return await getattr(self.async_client(), name)(*args, **options)
        except Exception as error:
            elapsed = loop.time() - started
            if not isinstance(error, EventLoopLateError) and was_loop_late(error, elapsed, self.config):
                raise EventLoopLateError(f"the event loop ran {elapsed * 1000:.0f} ms for a "
                                         f"Redis {name.upper()}") from error
            raise

    def probe(self, *, timeout_seconds: float | None = None) -> tuple[str, str]:
        """One PING through the clients the tiers use: ``("ok" | "down" | "broken", detail)``.

        ``"broken"`` means every call would fail whether Redis is up or not: redis-py refuses
        our options (an unsupported version), or Redis refuses us (password, ACL). ``"down"``
        is a fault the breaker rides out. The PING waits ``timeout_seconds`` (default: the
        socket timeout a request would wait).
        """
        where = redacted_url(self.config.url)
        try:
            client = self.new_sync_client(socket_timeout_seconds=timeout_seconds)
            try:
                client.ping()  # PING only: managed Redis may forbid CLIENT / CONFIG / INFO
                self._build_connections(client)
            finally:
                client.close()
        except (redis.exceptions.AuthenticationError, redis.exceptions.ResponseError) as error:
            return "broken", f"{where} refuses scalekit: {type(error).__name__}: {error}"
        except REDIS_ERRORS as error:
            return "down", f"{where}: {type(error).__name__}: {error}"
        except Exception as error:  # noqa: BLE001 - what we report is exactly this
            return "broken", (f"redis-py {redis.__version__} cannot be used as configured "
                              f"({type(error).__name__}: {error}); install a supported one: "
                              "pip install 'scalekit[redis]'")
        kind = "cluster" if self.config.cluster else "server"
        return "ok", f"{kind} at {where} answers PING"

    def _build_connections(self, client: Any) -> None:
        """Build (without connecting) the connections of the hit paths and the asyncio client,
        so options a redis-py version refuses show now, not on every request."""
        if self.config.cluster:
            return
        pool = client.connection_pool
        pool.connection_class(**pool.connection_kwargs)
        async_pool = redis.asyncio.Redis.from_url(self.config.url, **self._options()).connection_pool
        async_pool.connection_class(**async_pool.connection_kwargs)

    def report_start_up(self) -> None:
        """Log what :meth:`probe` finds, once at start-up: an error when the tier cannot work."""
        state, detail = self.probe()
        if state == "broken":
            log.error("cache tier redis unusable: %s. L2, fleet invalidation and leases are off "
                      "until this is fixed (scalekit check shows it too)", detail)
        elif state == "down":
            log.warning("Redis does not answer at start-up (%s); the cache runs without L2 and "
                        "queues invalidations until it does", detail)

    def close(self) -> None:
        """Close the sync client and this thread's GET connection (async ones close with
        their loop; other threads' GET connections with their threads)."""
        self.close_get_connection()
        with self._lock:
            client, self._sync = self._sync, None
        if client is not None:
            try:
                client.close()
            except REDIS_ERRORS:
                pass

    async def aclose(self) -> None:
        """Close this event loop's asyncio client and its idle GET connections."""
        await self.aclose_get_connections()
        client = self._async.pop(asyncio.get_running_loop(), None)
        if client is not None:
            try:
                await client.aclose()
            except REDIS_ERRORS:
                pass


class RedisTier:
    """L2 store. Every call is bounded by the socket timeout; a fault opens the breaker."""

    name = "redis"

    def __init__(
        self,
        connections: RedisConnections,
        *,
        codec: Codec | None = None,
        clock: Callable[[], float] = time.time,
        max_entry_bytes: int = 8 * 1024 * 1024,
        retain_stale_seconds: float = 30.0,
    ) -> None:
        self.connections = connections
        self.codec = codec or Codec()
        self.clock = clock
        self.max_entry_bytes = max_entry_bytes
        self.retain_stale_seconds = retain_stale_seconds
        self.breaker = connections.breaker
        self._metrics = TierMetrics(self.name)
        self._count_hit = functools.partial(counter_handle(self._metrics.hit).inc, 1)

    # ----------------------------------------------------------------- helpers
    def _decode(self, key: str, data: bytes | None) -> CachedEntry | None:
        if data is None:
            self._metrics.miss.inc()
            return None
        entry, _outcome = self.codec.decode(key, data)
        if entry is None:
            self._metrics.corrupt.inc()
            return None
        if kept_until(entry, retain_stale_seconds=self.retain_stale_seconds) <= self.clock():
            self._metrics.miss.inc()  # Redis keeps time on its own clock; ours decides
            return None
        self._count_hit()
        return entry

    def _encode(self, key: str, entry: CachedEntry) -> tuple[bytes, int] | None:
        ttl_ms = int((kept_until(entry, retain_stale_seconds=self.retain_stale_seconds)
                      - self.clock()) * 1000)
        if ttl_ms <= 0:
            return None
        data = self.codec.encode(key, entry)
        if len(data) > self.max_entry_bytes:
            self._metrics.too_large.inc()
            return None
        return data, ttl_ms

    # ----------------------------------------------------------------- faces
    def get(self, key: str) -> tuple[CachedEntry, str] | None:
        return run(self._get(key))

    async def aget(self, key: str) -> tuple[CachedEntry, str] | None:
        return await arun(self._get(key))

    def set(self, key: str, entry: CachedEntry) -> None:
        run(self._set(key, entry))

    async def aset(self, key: str, entry: CachedEntry) -> None:
        await arun(self._set(key, entry))

    def try_set(self, key: str, entry: CachedEntry) -> bool:
        """Store ``entry``; False if it was not stored (too large, expired, Redis fault)."""
        return run(self._set(key, entry))

    async def atry_set(self, key: str, entry: CachedEntry) -> bool:
        return await arun(self._set(key, entry))

    def delete(self, key: str) -> None:
        run(self._delete(key))

    async def adelete(self, key: str) -> None:
        await arun(self._delete(key))

    def try_delete(self, key: str) -> bool:
        return run(self._delete(key))

    async def atry_delete(self, key: str) -> bool:
        return await arun(self._delete(key))

    # ----------------------------------------------------------------- plans
    def _get(self, key: str) -> Plan[tuple[CachedEntry, str] | None]:
        connections = self.connections
        redis_key = entry_key(connections.prefix, key)
        data = yield from connections.ask(
            Either(functools.partial(connections.get_bytes, redis_key),
                   functools.partial(connections.aget_bytes, redis_key)),
            failures=self._metrics.error, bypassed=self._metrics.bypass)
        if data is UNANSWERED:
            return None
        entry = self._decode(key, data)
        if entry is None and data is not None:
            # Corrupt or refused: remove it so nobody pays to decode it again.
            yield from self._delete(key)
        return (entry, self.name) if entry is not None else None

    def _set(self, key: str, entry: CachedEntry) -> Plan[bool]:
        encoded = self._encode(key, entry)
        if encoded is None:
            return False
        command = self.connections.command("set", entry_key(self.connections.prefix, key),
                                           encoded[0], px=encoded[1])
        if (yield from self.connections.ask(command, failures=self._metrics.store_error)) is UNANSWERED:
            return False
        self._metrics.stored.inc()
        return True

    def _delete(self, key: str) -> Plan[bool]:
        command = self.connections.command("delete", entry_key(self.connections.prefix, key))
        answer = yield from self.connections.ask(command, failures=self._metrics.store_error)
        return answer is not UNANSWERED

    def close(self) -> None:
        """The connections are shared with generations and leases; their owner closes them."""


def redacted_url(url: str) -> str:
    """The URL without its password."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.split('@', 1)[1]}"
