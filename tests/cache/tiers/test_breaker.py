"""The circuit breaker: one slow reply never turns a tier off; sustained failure does.

Pure units on an injected clock, a hypothesis property over any sequence of outcomes, and the
asyncio case of the issue: a GET whose timer fired late because the event loop was busy is not
Redis's failure.
"""

from __future__ import annotations

import asyncio
import time

import pytest
import redis
from hypothesis import example, given
from hypothesis import strategies as st

from scalekit.cache.entry import CachedEntry
from scalekit.cache.tiers.breaker import CircuitBreaker
from scalekit.cache.tiers.redis import RedisConnections, RedisTier
from scalekit.config import RedisConfig

from .conftest import FakeClock
from .servers import RedisServer, TcpProxy


def redis_breaker(clock: FakeClock) -> CircuitBreaker:
    return CircuitBreaker("redis", cool_down_seconds=5.0, consecutive_failures=3,
                          failure_rate=0.5, window_seconds=10.0, min_calls=20, monotonic=clock)


def test_one_failure_does_not_open_it(clock: FakeClock) -> None:
    breaker = redis_breaker(clock)
    breaker.failure(TimeoutError("one slow reply"))
    assert not breaker.is_open and breaker.allow()
    breaker.success()
    breaker.failure(TimeoutError("another, later"))
    breaker.failure(TimeoutError("and another"))
    assert not breaker.is_open  # never three in a row


def test_consecutive_failures_open_it(clock: FakeClock) -> None:
    breaker = redis_breaker(clock)
    for _ in range(3):
        breaker.failure(ConnectionRefusedError("down"))
    assert breaker.is_open and not breaker.allow()
    assert breaker.openings == 1


def test_a_sustained_failure_rate_opens_it(clock: FakeClock) -> None:
    breaker = redis_breaker(clock)
    for _ in range(10):  # every other call fails: never three in a row, but half of them
        breaker.success()
        clock.advance(0.1)
        breaker.failure(TimeoutError("slow"))
        clock.advance(0.1)
    assert breaker.is_open


def test_failures_spread_thinner_than_the_window_never_open_it(clock: FakeClock) -> None:
    breaker = redis_breaker(clock)
    for _ in range(50):
        breaker.success()
        breaker.failure(TimeoutError("slow"))
        clock.advance(11.0)  # each failure in a window of its own, among few calls
    assert not breaker.is_open


def test_half_open_lets_one_probe_through(clock: FakeClock) -> None:
    breaker = redis_breaker(clock)
    for _ in range(3):
        breaker.failure(OSError("down"))
    clock.advance(5.0)
    assert breaker.allow() and not breaker.allow()  # one probe, the others still skip
    breaker.failure(OSError("still down"))  # the probe failed: another cool-down
    assert breaker.is_open and not breaker.allow()
    clock.advance(5.0)
    assert breaker.allow()
    breaker.success()
    assert not breaker.is_open and breaker.allow()
    breaker.failure(OSError("one more"))
    assert not breaker.is_open  # closing forgot the failures before


@given(st.lists(st.booleans(), max_size=200))
@example([False, False, True] * 6 + [False, True, False])
def test_it_opens_only_after_three_in_a_row_or_half_of_twenty(outcomes: list[bool]) -> None:
    """The rule is judged on a failure: a success (Redis just answered) never opens it, even
    when it brings the window to twenty calls with half of them failed; the next failure does."""
    clock = FakeClock()
    breaker = redis_breaker(clock)
    failures = streak = 0
    for calls, succeeded in enumerate(outcomes, start=1):
        assert breaker.allow()  # the clock never moves: once open it would stay open
        if succeeded:
            streak = 0
            breaker.success()
        else:
            streak += 1
            failures += 1
            breaker.failure(OSError("x"))
        should_open = not succeeded and (streak >= 3 or (calls >= 20 and failures * 2 >= calls))
        assert breaker.is_open == should_open
        if should_open:
            return


@pytest.mark.redis
def test_a_busy_event_loop_is_not_counted_against_redis(redis_server: RedisServer) -> None:
    """The issue's ASGI case: asyncio.timeout around a GET also counts event-loop delay."""
    config = RedisConfig(url=redis_server.url, key_prefix="loop:", socket_timeout_seconds=0.05)
    connections = RedisConnections(config)
    tier = RedisTier(connections)

    async def scenario() -> None:
        await tier.aget("warm-up")  # a connection ready for the loop
        for _ in range(4):
            lookup = asyncio.get_running_loop().create_task(tier.aget("k"))
            await asyncio.sleep(0)  # the GET is sent; Redis answers within a millisecond
            time.sleep(0.2)  # noqa: ASYNC251 - the point: a blocking call stalls the loop 200 ms
            assert await lookup is None  # the request still missed (its time ran out) ...
        await connections.aclose()

    asyncio.run(scenario())
    assert not connections.breaker.is_open  # ... but Redis is not turned off for it


class _TimingOutClient:
    """An asyncio client whose every command times out after ``blocked_seconds`` of a loop that
    could not run (a blocking call) and ``waited_seconds`` of real waiting."""

    def __init__(self, *, blocked_seconds: float, waited_seconds: float) -> None:
        self.blocked_seconds, self.waited_seconds = blocked_seconds, waited_seconds

    async def set(self, *_args: object, **_options: object) -> None:
        time.sleep(self.blocked_seconds)  # noqa: ASYNC251 - the point: the loop is busy
        await asyncio.sleep(self.waited_seconds)
        raise redis.exceptions.TimeoutError("Timeout reading from socket")

    delete = set


@pytest.mark.parametrize(("blocked_seconds", "waited_seconds", "opens"), [
    pytest.param(0.3, 0.0, False, id="the loop was busy: not Redis's fault"),
    pytest.param(0.0, 0.0, True, id="Redis timed out: counted"),
])
def test_stores_that_time_out_on_a_busy_loop_are_not_counted_against_redis(
        blocked_seconds: float, waited_seconds: float, opens: bool) -> None:
    """Stores and deletes go through redis-py's asyncio client, whose timeouts count loop time
    too: one that ran out of time only because the loop was busy never opens the breaker."""
    connections = RedisConnections(RedisConfig(url="redis://127.0.0.1:1/0", socket_timeout_seconds=0.05,
                                               connect_timeout_seconds=0.05))
    client = _TimingOutClient(blocked_seconds=blocked_seconds, waited_seconds=waited_seconds)
    connections.async_client = lambda: client  # type: ignore[method-assign]
    tier = RedisTier(connections)
    entry = CachedEntry(status=200, headers=(), body=b"x", request_time=9e9, response_time=9e9,
                        corrected_initial_age_seconds=0.0, freshness_lifetime_seconds=60.0)

    async def scenario() -> None:
        for _ in range(2):
            assert not await tier.atry_set("k", entry)
            assert not await tier.atry_delete("k")

    asyncio.run(scenario())
    assert connections.breaker.is_open == opens


@pytest.mark.redis
def test_a_stalled_redis_still_opens_it(redis_server: RedisServer) -> None:
    proxy = TcpProxy(redis_server.port)
    try:
        config = RedisConfig(url=proxy.url, key_prefix="stall:", socket_timeout_seconds=0.05)
        connections = RedisConnections(config)
        tier = RedisTier(connections)
        assert tier.get("warm-up") is None and not connections.breaker.is_open
        proxy.stall()
        tier.get("k")
        assert not connections.breaker.is_open  # one slow reply
        tier.get("k")
        tier.get("k")
        assert connections.breaker.is_open  # three in a row
        connections.close()
    finally:
        proxy.close()
