"""Under ASGI, invalidations are queued through the async face (the loop's Redis client,
never blocking it) and unsafe methods purge their URLs, as under WSGI."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

import scalekit

from .doubles import cloudflare_contract, running_double
from .harness import FAST, REDIS_URL, redis_prefix

pytestmark = [pytest.mark.redis]

TOKEN = "cf-token-asgi-0123456789"


@pytest.fixture
def prefix() -> Iterator[str]:
    with redis_prefix() as value:
        yield value


async def page(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"cache-control", b"public, s-maxage=60")]})
    await send({"type": "http.response.body", "body": b"ok"})


async def request(app: Any, method: str, path: str) -> int:
    sent: list[dict[str, Any]] = []
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
             "scheme": "https", "path": path, "raw_path": path.encode(), "query_string": b"",
             "root_path": "", "headers": [(b"host", b"shop.example")], "client": ("127.0.0.1", 5000),
             "server": ("shop.example", 443)}
    messages = [{"type": "http.request", "body": b""}]

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return int(sent[0]["status"])


def test_asgi_invalidations_and_unsafe_methods_purge_the_edge(tmp_path: Path, prefix: str) -> None:
    with running_double(cloudflare_contract(zone_id="zone", token=TOKEN)) as double:
        target = {"kind": "cloudflare", "urls": [double.url], "zone_id": "zone", "token": TOKEN}
        app = scalekit.wrap(page, state_dir=str(tmp_path), metrics=False,
                            redis={"url": REDIS_URL, "key_prefix": prefix},
                            cdn={"surrogate_keys": "cloudflare",
                                 "purge": {**FAST, "targets": {"cf": target}}})

        async def scenario() -> list[Any]:
            await app.runtime.astartup()
            try:
                await app.runtime.ainvalidate(["product:5"])
                assert await request(app, "PATCH", "/products/5") == 200
                return await asyncio.to_thread(double.wait_for, lambda got: len(got) >= 2)
            finally:
                await app.runtime.ashutdown()

        queued = REGISTRY.get_sample_value("scalekit_edge_purges_queued_total", {"queue": "redis"}) or 0
        received = asyncio.run(scenario())
        # Both through the loop's Redis client, not the host's file.
        assert REGISTRY.get_sample_value("scalekit_edge_purges_queued_total", {"queue": "redis"}) == queued + 2
    assert sorted(map(str, (r.json() for r in received))) == sorted(map(str, [
        {"tags": ["product:5"]}, {"files": ["https://shop.example/products/5"]}]))
    assert double.violations == []
