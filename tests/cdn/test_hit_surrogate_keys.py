"""A hit carries the surrogate keys its miss carried. An edge in front that refetches a page
(its copy expired, or another edge node) may get it from scalekit's cache; stored there without
keys, no tag purge would ever reach it and the edge would serve the old page until it expires.
Early (plain) hits and hits through the full path, WSGI and ASGI."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

import scalekit

SETTINGS: dict[str, Any] = {"pool": False, "metrics": False, "allowed_hosts": ["shop.test"],
                            "cache": {"disk": {"enabled": False}},
                            "cdn": {"surrogate_keys": "varnish"}}
PAGE = "http://shop.test/products/42"
# A request with a conditional that does not match takes the cache's full path, and is a hit.
FULL_PATH = {"If-None-Match": '"not-this-one"'}


def keys(response: httpx.Response) -> set[str]:
    return set(response.headers.get("xkey", "").split())


def wsgi_page(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    scalekit.tag("product:42", "table:products")
    start_response("200 OK", [("Content-Type", "text/plain"), ("Cache-Control", "max-age=300")])
    return [b"lamp"]


async def asgi_page(scope: dict[str, Any], receive: Any, send: Any) -> None:
    scalekit.tag("product:42", "table:products")
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"cache-control", b"max-age=300")]})
    await send({"type": "http.response.body", "body": b"lamp"})


def wsgi_answers() -> list[httpx.Response]:
    app = scalekit.wrap(wsgi_page, **SETTINGS)
    try:
        with httpx.Client(transport=httpx.WSGITransport(app=app)) as client:
            return [client.get(PAGE), client.get(PAGE), client.get(PAGE, headers=FULL_PATH)]
    finally:
        app.runtime.close()


def asgi_answers() -> list[httpx.Response]:
    app = scalekit.wrap(asgi_page, **SETTINGS)

    async def fetch() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as client:
            return [await client.get(PAGE), await client.get(PAGE), await client.get(PAGE, headers=FULL_PATH)]

    try:
        return asyncio.run(fetch())
    finally:
        app.runtime.close()


@pytest.mark.parametrize("answers", [wsgi_answers, asgi_answers], ids=["wsgi", "asgi"])
def test_a_hit_carries_the_keys_of_its_miss(answers: Any) -> None:
    miss, early_hit, full_path_hit = answers()
    assert "stored" in miss.headers["cache-status"]
    assert [r.headers["cache-status"].split(";")[1].strip() for r in (early_hit, full_path_hit)] == ["hit", "hit"]
    assert {"product:42", "table:products"} <= keys(miss)
    assert keys(early_hit) == keys(miss)
    assert keys(full_path_hit) == keys(miss)
    assert not any(" " in key for key in keys(miss))
