"""The status page at /_scalekit/: guarded exactly like /metrics, the same numbers as /metrics
with and without JavaScript, its assets immutable, its own requests unmeasured."""

from __future__ import annotations

import base64
import gc
import hashlib
import json
import re
from typing import Any

import pytest

from scalekit.metrics import instruments
from tests.status.support import MATCHES_METRICS, StatusDriver, metric_sum, page_values, samples_of
from tests.test_metrics import ACCESS

PAGE = "/_scalekit/"
JSON = "/_scalekit/status.json"


@pytest.fixture(params=["wsgi", "asgi"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _traffic(driver: StatusDriver) -> None:
    for index in range(3):
        for _ in range(2):  # a miss, then a hit
            assert driver.get(f"/items/{index}")[0] == 200
    driver.get("/account")  # private: uncacheable


def test_every_figure_of_the_page_equals_metrics(kind: str) -> None:
    gc.collect()  # an L1 of an earlier test, collected between the two readings, would leave one
    driver = StatusDriver(kind)
    _traffic(driver)
    # In process, no request runs between the scrape and the page: the figures are equal.
    samples = samples_of(driver.get("/metrics")[2])
    status, headers, html = driver.get(PAGE)
    assert status == 200 and headers["content-type"] == "text/html; charset=utf-8"
    values = page_values(html)
    for cell, (name, labels) in MATCHES_METRICS.items():
        assert values[cell] == metric_sum(samples, name, **labels), cell
    # The process's L1s: this app's 64 MiB, and those of apps other tests left alive here.
    assert values["tier-memory-max-bytes"] >= 64 * 1024 * 1024
    assert values["tier-memory-hits"] >= 3 and values["cache-uncacheable"] >= 1


def test_the_json_carries_the_same_tables_and_figures(kind: str) -> None:
    gc.collect()  # as above
    driver = StatusDriver(kind)
    _traffic(driver)
    samples = samples_of(driver.get("/metrics")[2])
    status, headers, body = driver.get(JSON)
    assert status == 200 and headers["content-type"] == "application/json"
    document = json.loads(body)
    cells = {cell["id"]: cell["value"] for table in document["tables"] for row in table["rows"]
             for cell in row if cell["id"]}
    for cell, (name, labels) in MATCHES_METRICS.items():
        assert cells[cell] == metric_sum(samples, name, **labels), cell
    assert page_values(document["html"].encode()) == {k: v for k, v in cells.items() if v is not None}


def test_the_page_counts_requests_since_the_last_reading(kind: str) -> None:
    driver = StatusDriver(kind)
    before = page_values(driver.get(PAGE)[2])
    _traffic(driver)
    after = page_values(driver.get(PAGE)[2])
    # The page's own requests and the /metrics scrapes are not the app's requests.
    assert after["requests-total"] - before["requests-total"] == 7
    assert after["cache-hit"] - before["cache-hit"] == 3
    assert after["cache-miss"] - before["cache-miss"] == 3


def test_route_templates_are_escaped_and_ranked_by_time_saved() -> None:
    driver = StatusDriver("wsgi")
    hostile = "/<script>alert(1)</script>/{id}"
    instruments.HTTP_REQUESTS.labels("GET", hostile, "2xx").inc()
    instruments.CACHE_ORIGIN_SECONDS_SAVED.labels(hostile).inc(10_000)
    html = driver.get(PAGE)[2].decode()
    assert "<script>alert(1)" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;/{id}" in html
    routes = re.search(r'<section id="routes">.*?</section>', html, re.DOTALL)
    assert routes is not None
    first_row = re.search(r"<tbody><tr><th>(.*?)</th>", routes.group(0))
    assert first_row is not None and first_row.group(1) == "/&lt;script&gt;alert(1)&lt;/script&gt;/{id}"
    assert page_values(html.encode())["route-0-saved-origin"] >= 10_000


def test_the_page_works_without_javascript() -> None:
    html = StatusDriver("wsgi").get(PAGE)[2].decode()
    # Tables in the markup, a reload every few seconds in <noscript>, charts hidden until the
    # script shows them, and no inline script or style for the CSP to refuse.
    assert '<section id="tiers"><h2>' in html and "<table" in html
    assert re.search(r'<noscript><meta http-equiv="refresh" content="\d+"></noscript>', html)
    assert '<section id="charts" hidden>' in html
    assert "<script>" not in html and "<style" not in html and "style=" not in html


def test_page_headers_forbid_framing_and_storing(kind: str) -> None:
    for path in (PAGE, JSON):
        status, headers, _ = StatusDriver(kind).get(path)
        assert status == 200
        assert headers["cache-control"] == "no-store"
        assert headers["x-frame-options"] == "DENY"
        assert headers["x-content-type-options"] == "nosniff"
        assert "default-src 'self'" in headers["content-security-policy"]


def test_static_assets_are_versioned_by_content_and_immutable(kind: str) -> None:
    driver = StatusDriver(kind)
    html = driver.get(PAGE)[2].decode()
    urls = re.findall(r'(?:src|href)="(static/[^"]+)"', html)
    assert {re.sub(r"\.[0-9a-f]{16}\.", ".", url) for url in urls} == {
        "static/uPlot.iife.min.js", "static/uPlot.min.css", "static/status.js", "static/status.css"}
    for url in urls:
        status, headers, body = driver.get(PAGE + url)
        assert status == 200, url
        digest = re.search(r"\.([0-9a-f]{16})\.", url)
        assert digest is not None and hashlib.sha256(body).hexdigest()[:16] == digest.group(1)
        assert headers["cache-control"] == "private, max-age=31536000, immutable"
        assert headers["content-type"].startswith("text/javascript" if url.endswith(".js") else "text/css")
    status, _, body = driver.get(PAGE + "static/status.0000000000000000.js")
    assert (status, body) == (200, b"private")  # an unknown asset name is the app's to answer


def test_the_path_without_its_slash_redirects(kind: str) -> None:
    status, headers, _ = StatusDriver(kind).get("/_scalekit")
    assert status == 308 and headers["location"] == "_scalekit/"


def test_status_page_can_be_moved_or_switched_off(kind: str) -> None:
    moved = StatusDriver(kind, metrics={"status_path": "/ops/status/"})
    assert moved.get("/ops/status/")[0] == 200
    assert moved.get(PAGE)[2] == b"private"
    off = StatusDriver(kind, metrics={"status_page": False})
    assert off.get(PAGE)[2] == b"private"
    assert off.get("/metrics")[0] == 200


# --------------------------------------------------------------------------- the guard of /metrics

ENDPOINTS = ["/metrics", PAGE, JSON]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize(("settings", "client", "authorization", "expected"), ACCESS)
def test_the_page_is_guarded_exactly_like_metrics(kind: str, endpoint: str, settings: dict[str, Any],
                                                  client: str, authorization: str | None, expected: int) -> None:
    driver = StatusDriver(kind, metrics=settings)
    status, headers, body = driver.request("GET", endpoint, client=client, authorization=authorization)
    assert status == expected
    assert dict(headers)["cache-control"] == "no-store"
    if expected != 200:
        assert b"scalekit_" not in body and b"<table" not in body and b"tables" not in body
    challenges = [value for name, value in headers if name == "www-authenticate"]
    if expected == 401:
        assert 'Bearer realm="metrics"' in challenges
        if endpoint != "/metrics":  # what makes a browser ask for the token
            assert 'Basic realm="scalekit", charset="UTF-8"' in challenges
    else:
        assert challenges == []


def test_a_browser_sends_the_token_as_a_basic_password(kind: str) -> None:
    token = "s3cret-token-0123456789"
    driver = StatusDriver(kind, metrics={"token": token})
    basic = "Basic " + base64.b64encode(f"anyone:{token}".encode()).decode()
    for endpoint in ENDPOINTS:
        assert driver.request("GET", endpoint, client="192.0.2.1", authorization=basic)[0] == 200
    wrong = "Basic " + base64.b64encode(b"anyone:not-the-token-at-all").decode()
    assert driver.request("GET", PAGE, client="192.0.2.1", authorization=wrong)[0] == 401
    assert driver.request("GET", PAGE, client="192.0.2.1", authorization="Basic %%%")[0] == 401
