"""The L2 hit path's own GET (sync and asyncio): same bytes as redis-py, either parser, bounded
by the timeout, and a connection whose reply is still due is never used again."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import redis
import redis.connection
import redis.utils

from scalekit.cache.tiers.redis import ASYNC_IDLE_CONNECTIONS, RedisConnections, packed_get
from scalekit.config import RedisConfig

from .conftest import FakeClock
from .servers import RedisServer, TcpProxy

pytestmark = pytest.mark.redis


def connections(url: str, *, timeout_seconds: float = 0.2) -> RedisConnections:
    return RedisConnections(RedisConfig(url=url, socket_timeout_seconds=timeout_seconds,
                                        connect_timeout_seconds=timeout_seconds),
                            monotonic=FakeClock())


@pytest.mark.parametrize("key", [
    pytest.param("scalekit:e:2aba2669c6ddead94354f879ff4f017f", id="entry key"),
    pytest.param("préfixe:e:0", id="non-ASCII prefix"),
    pytest.param("", id="empty"),
])
def test_packed_get_is_what_redis_py_sends(key: str) -> None:
    packer = redis.connection.PythonRespSerializer(
        6000, redis.connection.Encoder("utf-8", "strict", False).encode)
    assert packed_get(key) == b"".join(packer.pack("GET", key))


def test_the_parser_in_use_is_hiredis_exactly_when_installed(redis_server: RedisServer) -> None:
    hub = connections(redis_server.url)
    assert hub.get_bytes("absent") is None
    parser = hub._thread.connection._parser
    assert isinstance(parser, redis._parsers._HiredisParser) == redis.utils.HIREDIS_AVAILABLE
    hub.close()


WITHOUT_HIREDIS = r"""
import asyncio, json, sys
sys.modules["hiredis"] = None  # import hiredis now fails: redis-py falls back to its own parser
import redis._parsers, redis.utils
from scalekit.cache.codec import Codec
from scalekit.cache.entry import CachedEntry
from scalekit.cache.tiers.redis import RedisConnections, RedisTier
from scalekit.config import RedisConfig
tier = RedisTier(RedisConnections(RedisConfig(url=sys.argv[1], key_prefix="nohiredis:")),
                 codec=Codec(secret=b"a-secret-of-16-bytes-or-more"))
entry = CachedEntry(status=200, headers=(("content-type", "text/plain"),), body=b"x" * 3000,
                    request_time=9e9, response_time=9e9, corrected_initial_age_seconds=0.0,
                    freshness_lifetime_seconds=60.0)
tier.set("k", entry)
async def aget():
    found = await tier.aget("k")
    await tier.connections.aclose()
    return found
print(json.dumps({
    "hiredis": redis.utils.HIREDIS_AVAILABLE,
    "sync": tier.get("k") == (entry, "redis"),
    "hiredis_parser": isinstance(tier.connections._thread.connection._parser,
                                 redis._parsers._HiredisParser),
    "async": asyncio.run(aget()) == (entry, "redis"),
}))
"""


def test_hit_path_works_without_hiredis(redis_server: RedisServer) -> None:
    done = subprocess.run([sys.executable, "-c", WITHOUT_HIREDIS, redis_server.url],
                          capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(done.stdout) == {"hiredis": False, "sync": True, "hiredis_parser": False,
                                       "async": True}


# ------------------------------------------------------------------------- asyncio GET
def run(scenario: Callable[[], object]) -> None:
    asyncio.run(scenario())  # type: ignore[arg-type]


def test_async_gets_reuse_one_idle_connection(redis_server: RedisServer) -> None:
    hub = connections(redis_server.url)
    hub.sync().set("idle:k", b"v")

    async def scenario() -> None:
        assert [await hub.aget_bytes("idle:k") for _ in range(5)] == [b"v"] * 5
        idle = hub._async_idle[asyncio.get_running_loop()]
        assert len(idle) == 1
        found = await asyncio.gather(*(hub.aget_bytes("idle:k") for _ in range(8)))
        assert found == [b"v"] * 8
        assert 1 <= len(idle) <= min(8, ASYNC_IDLE_CONNECTIONS)
        await hub.aclose()
        assert not any(connection.is_connected for connection in idle)

    run(scenario)
    hub.close()


@pytest.mark.parametrize("url", [
    pytest.param("redis://127.0.0.1:{port}/0", id="GET never answered"),
    pytest.param("redis://:secret@127.0.0.1:{port}/3", id="AUTH + SELECT never answered"),
])
def test_async_get_costs_at_most_its_timeouts(blackhole: int, url: str) -> None:
    # The hit path's connection has no socket timeout of its own: aget_bytes bounds it.
    hub = connections(url.format(port=blackhole), timeout_seconds=0.2)

    async def scenario() -> None:
        started = time.monotonic()
        with pytest.raises((TimeoutError, redis.RedisError)):
            await hub.aget_bytes("k")
        assert time.monotonic() - started < 0.2 + 0.2 + 0.3

    run(scenario)


async def read_command(reader: asyncio.StreamReader) -> list[bytes]:
    header = await reader.readline()
    if not header:
        return []
    arguments = []
    for _ in range(int(header[1:])):
        size = int((await reader.readline())[1:])
        arguments.append((await reader.readexactly(size + 2))[:-2])
    return arguments


@asynccontextmanager
async def slow_server(delay_seconds: float) -> AsyncIterator[int]:
    """A RESP server answering ``GET key`` with ``key``; keys starting "slow" after a delay."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while command := await read_command(reader):
                if command[0] == b"HELLO":
                    # RESP3 handshake, answered as Redis does (redis-py >= 8.2 checks "proto").
                    writer.write(b"%3\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$5\r\n"
                                 b"7.2.4\r\n$5\r\nproto\r\n:3\r\n")
                    continue
                key = command[1]
                if key.startswith(b"slow"):
                    await asyncio.sleep(delay_seconds)
                writer.write(b"$%d\r\n%b\r\n" % (len(key), key))
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


