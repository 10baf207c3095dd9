"""A caching reverse proxy: scalekit's shared cache in front of any HTTP origin.

The proxy itself is a plain ASGI app that forwards every method, with its body and end-to-end
headers, to ``UPSTREAM_URL`` with httpx and streams the answer back. ``scalekit.wrap`` puts the
metrics and cache layers in front of it, so the cache's HTTP semantics (RFC 9111, 5861, 9211)
can be used, and tested, as a standalone shared cache::

    UPSTREAM_URL=http://127.0.0.1:8000 uvicorn examples.proxy.app:app --port 8080

Hop-by-hop headers (RFC 9110 §7.6.1) are dropped in both directions; ``Host`` becomes the
upstream's, the client's goes in ``X-Forwarded-Host`` (the cache keys on the client's Host,
from ``allowed_hosts``). An unreachable upstream is a 502, which the cache's stale-if-error
turns into the last good response where the origin allowed it. The CDN and pool layers are off:
header stamping is the origin's business, and a proxy has no database.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import httpx

import scalekit
from scalekit.headers import hop_by_hop_names

__all__ = ["app", "make_proxy"]

Scope = dict[str, Any]
TIMEOUT_SECONDS = 30.0


def forwarded_request_headers(scope: Scope) -> list[tuple[bytes, bytes]]:
    """The client's end-to-end headers for the upstream, plus X-Forwarded-*."""
    raw: list[tuple[bytes, bytes]] = scope.get("headers", [])
    connection = b", ".join(value for name, value in raw if name == b"connection").decode("latin-1")
    dropped = hop_by_hop_names(connection or None) | {"host", "content-length"}
    out = [(name, value) for name, value in raw if name.decode("latin-1") not in dropped]
    host = next((value for name, value in raw if name == b"host"), None)
    if host is not None:
        out.append((b"x-forwarded-host", host))
    client = scope.get("client")
    if client:
        out.append((b"x-forwarded-for", str(client[0]).encode("latin-1")))
    out.append((b"x-forwarded-proto", scope.get("scheme", "http").encode("latin-1")))
    return out


def returned_response_headers(response: httpx.Response) -> list[tuple[bytes, bytes]]:
    """The upstream's end-to-end headers for the client (raw bytes, order kept)."""
    dropped = hop_by_hop_names(response.headers.get("connection"))
    return [(name, value) for name, value in response.headers.raw
            if name.decode("latin-1").lower() not in dropped]


def make_proxy(upstream: str, *, client: httpx.AsyncClient | None = None) -> Any:
    """The bare forwarding ASGI app for ``upstream`` (``http://host:port``, maybe a path)."""
    base = upstream.rstrip("/")
    state: dict[str, httpx.AsyncClient] = {}
    if client is not None:
        state["client"] = client

    def http_client() -> httpx.AsyncClient:
        if "client" not in state:
            state["client"] = httpx.AsyncClient(timeout=TIMEOUT_SECONDS, follow_redirects=False)
        return state["client"]

    async def request_body(receive: Any) -> AsyncIterator[bytes]:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            if message.get("body"):
                yield message["body"]
            if not message.get("more_body", False):
                return

    async def proxy(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    if "client" in state:
                        await state.pop("client").aclose()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            await send({"type": "websocket.close", "code": 1003})
            return
        query = scope.get("query_string", b"").decode("latin-1")
        target = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        url = f"{base}{target}" + (f"?{query}" if query else "")
        has_body = scope["method"] not in ("GET", "HEAD", "OPTIONS", "TRACE")
        request = http_client().build_request(
            scope["method"], url, headers=forwarded_request_headers(scope),
            content=request_body(receive) if has_body else None)
        try:
            response = await http_client().send(request, stream=True)
        except httpx.HTTPError as exc:
            body = f"502 upstream unreachable: {type(exc).__name__}\n".encode()
            await send({"type": "http.response.start", "status": 502,
                        "headers": [(b"content-type", b"text/plain"), (b"cache-control", b"no-store"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        try:
            await send({"type": "http.response.start", "status": response.status_code,
                        "headers": returned_response_headers(response)})
            # Raw bytes: Content-Encoding and Content-Length stay true to the upstream's body.
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            await response.aclose()

    return proxy


def build(upstream: str | None = None, **settings: Any) -> Any:
    """The proxy for ``upstream`` (default ``UPSTREAM_URL``) wrapped with scalekit."""
    upstream = upstream or os.environ.get("UPSTREAM_URL")
    if not upstream:
        raise SystemExit("examples.proxy: set UPSTREAM_URL to the origin, e.g. http://127.0.0.1:8000")
    settings.setdefault("cdn", False)
    settings.setdefault("pool", False)
    return scalekit.wrap(make_proxy(upstream), kind="asgi", **settings)


app = build() if os.environ.get("UPSTREAM_URL") else None
