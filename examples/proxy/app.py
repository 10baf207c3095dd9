"""A caching reverse proxy: scalekit's shared cache in front of any HTTP origin.

The proxy itself is a plain ASGI app that forwards every method, with its body and end-to-end
headers, to ``UPSTREAM_URL`` with httpx and streams the answer back. ``scalekit.wrap`` puts the
metrics and cache layers in front of it, so the cache's HTTP semantics (RFC 9111, 5861, 9211)
can be used, and tested, as a standalone shared cache::

    UPSTREAM_URL=http://127.0.0.1:8000 uvicorn examples.proxy.app:app --port 8080

Hop-by-hop headers (RFC 9110 §7.6.1) are dropped in both directions; ``Host`` becomes the
upstream's, the client's goes in ``X-Forwarded-Host`` (the cache keys on the client's Host,
from ``allowed_hosts``). A response without ``Date`` gets one (RFC 9110 §6.6.1), so run the
server with ``--no-date-header`` (else uvicorn adds a second). The CDN and pool layers are off:
header stamping is the origin's business, and a proxy has no database.

An upstream that cannot be reached (refused, reset, timed out: ``UPSTREAM_TIMEOUT_SECONDS``,
default 30) is a 502 (504 for a timeout) with ``Proxy-Status`` naming the error (RFC 9209), from
which the cache serves a stale entry where no directive forbids it (RFC 9111 §4.2.4). A safe
request whose connection fails before any response byte (a kept-alive connection the origin
closed, or poisoned by sending more than its Content-Length) is retried once on a new one.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import httpx

import scalekit
from scalekit.config import load_config
from scalekit.headers import format_http_date, hop_by_hop_names

__all__ = ["app", "make_proxy", "upstream_error"]

Scope = dict[str, Any]
TIMEOUT_SECONDS = float(os.environ.get("UPSTREAM_TIMEOUT_SECONDS", "30"))
PROXY_NAME = "scalekit"
TARGETED_FIELDS = ("CDN-Cache-Control",)
BUFFERED_BODY_BYTES = 1 << 20  # larger or undeclared bodies stream through
# RFC 9110 §9.2.1: safe methods carry no body here, so a failed attempt can be replayed as it was.
RETRIED_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
# Failures of a connection that was taken from the pool, before any response byte: the origin
# closed it while it sat idle, or left bytes in it. A new connection may well succeed.
STALE_CONNECTION_ERRORS = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)


def forwarded_request_headers(scope: Scope) -> list[tuple[bytes, bytes]]:
    """The client's end-to-end headers for the upstream, plus X-Forwarded-*."""
    raw: list[tuple[bytes, bytes]] = scope.get("headers", [])
    connection = b", ".join(value for name, value in raw if name == b"connection").decode("latin-1")
    # Expect: uvicorn has already answered 100-continue when the body is read (RFC 9110 §10.1.1).
    dropped = hop_by_hop_names(connection or None) | {"host", "content-length", "expect"}
    out = [(name, value) for name, value in raw if name.decode("latin-1") not in dropped]
    host = next((value for name, value in raw if name == b"host"), None)
    if host is not None:
        out.append((b"x-forwarded-host", host))
    client = scope.get("client")
    if client:
        out.append((b"x-forwarded-for", str(client[0]).encode("latin-1")))
    out.append((b"x-forwarded-proto", scope.get("scheme", "http").encode("latin-1")))
    return out


def returned_response_headers(response: httpx.Response, received: float) -> list[tuple[bytes, bytes]]:
    """The upstream's end-to-end headers for the client (raw bytes, order kept).

    RFC 9110 §6.6.1: "A recipient with a clock that receives a response message without a Date
    header field MUST record the time it was received and append a corresponding Date header
    field to the message's header section if it is cached or forwarded downstream."
    """
    dropped = hop_by_hop_names(response.headers.get("connection"))
    out = [(name, value) for name, value in response.headers.raw
           if name.decode("latin-1").lower() not in dropped]
    if "date" not in response.headers:
        out.append((b"date", format_http_date(received).encode("latin-1")))
    return out