def test_connection_of_a_cancelled_get_is_never_reused() -> None:
    async def scenario() -> None:
        async with slow_server(delay_seconds=0.1) as port:
            hub = connections(f"redis://127.0.0.1:{port}/0", timeout_seconds=1.0)
            assert await hub.aget_bytes("warm") == b"warm"
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(hub.aget_bytes("slow-reply"), 0.02)
            await asyncio.sleep(0.15)  # the late reply has arrived on the cancelled connection
            assert await hub.aget_bytes("mine") == b"mine"
            await hub.aclose()

    run(scenario)


def test_async_get_timeout_closes_the_connection() -> None:
    async def scenario() -> None:
        async with slow_server(delay_seconds=0.3) as port:
            hub = connections(f"redis://127.0.0.1:{port}/0", timeout_seconds=0.1)
            with pytest.raises(TimeoutError):
                await hub.aget_bytes("slow-reply")
            assert hub._async_idle[asyncio.get_running_loop()] == []
            await asyncio.sleep(0.3)
            assert await hub.aget_bytes("mine") == b"mine"
            await hub.aclose()

    run(scenario)


def test_a_forked_child_opens_its_own_get_connection(redis_server: RedisServer) -> None:
    hub = connections(redis_server.url)
    hub.sync().set("fork:k", b"v")
    assert hub.get_bytes("fork:k") == b"v"
    parent = hub._thread.connection
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child: its GET must not read the parent's socket
        try:
            found = hub.get_bytes("fork:k")
            os.write(write, f"{found == b'v'} {hub._thread.connection is not parent}".encode())
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(child, 0)
    with os.fdopen(read) as report:
        assert report.read() == "True True"
    assert hub._thread.connection is parent  # the parent keeps its own
    assert hub.get_bytes("fork:k") == b"v"
    hub.close()



def test_sync_get_survives_its_kept_connection_being_closed_while_idle(
        redis_server: RedisServer, redis_proxy: TcpProxy) -> None:
    """What Redis's idle ``timeout``, a proxy or a failover does to a kept connection: the next
    GET is repeated once on a new connection, without an error or an open breaker."""
    hub = connections(redis_proxy.url)
    writer = redis.Redis.from_url(redis_server.url)
    writer.set("k", b"v")
    writer.close()
    assert hub.get_bytes("k") == b"v"
    kept = hub._thread.connection
    redis_proxy.cut()
    redis_proxy.restore()
    assert hub.get_bytes("k") == b"v"
    assert hub._thread.connection is not kept
    assert hub.breaker.allow()
    hub.close()


def test_async_get_survives_its_idle_connection_being_closed(
        redis_server: RedisServer, redis_proxy: TcpProxy) -> None:
    hub = connections(redis_proxy.url)
    writer = redis.Redis.from_url(redis_server.url)
    writer.set("k", b"v")
    writer.close()

    async def scenario() -> tuple[bytes | None, bytes | None]:
        first = await hub.aget_bytes("k")
        redis_proxy.cut()
        redis_proxy.restore()
        second = await hub.aget_bytes("k")
        await hub.aclose()
        return first, second

    assert asyncio.run(scenario()) == (b"v", b"v")
    hub.close()

def test_a_timeout_is_not_retried(blackhole: int) -> None:
    """Only a closed connection is retried: a GET that times out costs one timeout, not two."""
    hub = connections(f"redis://127.0.0.1:{blackhole}/0", timeout_seconds=0.2)
    started = time.monotonic()
    with pytest.raises(redis.exceptions.TimeoutError):
        hub.get_bytes("k")
    assert time.monotonic() - started < 0.4 + 0.2  # one connect + one read at most
    hub.close()


def test_redis_py_connection_layer_is_what_the_hit_path_uses() -> None:
    """The hit path's GET uses redis-py below its client API (scalekit/cache/tiers/redisget.py):
    a release that renames or reshapes any of these fails here, not as misses in production."""
    import inspect

    import redis.asyncio.connection

    for pool in (redis.ConnectionPool.from_url("redis://127.0.0.1:1/0"),
                 redis.asyncio.ConnectionPool.from_url("redis://127.0.0.1:1/0")):
        assert isinstance(pool.connection_kwargs, dict)
        connection = pool.connection_class(**pool.connection_kwargs)
        for name in ("connect", "send_packed_command", "read_response", "disconnect"):
            assert callable(getattr(connection, name)), name
        assert "check_health" in inspect.signature(connection.send_packed_command).parameters
    assert "nowait" in inspect.signature(redis.asyncio.connection.Connection.disconnect).parameters


def test_the_get_connection_of_a_thread_that_ended_is_closed(redis_server: RedisServer) -> None:
    import gc
    import threading
    import warnings

    hub = connections(redis_server.url)
    made: list[Any] = []

    def lookup() -> None:
        assert hub.get_bytes("absent") is None
        made.append(hub._thread.connection)

    worker = threading.Thread(target=lookup)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        worker.start()
        worker.join()
        del worker
        gc.collect()
    assert not made[0].is_connected  # disconnected, not collected with its socket open
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]
    hub.close()
