"""L2's hit path GET on redis-py's connection layer, below its client API.

This is the one place scalekit uses redis-py's connections directly (``connection_pool.
connection_class`` and ``connection_kwargs``, a connection's ``connect``,
``send_packed_command``, ``read_response`` and ``disconnect``): redis-py's command path (pool
checkout, retries, hooks, packing, and on asyncio a task per write) costs more than the loopback
round trip itself. ``python bench/cache_tiers.py l2`` prints what it buys: the hit through
redis-py's ``client.get`` instead was 2.30x (sync) and 1.88x (asyncio) one plain redis-py GET
of the same bytes in one run, the target being 1.3x; with this GET, 1.15x and 1.02x.
``tests/cache/tiers/test_redis_hit_path.py`` fails loudly on a redis-py release that changes
any of these (the README's dependency table names them).
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from typing import Any

import redis

from ...forks import pid

__all__ = ["ASYNC_IDLE_CONNECTIONS", "EventLoopLateError", "HitPathGet", "packed_get", "was_loop_late"]

# GET in RESP, the same bytes redis-py's packer writes for one str argument (utf-8): built
# with one %-format instead of the packer's per-call encoding and list building.
_GET_COMMAND = b"*2\r\n$3\r\nGET\r\n$%d\r\n%b\r\n"

# Idle hit-path connections kept per event loop once a burst of concurrent L2 lookups is
# over; the rest are closed. Enough for the concurrency of one worker without holding a
# connection per request ever seen.
ASYNC_IDLE_CONNECTIONS = 64


class EventLoopLateError(TimeoutError):
    """A Redis call ran out of time because the event loop fired its timer late (busy with other
    work), not because Redis was slow: a miss for that request, never counted against Redis."""


def was_loop_late(error: BaseException, elapsed_seconds: float, config: Any) -> bool:
    """Whether ``error`` after ``elapsed_seconds`` on the loop's clock says the event loop was
    busy rather than Redis slow: a timeout that took half a socket timeout longer than any
    connect plus read could (redis-py's own asyncio timeouts count loop time too)."""
    if isinstance(error, EventLoopLateError):
        return True
    if not isinstance(error, (asyncio.TimeoutError, redis.exceptions.TimeoutError)):
        return False
    budget = float(config.connect_timeout_seconds) + 1.5 * float(config.socket_timeout_seconds)
    return elapsed_seconds > budget


def packed_get(key: str) -> bytes:
    """The RESP bytes of ``GET key``, as redis-py would send them.

    >>> packed_get("k")
    b'*2\\r\\n$3\\r\\nGET\\r\\n$1\\r\\nk\\r\\n'
    """
    encoded = key.encode("utf-8")
    return _GET_COMMAND % (len(encoded), encoded)


class HitPathGet:
    """The GET of :class:`~scalekit.cache.tiers.redis.RedisConnections`' hit path: a
    per-thread connection (sync) and idle connections per event loop (asyncio), made from the
    client's own pool options so they keep its timeouts, password and parser."""

    config: Any

    def __init__(self) -> None:
        # Per event loop: connections of aget_bytes that finished their last GET cleanly.
        self._async_idle: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list[Any]] = (
            weakref.WeakKeyDictionary())
        self._thread = threading.local()

    def sync(self) -> Any:
        raise NotImplementedError

    def async_client(self) -> Any:
        raise NotImplementedError

    def get_bytes(self, key: str) -> bytes | None:
        """GET ``key`` (sync): the hit path of L2, on this thread's own connection.

        Why not ``client.get``: redis-py's command path (pool checkout, retries, observability
        hooks, packing) costs more than the loopback round trip itself; a plain server gets a
        per-thread connection with the same options (so the same socket timeout) and pays
        only the round trip. Any error drops that connection (the next call reconnects) and
        is raised to the tier.
        """
        if self.config.cluster:
            return self.sync().get(key)  # type: ignore[no-any-return]
        connection = getattr(self._thread, "connection", None)
        # Made in this process: one made before a fork shares its socket with the parent
        # (forks.pid() is a global read where os.getpid() is a system call on every hit).
        if connection is not None and self._thread.pid == pid():
            try:
                return self._sync_get(connection, key)
            except redis.exceptions.ConnectionError:
                # The kept connection was closed while idle (Redis `timeout`, a proxy, a
                # restart): GET is safe to repeat, once, on a new connection. Timeouts are
                # not retried, so a request never waits more than one socket timeout.
                pass
        pool = self.sync().connection_pool
        connection = pool.connection_class(**pool.connection_kwargs)
        self._thread.connection, self._thread.pid = connection, pid()
        # Closed once its thread is gone (a server's worker thread that ended), not left to the
        # garbage collector as an open socket.
        weakref.finalize(threading.current_thread(), connection.disconnect)
        return self._sync_get(connection, key)

    @staticmethod
    def _sync_get(connection: Any, key: str) -> bytes | None:
        try:
            # health_check_interval is never set, so there is no health check to skip.
            connection.send_packed_command((packed_get(key),), check_health=False)
            return connection.read_response()  # type: ignore[no-any-return]
        except BaseException:
            connection.disconnect()
            raise

    async def aget_bytes(self, key: str) -> bytes | None:
        """GET ``key`` (asyncio): the hit path of L2, on an idle connection of this event loop.

        Why not ``client.get``: redis-py's asyncio command path takes the pool lock, probes
        the connection on checkout and, with a socket timeout, runs every write in a task of
        its own (``asyncio.wait_for``); together several times the loopback round trip.
        Here the connection has no timeout of its own and the whole GET runs under one
        ``asyncio.timeout(socket_timeout_seconds)``, so a request still waits no longer than
        the configured timeout. A connection whose GET did not finish (error, timeout,
        cancellation) is closed, never reused: its reply could still arrive.
        """
        if self.config.cluster:
            return await self.async_client().get(key)  # type: ignore[no-any-return]
        loop = asyncio.get_running_loop()
        idle = self._async_idle.get(loop)
        if idle is None:
            idle = self._async_idle[loop] = []
        data: bytes | None = None
        connection = None
        if idle:
            connection = idle.pop()
            try:
                data = await self._async_get(connection, key)
            except redis.exceptions.ConnectionError:
                connection = None  # closed while idle: once more on a new one (see get_bytes)
        if connection is None:
            connection = await self._new_async_connection()
            data = await self._async_get(connection, key)
        if len(idle) < ASYNC_IDLE_CONNECTIONS:
            idle.append(connection)
        else:
            await connection.disconnect(nowait=True)
        return data

    async def _async_get(self, connection: Any, key: str) -> bytes | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.socket_timeout_seconds
        try:
            async with asyncio.timeout_at(deadline):
                await connection.send_packed_command((packed_get(key),), check_health=False)
                return await connection.read_response()  # type: ignore[no-any-return]
        except BaseException as error:
            await connection.disconnect(nowait=True)
            self._raise_if_loop_late(error, loop.time() - deadline)
            raise

    def _raise_if_loop_late(self, error: BaseException, lateness_seconds: float) -> None:
        # A healthy loop fires the timer within a millisecond or two of its deadline; one that
        # fired it half a timeout late was busy, and the reply may well have been waiting.
        if isinstance(error, TimeoutError) and lateness_seconds > self.config.socket_timeout_seconds / 2:
            raise EventLoopLateError(
                f"the event loop ran {lateness_seconds * 1000:.0f} ms late") from error

    async def _new_async_connection(self) -> Any:
        pool = self.async_client().connection_pool
        # No socket timeout on the connection: aget_bytes bounds each GET as a whole.
        connection = pool.connection_class(**{**pool.connection_kwargs, "socket_timeout": None})
        loop = asyncio.get_running_loop()
        deadline = (loop.time() + self.config.connect_timeout_seconds
                    + self.config.socket_timeout_seconds)
        try:
            # The handshake (AUTH, SELECT) reads with the connection's timeout, which is
            # none: bound connect + handshake here as a client with timeouts would.
            async with asyncio.timeout_at(deadline):
                await connection.connect()
        except BaseException as error:
            await connection.disconnect(nowait=True)
            self._raise_if_loop_late(error, loop.time() - deadline)
            raise
        return connection

    def close_get_connection(self) -> None:
        """Close this thread's GET connection (other threads' close with their threads)."""
        connection = getattr(self._thread, "connection", None)
        if connection is not None:
            connection.disconnect()
            self._thread.connection = None

    async def aclose_get_connections(self) -> None:
        """Close this event loop's idle GET connections."""
        for connection in self._async_idle.pop(asyncio.get_running_loop(), ()):
            await connection.disconnect(nowait=True)
