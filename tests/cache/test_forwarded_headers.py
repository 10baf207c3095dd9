"""Headers a proxy uses to tell the app what the client asked for (X-Forwarded-Host, Forwarded,
X-Original-URL, ...) change the response but are not in the key: a request carrying one is
neither served from the cache nor stored, unless ``cache.keyed_forwarded_headers`` names it
(a trusted proxy sets it), and then its value is part of the key. A value that only restates
what the key holds (X-Forwarded-Host equal to Host, X-Forwarded-Proto equal to the scheme)
changes nothing.

The attack, with Werkzeug's ProxyFix on ``app.wsgi_app`` (the usual Flask idiom, which puts it
inside scalekit): ``X-Forwarded-Host: evil.example`` reflected in a cached page, then served to
every clean client.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from flask import Flask, request, url_for
from werkzeug.middleware.proxy_fix import ProxyFix

import scalekit
from scalekit.errors import ConfigError

ATTACKS = [
    pytest.param({"x-forwarded-host": "evil.example"}, id="X-Forwarded-Host"),
    pytest.param({"x-forwarded-proto": "https"}, id="X-Forwarded-Proto"),
    pytest.param({"x-forwarded-port": "8443"}, id="X-Forwarded-Port"),
    pytest.param({"x-forwarded-prefix": "/evil"}, id="X-Forwarded-Prefix"),
    pytest.param({"forwarded": "host=evil.example;proto=https"}, id="Forwarded"),
    pytest.param({"x-original-url": "/admin"}, id="X-Original-URL"),
    pytest.param({"x-rewrite-url": "/admin"}, id="X-Rewrite-URL"),
    pytest.param({"x-http-method-override": "DELETE"}, id="X-HTTP-Method-Override"),
]
SETTINGS: dict[str, Any] = {"pool": False, "cdn": False, "metrics": False,
                            "cache": {"disk": {"enabled": False}}, "allowed_hosts": ["shop.test"]}


def flask_shop() -> Flask:
    """A page that links to itself by absolute URL, as templates do, behind ProxyFix."""
    app = Flask(__name__)

    @app.get("/page")
    def page() -> tuple[str, int, dict[str, str]]:
        seen = "|".join(f"{name}={request.headers.get(name, '')}" for name in
                        ("Forwarded", "X-Original-URL", "X-Rewrite-URL", "X-HTTP-Method-Override"))
        return f"{url_for('page', _external=True)} {seen}", 200, {"Cache-Control": "max-age=600"}

    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=1, x_port=1,  # type: ignore[method-assign]
                            x_prefix=1)
    return app


async def asgi_shop(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The ASGI twin: it answers with the proxy headers it was given."""
    headers = dict(scope["headers"])
    seen = b"|".join(name + b"=" + headers.get(name, b"") for name in
                     (b"x-forwarded-host", b"x-forwarded-proto", b"x-forwarded-port", b"x-forwarded-prefix",
                      b"forwarded", b"x-original-url", b"x-rewrite-url", b"x-http-method-override"))
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"cache-control", b"max-age=600")]})
    await send({"type": "http.response.body", "body": seen})


class Client:
    def __init__(self, kind: str, **cache: Any) -> None:
        settings = {**SETTINGS, "cache": {**SETTINGS["cache"], **cache}}
        if kind == "wsgi":
            self.app = scalekit.wrap(flask_shop(), **settings)
            transport: Any = httpx.WSGITransport(app=self.app)
            self.client: Any = httpx.Client(transport=transport, base_url="http://shop.test")
        else:
            self.app = scalekit.wrap(asgi_shop, **settings)
            self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app),
                                            base_url="http://shop.test")
        self.kind = kind

    def get(self, headers: dict[str, str] | None = None) -> tuple[str, bool]:
        if self.kind == "wsgi":
            reply = self.client.get("/page", headers=headers)
        else:
            import asyncio

            reply = asyncio.run(self.client.get("/page", headers=headers))
        return reply.text, "; hit" in reply.headers.get("cache-status", "")

    def close(self) -> None:
        self.app.runtime.close()


@pytest.fixture(params=["wsgi", "asgi"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.parametrize("attack", ATTACKS)
def test_a_forwarded_header_never_poisons_clean_clients(kind: str, attack: dict[str, str]) -> None:
    shop = Client(kind)
    try:
        poisoned, hit = shop.get(attack)
        clean, _ = shop.get()
        assert clean != poisoned and not hit
        assert shop.get() == (clean, True)  # the clean page was stored, the poisoned one not
    finally:
        shop.close()


@pytest.mark.parametrize("attack", ATTACKS)
def test_a_request_with_a_forwarded_header_is_not_served_from_the_cache(kind: str,
                                                                          attack: dict[str, str]) -> None:
    shop = Client(kind)
    try:
        clean, _ = shop.get()
        answer, hit = shop.get(attack)
        assert not hit and answer != clean
    finally:
        shop.close()


def test_values_that_restate_the_request_change_nothing(kind: str) -> None:
    shop = Client(kind)
    try:
        clean, _ = shop.get()
        assert shop.get({"x-forwarded-host": "shop.test", "x-forwarded-proto": "http"}) == (clean, True)
    finally:
        shop.close()


def test_the_schemes_default_port_restates_a_portless_host(kind: str) -> None:
    # What ingress-nginx sends every request over https: Host "shop.example.com" and
    # X-Forwarded-Port 443. ProxyFix then makes the same URLs as without the header.
    shop = Client(kind)
    try:
        clean, _ = shop.get()
        assert shop.get({"x-forwarded-port": "80"}) == (clean, True)
    finally:
        shop.close()


def test_a_keyed_forwarded_header_is_part_of_the_key(kind: str) -> None:
    shop = Client(kind, keyed_forwarded_headers=["X-Forwarded-Host", "x-forwarded-proto"])
    try:
        evil = {"x-forwarded-host": "evil.example"}
        first, hit = shop.get(evil)
        assert not hit and "evil.example" in first
        assert shop.get(evil) == (first, True)
        clean, hit = shop.get()
        assert not hit and "evil.example" not in clean
        assert shop.get() == (clean, True)
        other, hit = shop.get({"x-forwarded-host": "evil.example", "x-forwarded-proto": "https"})
        assert not hit and other != first
        assert shop.get({"x-forwarded-prefix": "/evil"})[1] is False
        assert shop.get({"x-forwarded-prefix": "/evil"})[1] is False  # nor stored
    finally:
        shop.close()


@pytest.mark.parametrize("value", [["x-forwarded-for"], ["host"], ["x-forwarded-host", "via"], [""]])
def test_only_known_forwarded_headers_can_be_keyed(value: Any) -> None:
    with pytest.raises(ConfigError, match="keyed_forwarded_headers"):
        scalekit.wrap(asgi_shop, **{**SETTINGS, "cache": {"keyed_forwarded_headers": value}})