def upstream_error(exc: httpx.HTTPError) -> tuple[int, str]:
    """The gateway status and RFC 9209 §2.3 error type for an upstream call that failed."""
    if isinstance(exc, httpx.TimeoutException):
        if isinstance(exc, httpx.PoolTimeout):
            return 503, "connection_limit_reached"
        kind = {httpx.ConnectTimeout: "connection_timeout", httpx.WriteTimeout: "connection_write_timeout"}
        return 504, kind.get(type(exc), "connection_read_timeout")
    if isinstance(exc, httpx.ConnectError):
        return 502, "dns_error" if _caused_by(exc, socket.gaierror) else "connection_refused"
    if isinstance(exc, httpx.RemoteProtocolError):
        return 502, "connection_terminated" if "disconnected" in str(exc) else "http_protocol_error"
    if isinstance(exc, (httpx.ReadError, httpx.WriteError, httpx.CloseError)):
        return 502, "connection_terminated"
    return 502, "proxy_internal_error"


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def gateway_error(exc: httpx.HTTPError) -> tuple[dict[str, Any], dict[str, Any]]:
    """The proxy's own answer (start and body messages) when the upstream could not answer."""
    status, error = upstream_error(exc)
    body = f"{status} upstream unreachable: {error}\n".encode()
    return ({"type": "http.response.start", "status": status,
             "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"cache-control", b"no-store"),
                         (b"content-length", str(len(body)).encode()),
                         (b"proxy-status", f"{PROXY_NAME}; error={error}".encode()),
                         (b"date", format_http_date(time.time()).encode())]},
            {"type": "http.response.body", "body": body})


def is_buffered(response: httpx.Response) -> bool:
    """Whether the upstream's body is read whole before it is sent on (as nginx's
    ``proxy_buffering``): a declared length up to ``BUFFERED_BODY_BYTES``. The cache stores a
    body before sending it, and lets concurrent misses wait for it, only when the app hands it
    over whole; anything else is a stream, passed on as it comes and never coalesced."""
    length = response.headers.get("content-length", "")
    return length.isdigit() and int(length) <= BUFFERED_BODY_BYTES


def make_proxy(upstream: str, *, client: httpx.AsyncClient | None = None) -> Any:
    """The bare forwarding ASGI app for ``upstream`` (``http://host:port``, maybe a path)."""
    base = upstream.rstrip("/")
    state: dict[str, httpx.AsyncClient] = {}
    if client is not None:
        state["client"] = client

    def http_client(*, fresh: bool = False) -> httpx.AsyncClient:
        """The pooled client, or (``fresh``) one that never reuses a connection, for retries."""
        name = "fresh" if fresh else "client"
        if name not in state:
            limits = httpx.Limits(max_keepalive_connections=0) if fresh else httpx.Limits()
            state[name] = httpx.AsyncClient(timeout=TIMEOUT_SECONDS, follow_redirects=False, limits=limits)
        return state[name]

    async def send_upstream(request: httpx.Request) -> httpx.Response:
        try:
            return await http_client().send(request, stream=True)
        except STALE_CONNECTION_ERRORS:
            if request.method not in RETRIED_METHODS:
                raise
            return await http_client(fresh=True).send(request, stream=True)

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
                    for name in list(state):
                        await state.pop(name).aclose()
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
            response = await send_upstream(request)
        except httpx.HTTPError as exc:
            for message in gateway_error(exc):
                await send(message)
            return
        try:
            await send({"type": "http.response.start", "status": response.status_code,
                        "headers": returned_response_headers(response, time.time())})
            # Raw bytes: Content-Encoding and Content-Length stay true to the upstream's body.
            if is_buffered(response):
                body = b"".join([chunk async for chunk in response.aiter_raw()])
                await send({"type": "http.response.body", "body": body})
                return
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            await response.aclose()

    return proxy


def build(upstream: str | None = None, **settings: Any) -> Any:
    """The proxy for ``upstream`` (default ``UPSTREAM_URL``) wrapped with scalekit.

    Settings come as for any scalekit app (arguments, ``SCALEKIT_*``, ``scalekit.toml``); where
    none sets ``cache.targeted_cache_control``, the proxy, which stands where a CDN would,
    obeys ``CDN-Cache-Control`` (RFC 9213).
    """
    upstream = upstream or os.environ.get("UPSTREAM_URL")
    if not upstream:
        raise SystemExit("examples.proxy: set UPSTREAM_URL to the origin, e.g. http://127.0.0.1:8000")
    settings.setdefault("cdn", False)
    settings.setdefault("pool", False)
    config = load_config(settings)
    if config.cache.targeted_cache_control is None:
        config = replace(config, cache=replace(config.cache, targeted_cache_control=TARGETED_FIELDS))
    return scalekit.wrap(make_proxy(upstream), kind="asgi", config=config)


app = build() if os.environ.get("UPSTREAM_URL") else None
