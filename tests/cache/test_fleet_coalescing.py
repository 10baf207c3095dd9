"""Fleet-wide coalescing (``cache.l2.coalesce``): two instances sharing Redis make one origin
call for concurrent misses on one key, on top of one call per process."""

from __future__ import annotations

import secrets
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import redis

from tests.cache.origin_app import FakeClock, Origin, build_wsgi

pytestmark = pytest.mark.redis
REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def redis_settings() -> dict[str, object]:
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=1)
    try:
        client.ping()
    except redis.RedisError:
        pytest.skip("no Redis on 127.0.0.1:6379")
    finally:
        client.close()
    # Generous timeouts: on a loaded CI machine the default 50 ms would trip the Redis circuit
    # breaker, and a tripped breaker rightly means "compute it yourself" (no coalescing).
    return {"url": REDIS_URL, "key_prefix": f"scalekit-test-{secrets.token_hex(4)}:",
            "socket_timeout_seconds": 2.0, "connect_timeout_seconds": 2.0}


def test_two_instances_make_one_origin_call(redis_settings: dict[str, object]) -> None:
    origin, clock = Origin(), FakeClock()
    instances = [build_wsgi(origin, clock, redis_settings, l2={"coalesce": True, "lease_seconds": 5.0})
                 for _ in range(2)]
    clients = [httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://test", timeout=20)
               for app, _ in instances]
    try:
        url = "/fleet?cc=max-age%3D60&sleep=600"
        with ThreadPoolExecutor(6) as pool:
            replies = list(pool.map(lambda i: clients[i % 2].get(url), range(6)))
        assert {reply.status_code for reply in replies} == {200}
        assert len({reply.content for reply in replies}) == 1
        assert origin.calls["/fleet"] == 1
    finally:
        for client in clients:
            client.close()
        for _, runtime in instances:
            runtime.close()
