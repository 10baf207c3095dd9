"""Unsafe methods reach the fleet: a POST, PUT, PATCH or DELETE through one instance invalidates its URI everywhere.

Two wrapped apps in this process, each with its own state directory (as on two hosts), share
one Redis. A write through A must invalidate the page in B's memory tier too (RFC 9111 §4.4
through the same log, acknowledgements and bound as tags), under WSGI and ASGI, including the
same-origin Location it names.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from werkzeug.test import Client

import scalekit

from .servers import RedisServer

pytestmark = [pytest.mark.redis]

HOST = "shop.example"
TOKEN = "writes-purge-token-0123456789"
WAIT_SECONDS = 20.0


UNSAFE = ("POST", "PUT", "PATCH", "DELETE")


class Shop:
    """Prices by path; GET pages are cacheable for 300 s, an unsafe method changes the price."""

    def __init__(self, names: str = "content-location") -> None:
        self.prices: dict[str, int] = {"/items/1": 100, "/items/2": 200}
        self.names = names

    def answer(self, method: str, path: str) -> tuple[int, list[tuple[str, str]], bytes]:
        if method in UNSAFE:
            self.prices[path] = self.prices.get(path, 0) + 1
            # The write also changes what /items/2 shows, and names it (Content-Location or
            # Location, same origin).
            self.prices["/items/2"] += 1
            return 200, [("content-type", "text/plain"),
                         (self.names, f"http://{HOST}/items/2")], b"ok"
        body = f"{path}={self.prices.get(path, 0)}".encode()
        return 200, [("content-type", "text/plain"), ("cache-control", "public, max-age=300"),
                     ("content-length", str(len(body)))], body

    def wsgi(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        status, headers, body = self.answer(environ["REQUEST_METHOD"], environ["PATH_INFO"])
        start_response(f"{status} OK", headers)
        return [body]

    async def asgi(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        status, headers, body = self.answer(scope["method"], scope["path"])
        await send({"type": "http.response.start", "status": status,
                    "headers": [(k.encode(), v.encode()) for k, v in headers]})
        await send({"type": "http.response.body", "body": body})


def wrap(app: Any, redis: RedisServer, prefix: str, state_dir: Path, *,
         purge_token: str | None = None) -> Any:
    wrapped = scalekit.wrap(app, cdn=False, pool=False, metrics=False, allowed_hosts=[HOST],
                            state_dir=str(state_dir),
                            redis={"url": redis.url, "key_prefix": prefix,
                                   "socket_timeout_seconds": 1.0},
                            cache={"invalidation": {"heartbeat_seconds": 0.05,
                                                    "ack_timeout_seconds": 1.0,
                                                    "purge_token": purge_token}})
    wrapped.runtime.startup()
    assert wrapped.runtime.services["cache.generations"].wait_connected(WAIT_SECONDS)
    return wrapped


@pytest.fixture()
def prefix(request: pytest.FixtureRequest) -> str:
    return f"writes:{request.node.name}:{time.monotonic_ns()}:"


@pytest.fixture()
def closing() -> Iterator[list[Any]]:
    wrapped: list[Any] = []
    yield wrapped
    for app in wrapped:
        app.runtime.close()


@pytest.mark.parametrize("names", ["content-location", "location"])
@pytest.mark.parametrize("method", UNSAFE)
def test_an_unsafe_method_through_one_wsgi_instance_invalidates_the_page_on_another(
        redis_server: RedisServer, tmp_path: Path, prefix: str, closing: list[Any], method: str,
        names: str) -> None:
    shop = Shop(names)
    a = wrap(shop.wsgi, redis_server, prefix, tmp_path / "a")
    b = wrap(shop.wsgi, redis_server, prefix, tmp_path / "b")
    closing.extend([a, b])
    client_a = Client(a)
    client_b = Client(b)
    host = {"host": HOST}
    for item in ("/items/1", "/items/2"):
        client_b.get(item, headers=host)
        assert "hit" in client_b.get(item, headers=host).headers["cache-status"]  # in B's L1
    # The write, through A:
    assert client_a.open("/items/1", method=method, headers=host).status_code == 200
    # No waiting: the write answered after every live instance applied the invalidation.
    assert client_b.get("/items/1", headers=host).text == "/items/1=101"
    assert client_b.get("/items/2", headers=host).text == "/items/2=201"  # the URL it named


@pytest.mark.parametrize("method", UNSAFE)
def test_an_unsafe_method_through_one_asgi_instance_invalidates_the_page_on_another(
        redis_server: RedisServer, tmp_path: Path, prefix: str, closing: list[Any],
        method: str) -> None:
    shop = Shop("location")
    a = wrap(shop.asgi, redis_server, prefix, tmp_path / "a")
    b = wrap(shop.asgi, redis_server, prefix, tmp_path / "b")
    closing.extend([a, b])

    async def scenario() -> None:
        transport_a, transport_b = httpx.ASGITransport(app=a), httpx.ASGITransport(app=b)
        async with httpx.AsyncClient(transport=transport_a, base_url=f"http://{HOST}") as client_a, \
                httpx.AsyncClient(transport=transport_b, base_url=f"http://{HOST}") as client_b:
            await client_b.get("/items/1")
            assert "hit" in (await client_b.get("/items/1")).headers["cache-status"]
            await client_b.get("/items/2")
            assert (await client_a.request(method, "/items/1")).status_code == 200
            assert (await client_b.get("/items/1")).text == "/items/1=101"
            assert (await client_b.get("/items/2")).text == "/items/2=201"  # the Location
        for app in (a, b):  # as ASGI lifespan shutdown would: this loop's clients close here
            await app.runtime.ashutdown()

    asyncio.run(scenario())


def test_a_purge_says_how_far_it_reached(
        redis_server: RedisServer, tmp_path: Path, prefix: str, closing: list[Any]) -> None:
    shop = Shop()
    a = wrap(shop.wsgi, redis_server, prefix, tmp_path / "a", purge_token=TOKEN)
    b = wrap(shop.wsgi, redis_server, prefix, tmp_path / "b")
    closing.extend([a, b])
    result = a.runtime.invalidate(["anything"])
    assert result.reach == "fleet" and result.acknowledged and result.unacknowledged == (), result
    response = Client(a).post("/_scalekit/purge?tag=t", headers={
        "host": HOST, "authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    assert response.json is not None and response.json["reach"] == "fleet"
    assert response.json["acknowledged"] is True
