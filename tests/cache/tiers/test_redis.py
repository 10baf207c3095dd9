"""L2 specifics: faults never raise, the breaker skips Redis for a cool-down, bad values are misses."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import redis
import redis.utils

from scalekit.cache.codec import Codec
from scalekit.cache.entry import CachedEntry
from scalekit.cache.tiers.redis import NO_CLIENT_INFO, RedisConnections, RedisTier, entry_key
from scalekit.config import RedisConfig

from .conftest import FakeClock
from .servers import RedisServer, TcpProxy, running_redis

pytestmark = pytest.mark.redis


def make_entry(clock: FakeClock, body: bytes = b"hello") -> CachedEntry:
    return CachedEntry(status=200, headers=(("content-type", "text/plain"),), body=body,
                       request_time=clock.now, response_time=clock.now,
                       corrected_initial_age_seconds=0.0, freshness_lifetime_seconds=60.0)


def make_tier(url: str, clock: FakeClock, *, prefix: str = "t:", **codec: object) -> RedisTier:
    config = RedisConfig(url=url, key_prefix=prefix, socket_timeout_seconds=0.2,
                         connect_timeout_seconds=0.2, circuit_cool_down_seconds=5.0)
    return RedisTier(RedisConnections(config, monotonic=clock), codec=Codec(**codec),  # type: ignore[arg-type]
                     clock=clock, retain_stale_seconds=0)


def test_the_test_server_forbids_config_and_client(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url, **NO_CLIENT_INFO)
    with pytest.raises(redis.ResponseError):
        client.execute_command("CONFIG", "GET", "maxmemory")
    with pytest.raises(redis.ResponseError):
        client.execute_command("CLIENT", "ID")
    client.close()


def test_hiredis_parser_is_used_when_installed() -> None:
    try:
        import hiredis
    except ImportError:
        pytest.skip("hiredis is not installed: test_redis_hit_path runs without it as well")
    major, minor = (int(part) for part in hiredis.__version__.split(".")[:2])
    # redis-py 8 ignores hiredis older than 3.2; the `redis` extra asks for what redis-py wants.
    assert redis.utils.HIREDIS_AVAILABLE == ((major, minor) >= (3, 2))


def test_refused_connections_are_misses_and_open_the_breaker(clock: FakeClock) -> None:
    tier = make_tier("redis://127.0.0.1:1/0", clock)
    assert tier.get("k") is None
    assert not tier.breaker.is_open  # one failure is not an outage
    assert tier.get("k") is None and tier.get("k") is None
    assert tier.breaker.is_open  # three in a row are
    tier.set("k", make_entry(clock))  # skipped, no raise
    assert tier.try_set("k", make_entry(clock)) is False


def test_unresponsive_redis_costs_three_timeouts_then_nothing(blackhole: int, clock: FakeClock) -> None:
    tier = make_tier(f"redis://127.0.0.1:{blackhole}/0", clock)
    for _ in range(3):
        assert tier.get("k") is None  # waits the timeout, three times in a row
    assert tier.breaker.is_open
    before = tier.breaker.openings
    for _ in range(50):
        assert tier.get("k") is None  # skipped at once: the breaker is open
    assert tier.breaker.openings == before


def test_breaker_half_opens_after_the_cool_down_and_closes_on_success(
        redis_proxy: TcpProxy, clock: FakeClock) -> None:
    tier = make_tier(redis_proxy.url, clock, prefix="breaker:")
    tier.set("k", make_entry(clock))
    redis_proxy.cut()
    assert [tier.get("k") for _ in range(3)] == [None, None, None] and tier.breaker.is_open
    redis_proxy.restore()
    assert tier.get("k") is None  # still cooling down: not even tried
    clock.advance(5.0)
    found = tier.get("k")
    assert found is not None and found[0].body == b"hello"
    assert not tier.breaker.is_open
    tier.connections.close()


def test_async_face_never_raises_either(clock: FakeClock) -> None:
    import asyncio

    async def scenario() -> None:
        tier = make_tier("redis://127.0.0.1:1/0", clock)
        assert await tier.aget("k") is None
        assert await tier.atry_set("k", make_entry(clock)) is False
        await tier.adelete("k")

    asyncio.run(scenario())


@pytest.mark.parametrize("garbage", [
    pytest.param(b"", id="empty"),
    pytest.param(b"not an entry at all", id="foreign value"),
    pytest.param(b"SK\x63\x00junk", id="unknown version"),
])
def test_garbage_in_redis_is_a_miss_and_is_removed(redis_server: RedisServer, clock: FakeClock,
                                                   garbage: bytes) -> None:
    tier = make_tier(redis_server.url, clock, prefix="garbage:")
    client = tier.connections.sync()
    client.set(entry_key("garbage:", "k"), garbage)
    assert tier.get("k") is None
    assert client.exists(entry_key("garbage:", "k")) == 0
    assert not tier.breaker.is_open  # bad data is not a Redis fault
    tier.connections.close()


def test_value_written_without_the_secret_is_refused(redis_server: RedisServer, clock: FakeClock) -> None:
    signed = make_tier(redis_server.url, clock, prefix="sig:", secret=b"the-fleet-secret-0123")
    attacker = make_tier(redis_server.url, clock, prefix="sig:")
    attacker.set("k", make_entry(clock, b"injected"))
    assert signed.get("k") is None
    signed.set("k", make_entry(clock, b"genuine"))
    assert signed.get("k")[0].body == b"genuine"
    signed.connections.close()
    attacker.connections.close()


def test_entries_over_the_size_cap_are_not_stored(redis_server: RedisServer, clock: FakeClock) -> None:
    tier = make_tier(redis_server.url, clock, prefix="cap:", compress_min_bytes=0)
    tier.max_entry_bytes = 1000
    assert tier.try_set("k", make_entry(clock, b"x" * 2000)) is False
    assert tier.get("k") is None
    tier.connections.close()


def test_redis_ttl_follows_the_entry_lifetime(redis_server: RedisServer, clock: FakeClock) -> None:
    tier = make_tier(redis_server.url, clock, prefix="ttl:")
    tier.set("k", make_entry(clock))
    ttl_ms = tier.connections.sync().pttl(entry_key("ttl:", "k"))
    assert 55_000 < ttl_ms <= 60_000
    tier.connections.close()


def test_options_that_redis_py_refuses_are_an_error_at_start_up_and_in_check(
        redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        tmp_path: Path) -> None:
    """redis-py 5.0-7.1 refused ``driver_info`` on every call and the tier swallowed it (L2,
    fleet invalidation and leases silently off). Whatever option the installed redis-py
    refuses, start-up logs an error and ``scalekit check`` fails."""
    import scalekit
    import scalekit.cache.tiers.redis as tier_module
    from scalekit.cache.commands import check
    from scalekit.config import load_config

    monkeypatch.setattr(tier_module, "NO_CLIENT_INFO", {"an_option_redis_py_lacks": None})
    config = {"state_dir": str(tmp_path), "redis": {"url": redis_server.url}}
    wrapped = scalekit.wrap(lambda environ, start_response: [], cdn=False, pool=False,
                            metrics=False, **config)
    with caplog.at_level(logging.ERROR, logger="scalekit.cache"):
        wrapped.runtime.startup()
    wrapped.runtime.close()
    assert any("cache tier redis unusable" in record.getMessage() and "pip install" in
               record.getMessage() for record in caplog.records)
    name, ok, detail = check(load_config(config, environ={}, cwd=tmp_path))[0]
    assert (name, ok) == ("redis", False) and "an_option_redis_py_lacks" in detail


def test_a_redis_that_refuses_the_credentials_is_reported_broken() -> None:
    with running_redis(extra_args=("--requirepass", "the-right-password")) as server:
        state, detail = RedisConnections(RedisConfig(url=server.url)).probe()
        assert state == "broken" and "refuses scalekit" in detail
        good = RedisConnections(RedisConfig(url=f"redis://:the-right-password@127.0.0.1:{server.port}/0"))
        assert good.probe()[0] == "ok"
        good.close()


def test_the_clients_are_built_without_client_setinfo_on_this_redis_py() -> None:
    """The option that turns CLIENT SETINFO off is one this redis-py accepts (5.0 to 8.x)."""
    client = redis.Redis.from_url("redis://127.0.0.1:1/0", **NO_CLIENT_INFO)
    pool = client.connection_pool
    connection = pool.connection_class(**pool.connection_kwargs)
    assert getattr(connection, "driver_info", None) is None
    assert getattr(connection, "lib_name", None) is None
    client.close()
