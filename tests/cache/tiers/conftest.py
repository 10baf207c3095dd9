"""Fixtures of the tier tests: one managed-like Redis per session, a 3-node cluster, a proxy."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from .servers import RedisCluster, RedisServer, TcpProxy


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.close()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    cluster = RedisCluster().start()
    yield cluster
    cluster.close()


@pytest.fixture()
def blackhole() -> Iterator[int]:
    """A port whose kernel completes TCP handshakes but nobody ever answers."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=64)
    yield listener.getsockname()[1]
    listener.close()


@pytest.fixture()
def redis_proxy(redis_server: RedisServer) -> Iterator[TcpProxy]:
    proxy = TcpProxy(redis_server.port)
    yield proxy
    proxy.close()


class FakeClock:
    """A settable clock (wall or monotonic) for tiers, breakers and generations."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture()
def clock() -> FakeClock:
    return FakeClock()
