"""Web cache deception at the edge: a CDN rule (or the default policy) grants shared freshness by
path, as a cache rule does in the app. The app's own cache never stores the answer to a request
that carried Cookie on a rule's word alone (tests/cache/test_deception.py); the CDN layer then
must not stamp that same answer ``public, s-maxage`` for the edge either, or an edge in front
(Cloudflare caches ``*.css`` whatever the cookies; the shipped Varnish passes only the session
cookies its VCL names) hands alice's ``/account/settings-x.css`` to the next visitor.
Authorization and Set-Cookie are covered already (tests/cdn/test_policy.py)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

import scalekit

SHARED = ("public", "s-maxage")
REASON = ("cdn/policy.py makes only Set-Cookie and Authorization private; a request Cookie gets the rule's "
          "shared freshness (owner: hotstack; a design call for the lead: analytics cookies)")


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


@pytest.mark.xfail(strict=True, reason=REASON)
@pytest.mark.parametrize("cdn", CDN_RULES)
def test_the_answer_to_a_request_with_a_cookie_is_never_stamped_shared(cdn: dict[str, Any]) -> None:
    headers = headers_for("remember=alice", cdn)
    control = headers.get("cache-control", "")
    shared_for_a_user = any(word in control for word in SHARED) or "cdn-cache-control" in headers
    vary = {name.strip().lower() for name in headers.get("vary", "").split(",")}
    assert not shared_for_a_user or "cookie" in vary, dict(headers)
