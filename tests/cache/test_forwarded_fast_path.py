"""Plain hits behind a proxy: a request whose forwarded headers only restate what the server
already knows (X-Forwarded-Proto equal to the scheme, X-Forwarded-Host equal to Host,
X-Forwarded-Port equal to the Host's port or the scheme's default) is answered by the plain-hit
path, like the same request without them. Anything else leaves it to the full path. A request
the cache steps aside for is counted as ``bypass``, never as ``uncacheable``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client import REGISTRY

import scalekit

SETTINGS: dict[str, Any] = {"pool": False, "cdn": False, "metrics": False,
                            "cache": {"disk": {"enabled": False}}, "allowed_hosts": ["shop.test"]}
PROXY = {"x-forwarded-proto": "http", "x-forwarded-host": "shop.test", "x-forwarded-port": "80"}


def wsgi_page(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("content-type", "text/plain"), ("cache-control", "max-age=600")])
    return [b"page"]


async def asgi_page(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"cache-control", b"max-age=600")]})
    await send({"type": "http.response.body", "body": b"page"})


class Shop:
    """One wrapped app, asked through its full path (``get``) or its plain-hit path (``early``)."""

    def __init__(self, kind: str, **cache: Any) -> None:
        self.kind = kind
        settings = {**SETTINGS, "cache": {**SETTINGS["cache"], **cache}}
        self.app = scalekit.wrap(wsgi_page if kind == "wsgi" else asgi_page, **settings)

    def environ(self, headers: dict[str, str]) -> dict[str, Any]:
        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/page", "QUERY_STRING": "",
                   "SERVER_NAME": "shop.test", "SERVER_PORT": "80", "HTTP_HOST": "shop.test",
                   "wsgi.url_scheme": "http"}
        environ.update({"HTTP_" + name.upper().replace("-", "_"): value for name, value in headers.items()})
        return environ

    def scope(self, headers: dict[str, str]) -> dict[str, Any]:
        return {"type": "http", "method": "GET", "path": "/page", "query_string": b"", "scheme": "http",
                "server": ("shop.test", 80),
                "headers": [(b"host", b"shop.test"),
                            *((name.encode(), value.encode()) for name, value in headers.items())]}

    def get(self, headers: dict[str, str] | None = None) -> str:
        """The Cache-Status of a request through the whole stack."""
        if self.kind == "wsgi":
            replies: list[Any] = []
            body = self.app(self.environ(headers or {}), lambda status, headers, *_: replies.append(headers))
            b"".join(body)
            getattr(body, "close", lambda: None)()
            return dict(replies[0]).get("cache-status", "")
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        asyncio.run(self.app(self.scope(headers or {}), receive, send))
        return dict(sent[0]["headers"]).get(b"cache-status", b"").decode()

    def early(self, headers: dict[str, str]) -> bool:
        """Whether the plain-hit path answered the request."""
        if self.kind == "wsgi":
            return self.app.serve_early(self.environ(headers)) is not None
        return self.app.serve_early(self.scope(headers)) is not None

    def close(self) -> None:
        self.app.runtime.close()


@pytest.fixture(params=["wsgi", "asgi"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.parametrize("headers", [
    pytest.param(PROXY, id="nginx: proto, host and port restated"),
    pytest.param({"x-forwarded-proto": "http"}, id="X-Forwarded-Proto alone"),
    pytest.param({"x-forwarded-port": "80"}, id="the scheme's default port, portless Host"),
])
def test_restating_forwarded_headers_take_the_plain_hit_path(kind: str, headers: dict[str, str]) -> None:
    shop = Shop(kind)
    try:
        shop.get()
        assert shop.early({})
        assert shop.early(headers)
    finally:
        shop.close()


@pytest.mark.parametrize("headers", [
    pytest.param({**PROXY, "x-forwarded-host": "evil.example"}, id="another host"),
    pytest.param({**PROXY, "x-forwarded-proto": "https"}, id="another scheme"),
    pytest.param({**PROXY, "x-forwarded-port": "8443"}, id="another port"),
    pytest.param({**PROXY, "x-forwarded-prefix": "/evil"}, id="a prefix"),
    pytest.param({**PROXY, "cache-control": "no-cache"}, id="restated, with a request directive"),
    pytest.param({**PROXY, "if-none-match": '"x"'}, id="restated, with a conditional"),
])
def test_anything_more_leaves_the_request_to_the_full_path(kind: str, headers: dict[str, str]) -> None:
    shop = Shop(kind)
    try:
        shop.get()
        assert not shop.early(headers)
    finally:
        shop.close()


def test_a_keyed_header_with_its_own_value_is_another_key(kind: str) -> None:
    shop = Shop(kind, keyed_forwarded_headers=["x-forwarded-port"])
    try:
        shop.get()
        assert shop.early({"x-forwarded-port": "80"})
        assert not shop.early({"x-forwarded-port": "8443"})
        assert "fwd=uri-miss" in shop.get({"x-forwarded-port": "8443"})
        assert "hit" in shop.get({"x-forwarded-port": "8443"})  # its own entry, full path
        assert not shop.early({"x-forwarded-port": "8443"})
    finally:
        shop.close()


def test_an_ingress_port_on_a_portless_host_is_cached(kind: str) -> None:
    # ingress-nginx sends its listen port on every request; Host names no port.
    shop = Shop(kind)
    try:
        assert "fwd=uri-miss" in shop.get({"x-forwarded-port": "80"})
        assert "hit" in shop.get({"x-forwarded-port": "80"})
    finally:
        shop.close()


def outcome(name: str) -> float:
    return REGISTRY.get_sample_value("scalekit_cache_requests_total", {"outcome": name}) or 0.0


def test_a_request_the_cache_steps_aside_for_counts_as_bypass(kind: str) -> None:
    shop = Shop(kind)
    try:
        bypass, uncacheable = outcome("bypass"), outcome("uncacheable")
        assert "fwd=bypass" in shop.get({"x-forwarded-host": "evil.example"})
        assert (outcome("bypass"), outcome("uncacheable")) == (bypass + 1, uncacheable)
    finally:
        shop.close()
