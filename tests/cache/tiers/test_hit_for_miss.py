"""A URL remembered as hit-for-miss asks L1 alone: no round trip to Redis, no disk lookup.

Its last answer could not be stored (no-store, private, Set-Cookie, too large, a stream), so
asking the tiers after L1 would be a Redis GET and a disk lookup on every request to an endpoint
that is never cached, for an answer almost never there. Once the origin's answer is storable
again, the first such answer is stored (the mark ends) and later requests are hits.

Real Redis (the tier tests' own server) and a real disk tier, both shells; Redis's own command
statistics count the GETs, the disk tier's lookup counter the disk lookups.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from prometheus_client import REGISTRY

import scalekit
from scalekit.cache.tiers.redis import NO_CLIENT_INFO
from tests.servers import wait_for_fleet_log

from .servers import RedisServer

PREFIXES = itertools.count()


class Origin:
    """One endpoint whose Cache-Control the test switches; counts its calls."""

    def __init__(self) -> None:
        self.cache_control = "no-store"
        self.calls = 0

    def answer(self) -> tuple[list[tuple[str, str]], bytes]:
        self.calls += 1
        body = f"call {self.calls}".encode()
        return [("content-type", "text/plain"), ("cache-control", self.cache_control),
                ("content-length", str(len(body)))], body


def wsgi_client(origin: Origin, **config: Any) -> tuple[Any, Any]:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        headers, body = origin.answer()
        start_response("200 OK", headers)
        return [body]

    wrapped = scalekit.wrap(app, **config)

    def get(path: str) -> tuple[str, bytes]:
        seen: dict[str, str] = {}

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
            seen.update(headers)

        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": "", "SERVER_NAME": "test",
                   "SERVER_PORT": "80", "HTTP_HOST": "test", "wsgi.url_scheme": "http"}
        body = wrapped(environ, start_response)
        data = b"".join(body)
        getattr(body, "close", lambda: None)()
        return seen["cache-status"], data

    return wrapped, get


def asgi_client(origin: Origin, **config: Any) -> tuple[Any, Any]:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        headers, body = origin.answer()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(k.encode(), v.encode()) for k, v in headers]})
        await send({"type": "http.response.body", "body": body})

    wrapped = scalekit.wrap(app, **config)
    loop = asyncio.new_event_loop()

    def get(path: str) -> tuple[str, bytes]:
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "GET", "path": path, "scheme": "http", "query_string": b"",
                 "server": ("test", 80), "headers": [(b"host", b"test")]}
        loop.run_until_complete(wrapped(scope, receive, send))
        headers = {k.decode(): v.decode() for k, v in sent[0]["headers"]}
        return headers["cache-status"], b"".join(m.get("body", b"") for m in sent[1:])

    wrapped.loop = loop
    return wrapped, get


@pytest.fixture(params=["wsgi", "asgi", "wsgi, tracing on", "asgi, tracing on"])
def stack(request: pytest.FixtureRequest, redis_server: RedisServer,
          tmp_path: Path) -> Iterator[tuple[Origin, Any, Any]]:
    """The default layers with L2 (the tier tests' Redis, a prefix of this test's own) and L3;
    with tracing on, the store's lookups are spans (the store is wrapped)."""
    origin = Origin()
    make = wsgi_client if request.param.startswith("wsgi") else asgi_client
    wrapped, get = make(origin, allowed_hosts=["test"], tracing=request.param.endswith("tracing on"),
                        redis={"url": redis_server.url, "key_prefix": f"hfm{next(PREFIXES)}:"},
                        cache={"disk": {"enabled": True, "path": str(tmp_path / "l3")}})
    loop = getattr(wrapped, "loop", None)
    if loop is None:
        wrapped.runtime.startup()
        wait_for_fleet_log(wrapped)
        yield origin, wrapped, get
        wrapped.runtime.close()
    else:  # as an ASGI server's lifespan would: start and shut down on the requests' loop
        loop.run_until_complete(wrapped.runtime.astartup())
        wait_for_fleet_log(wrapped)
        yield origin, wrapped, get
        loop.run_until_complete(wrapped.runtime.ashutdown())
        loop.close()


def redis_gets(redis_server: RedisServer) -> int:
    client = redis.Redis.from_url(redis_server.url, **NO_CLIENT_INFO)
    try:
        return int(client.info("commandstats").get("cmdstat_get", {}).get("calls", 0))
    finally:
        client.close()


def disk_lookups() -> float:
    return sum(REGISTRY.get_sample_value("scalekit_cache_lookups_total", {"tier": "disk", "outcome": outcome})
               or 0.0 for outcome in ("hit", "miss"))


def test_a_url_marked_hit_for_miss_asks_neither_redis_nor_the_disk(
        stack: tuple[Origin, Any, Any], redis_server: RedisServer) -> None:
    origin, _, get = stack
    status, body = get("/live")
    assert "fwd=uri-miss" in status and "stored" not in status and body == b"call 1"
    gets, lookups = redis_gets(redis_server), disk_lookups()
    for call in range(2, 6):
        status, body = get("/live")
        assert body == f"call {call}".encode() and "stored" not in status
    assert origin.calls == 5
    assert redis_gets(redis_server) == gets, "a marked URL still asked Redis"
    assert disk_lookups() == lookups, "a marked URL still asked the disk tier"
    # Another URL, never answered: every tier is asked as before.
    get("/other")
    assert redis_gets(redis_server) == gets + 1 and disk_lookups() == lookups + 1


def test_the_first_storable_answer_ends_the_mark(stack: tuple[Origin, Any, Any]) -> None:
    origin, _, get = stack
    get("/switch")
    get("/switch")
    origin.cache_control = "max-age=60"
    status, body = get("/switch")
    assert "stored" in status and body == b"call 3"
    status, body = get("/switch")
    assert "hit" in status and body == b"call 3" and origin.calls == 3
