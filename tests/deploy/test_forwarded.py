"""The shipped nginx edge and forwarded headers: a client's word on the request's host, port,
path prefix or scheme never reaches the app, so it can neither make the app render a page for
another host nor plant such a page in the edge cache; the trusted load balancer (it terminates
TLS) names the client and the scheme, and nothing else. And an edge hit does not claim to be
new: it carries the Age Varnish computed.
"""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import pytest

from .conftest import Edge
from .harness import TRUSTED_LOAD_BALANCER

pytestmark = [pytest.mark.nginx, pytest.mark.server]

HOST = "shop.test"
# What frameworks rebuild a request's URL or scheme from (werkzeug ProxyFix, Django, Rails,
# gunicorn's secure_scheme_headers, RFC 7239), each set by an attacker.
POISON = {
    "Forwarded": 'for=198.51.100.7;host=evil.example;proto=https',
    "X-Forwarded-Host": "evil.example",
    "X-Forwarded-Port": "8443",
    "X-Forwarded-Prefix": "/evil",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Ssl": "on",
    "X-Forwarded-Protocol": "ssl",
    "X-Forwarded-Scheme": "https",
    "X-Forwarded-Server": "evil.example",
    "X-Scheme": "https",
    "X-Url-Scheme": "https",
    "X-Host": "evil.example",
    "X-Original-URL": "/admin",
    "X-Rewrite-URL": "/admin",
}
# nginx overwrites these two with its own values; every other one above must not arrive at all.
OVERWRITTEN = {"x-forwarded-host", "x-forwarded-proto"}
STRIPPED = {name.lower() for name in POISON} - OVERWRITTEN


def get(url: str, target: str, *, source: str = "127.0.0.1", headers: dict[str, str] | None = None) -> httpx.Response:
    """GET from a chosen loopback address (127.0.0.2 is the trusted load balancer)."""
    with httpx.Client(transport=httpx.HTTPTransport(local_address=source), timeout=10) as client:
        response = client.get(url + target, headers={"Host": HOST, **(headers or {})})
    assert response.status_code == 200, response.text
    return response


def whoami(edge: Edge, **kwargs: Any) -> dict[str, Any]:
    return dict(get(edge.url, "/whoami", **kwargs).json())


def test_a_clients_forwarded_headers_never_reach_the_app(edge: Edge) -> None:
    seen = whoami(edge, headers=POISON)
    assert seen["host"] == HOST and seen["headers"]["x-forwarded-host"] == HOST
    assert seen["headers"]["x-forwarded-proto"] == "http" and seen["scheme"] == "http"
    assert seen["client"] == "127.0.0.1"
    assert not STRIPPED & set(seen["headers"]), STRIPPED & set(seen["headers"])


def test_the_trusted_load_balancer_names_client_and_scheme_but_not_the_host(edge: Edge) -> None:
    seen = whoami(edge, source=TRUSTED_LOAD_BALANCER, headers={**POISON, "X-Forwarded-For": "203.0.113.9"})
    assert seen["scheme"] == "https" and seen["client"] == "203.0.113.9"
    assert seen["host"] == HOST and seen["headers"]["x-forwarded-host"] == HOST
    assert not STRIPPED & set(seen["headers"]), STRIPPED & set(seen["headers"])


def test_a_poisoned_request_cannot_plant_a_page_in_the_edge_cache(edge: Edge) -> None:
    target = f"/links?v={uuid.uuid4().hex}"
    poisoned = get(edge.url, target, headers=POISON)
    assert poisoned.headers["x-cache-status"] == "MISS"
    assert poisoned.text == f"http://{HOST}/links\n"   # the app built its URL from nothing forged
    clean = get(edge.url, target)
    assert clean.headers["x-cache-status"] == "HIT" and clean.text == poisoned.text


def test_each_scheme_the_client_used_is_its_own_edge_entry(edge: Edge) -> None:
    target = f"/links?v={uuid.uuid4().hex}"
    through_tls = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"}
    https = get(edge.url, target, source=TRUSTED_LOAD_BALANCER, headers=through_tls)
    assert https.headers["x-cache-status"] == "MISS" and https.text == f"https://{HOST}/links\n"
    plain = get(edge.url, target)
    assert plain.headers["x-cache-status"] == "MISS" and plain.text == f"http://{HOST}/links\n"
    again = get(edge.url, target, source=TRUSTED_LOAD_BALANCER, headers=through_tls)
    assert again.headers["x-cache-status"] == "HIT" and again.text == https.text
    # A client claiming https directly is served the http entry, never the https one.
    claimed = get(edge.url, target, headers={"X-Forwarded-Proto": "https"})
    assert claimed.headers["x-cache-status"] == "HIT" and claimed.text == plain.text


def test_an_edge_hit_says_its_age_at_the_edge(edge: Edge) -> None:
    # (With nginx as the edge cache a hit carried the app's Date and no Age: nginx replays
    # stored headers and computes none. Varnish computes Age, RFC 9111 §5.1, on a Date of its
    # delivery: Date minus Age is still when the app made the page.)
    target = f"/cacheable?v={uuid.uuid4().hex}"
    first = get(edge.url, target)
    assert first.headers["x-cache-status"] == "MISS" and first.headers["age"] == "0"   # the app's
    time.sleep(1.1)   # let the clock move, so the page is at least a second old
    hit = get(edge.url, target)
    assert hit.headers["x-cache-status"] == "HIT"
    age = int(hit.headers["age"])
    assert 1 <= age <= 60   # never the app's replayed "0"
    made = parsedate_to_datetime(hit.headers["date"]) - timedelta(seconds=age)
    assert abs((made - parsedate_to_datetime(first.headers["date"])).total_seconds()) <= 1


def test_the_app_stores_pages_that_came_through_the_edge_over_either_scheme(edge: Edge) -> None:
    # The forwarded headers nginx sends restate the request as the app sees it (gunicorn applies
    # X-Forwarded-Proto from nginx), so the app's own tiers store, not only the edge.
    target = f"/cacheable?v={uuid.uuid4().hex}"
    through_tls = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"}
    https = get(edge.url, target, source=TRUSTED_LOAD_BALANCER, headers=through_tls)
    plain = get(edge.url, target)
    for response in (https, plain):
        assert response.headers["x-cache-status"] == "MISS"
        assert "stored" in response.headers["cache-status"], response.headers["cache-status"]
