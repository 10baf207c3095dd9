"""Web cache deception at the edge: a CDN rule (or the default policy) grants shared freshness by
path, as a cache rule does in the app. The app's own cache never stores the answer to a request
that carried Cookie on a rule's word alone (tests/cache/test_deception.py); the CDN layer then
must not stamp that same answer ``public, s-maxage`` for the edge either, or an edge in front
(Cloudflare caches ``*.css`` whatever the cookies; the shipped Varnish passes only the session
cookies its VCL names) hands alice's ``/account/settings-x.css`` to the next visitor.
Authorization and Set-Cookie are covered already (tests/cdn/test_policy.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

import scalekit

SHARED = ("public", "s-maxage")


def account(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/css")])
    return [f"/* settings of {environ.get('HTTP_COOKIE', 'nobody')} */".encode()]


def headers_for(cookie: str | None, cdn: dict[str, Any]) -> httpx.Headers:
    app = scalekit.wrap(account, pool=False, metrics=False, allowed_hosts=["shop.test"],
                        cache={"disk": {"enabled": False}}, cdn=cdn)
    try:
        with httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://shop.test") as client:
            return client.get("/account/settings-x.css", headers={"Cookie": cookie} if cookie else {}).headers
    finally:
        app.runtime.close()


CDN_RULES = [
    pytest.param({"rules": [{"path": "/**/*.css", "policy": "page"}]}, id="a *.css rule"),
    pytest.param({"default_policy": "page"}, id="the default policy"),
]


@pytest.mark.parametrize("cdn", CDN_RULES)
def test_without_a_cookie_the_rule_shares_the_page(cdn: dict[str, Any]) -> None:
    control = headers_for(None, cdn)["cache-control"]
    assert all(word in control for word in SHARED), control


@pytest.mark.parametrize("cdn", CDN_RULES)
def test_the_answer_to_a_request_with_a_cookie_is_never_stamped_shared(cdn: dict[str, Any]) -> None:
    headers = headers_for("remember=alice", cdn)
    control = headers.get("cache-control", "")
    shared_for_a_user = any(word in control for word in SHARED) or "cdn-cache-control" in headers
    vary = {name.strip().lower() for name in headers.get("vary", "").split(",")}
    assert not shared_for_a_user or "cookie" in vary, dict(headers)


def asgi_headers_for(cookie: str | None, cdn: dict[str, Any]) -> httpx.Headers:
    async def account_asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/css")]})
        await send({"type": "http.response.body", "body": b"/* settings */"})

    app = scalekit.wrap(account_asgi, pool=False, metrics=False, allowed_hosts=["shop.test"],
                        cache={"disk": {"enabled": False}}, cdn=cdn)

    async def fetch() -> httpx.Headers:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://shop.test") as client:
            response = await client.get("/account/settings-x.css", headers={"Cookie": cookie} if cookie else {})
            return response.headers

    try:
        return asyncio.run(fetch())
    finally:
        app.runtime.close()


@pytest.mark.parametrize("cdn", CDN_RULES)
def test_under_asgi_too(cdn: dict[str, Any]) -> None:
    assert "private" in asgi_headers_for("remember=alice", cdn)["cache-control"]
    assert all(word in asgi_headers_for(None, cdn)["cache-control"] for word in SHARED)


def test_an_empty_cookie_carries_nothing() -> None:
    control = headers_for("", {"rules": [{"path": "/**/*.css", "policy": "page"}]})["cache-control"]
    assert all(word in control for word in SHARED), control


def test_a_rule_may_say_its_answers_never_depend_on_cookies() -> None:
    cdn = {"rules": [{"path": "/**/*.css", "policy": "page", "allow_cookie": True}]}
    control = headers_for("remember=alice", cdn)["cache-control"]
    assert all(word in control for word in SHARED), control


def test_the_apps_own_shared_lifetime_stands() -> None:
    def public_page(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/css"), ("Cache-Control", "public, s-maxage=60")])
        return [b"/* the same for everyone */"]

    app = scalekit.wrap(public_page, pool=False, metrics=False, allowed_hosts=["shop.test"],
                        cache={"enabled": False}, cdn={"default_policy": "page"})
    try:
        with httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://shop.test") as client:
            control = client.get("/theme.css", headers={"Cookie": "remember=alice"}).headers["cache-control"]
    finally:
        app.runtime.close()
    assert control == "public, s-maxage=60"
