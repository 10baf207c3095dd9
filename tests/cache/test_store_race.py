"""RFC 9111 §4.4 against a write in flight: an unsafe method that invalidates a URI while a miss
of it is being written to the tiers (its delete landing before the write) must not leave that
response stored. Both shells, with the interleaving forced by a store that lets the
invalidation run just before its write."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from scalekit.cache import layer
from tests.cache.origin_app import FakeClock, Origin, make_runtime, origin_asgi, origin_wsgi

QUERY = "cc=max-age=60"


def interleave_invalidation(cache: Any) -> list[str]:
    """Make the cache's store run ``invalidate_keys`` on a key just before writing it, once."""
    store, core = cache.store, cache.core
    invalidated: list[str] = []
    write, awrite = store.set, store.aset

    def set_after_invalidation(key: str, entry: Any) -> None:
        if not invalidated:
            invalidated.append(key)
            core.invalidate_keys([key])
        write(key, entry)

    async def aset_after_invalidation(key: str, entry: Any) -> None:
        if not invalidated:
            invalidated.append(key)
            await core.ainvalidate_keys([key])
        await awrite(key, entry)

    store.set, store.aset = set_after_invalidation, aset_after_invalidation
    return invalidated


def get(kind: str, cache: Any, loop: asyncio.AbstractEventLoop | None) -> dict[str, str]:
    if kind == "wsgi":
        seen: dict[str, Any] = {}
        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/r", "QUERY_STRING": QUERY,
                   "wsgi.url_scheme": "http", "HTTP_HOST": "test"}
        body = cache(environ, lambda status, headers, exc_info=None: seen.update(headers=headers))
        b"".join(body)
        return dict(seen["headers"])
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/r", "query_string": QUERY.encode(),
             "scheme": "http", "headers": [(b"host", b"test")]}
    assert loop is not None
    loop.run_until_complete(cache(scope, receive, send))
    return {k.decode(): v.decode() for k, v in sent[0]["headers"]}


@pytest.mark.parametrize("kind", ["wsgi", "asgi"])
def test_an_invalidation_during_the_write_leaves_nothing_stored(kind: str) -> None:
    clock = FakeClock()
    origin = Origin(clock)
    runtime = make_runtime(clock, coalesce=False)
    loop = asyncio.new_event_loop() if kind == "asgi" else None
    try:
        app = origin_wsgi(origin) if kind == "wsgi" else origin_asgi(origin)
        cache = layer.wrap_wsgi(app, runtime) if kind == "wsgi" else layer.wrap_asgi(app, runtime)
        invalidated = interleave_invalidation(cache)
        first = get(kind, cache, loop)
        assert "stored" in first["cache-status"] and invalidated
        second = get(kind, cache, loop)
        assert "fwd=uri-miss" in second["cache-status"], second
        assert origin.calls["/r"] == 2
        # Without an invalidation in the way, the next miss is stored and then hit.
        assert "; hit" in get(kind, cache, loop)["cache-status"]
    finally:
        runtime.close()
        if loop is not None:
            loop.close()
