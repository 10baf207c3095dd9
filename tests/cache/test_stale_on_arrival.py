"""A response that is already stale when it arrives (its Age, or Date, at or past its lifetime)
and carries no validator and no stale window can never be used: not served (stale), not
revalidated (nothing to send in a conditional request). It is not stored, and Cache-Status does
not say "stored", exactly as for ``max-age=0``. With a validator or a stale window it is kept.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

import scalekit
from scalekit.cache.storable import NotStorable, StorePlan, StoreSettings, analyse_response
from scalekit.headers import format_http_date

NOW = 1_000_000.0
STALE_ON_ARRIVAL = [("cache-control", "max-age=10"), ("age", "20")]
SETTINGS: dict[str, Any] = {"pool": False, "cdn": False, "metrics": False, "allowed_hosts": ["shop.test"],
                            "cache": {"disk": {"enabled": False}}}


def analyse(headers: list[tuple[str, str]], *, date: float = NOW) -> StorePlan | NotStorable:
    return analyse_response(200, [("date", format_http_date(date)), *headers], {}.get, now=NOW,
                            request_time=NOW, rule=None, settings=StoreSettings())


@pytest.mark.parametrize("headers, date", [
    pytest.param(STALE_ON_ARRIVAL, NOW, id="Age past max-age"),
    pytest.param([("cache-control", "max-age=10")], NOW - 30, id="Date past max-age"),
])
def test_a_useless_stale_response_is_not_stored(headers: list[tuple[str, str]], date: float) -> None:
    assert analyse(headers, date=date) == NotStorable("no-freshness")


@pytest.mark.parametrize("extra", [
    pytest.param([("etag", '"v1"')], id="ETag"),
    pytest.param([("last-modified", format_http_date(NOW - 3600))], id="Last-Modified"),
])
def test_a_stale_response_with_a_validator_is_kept_for_revalidation(extra: list[tuple[str, str]]) -> None:
    assert isinstance(analyse([*STALE_ON_ARRIVAL, *extra]), StorePlan)


def test_a_stale_response_with_a_stale_window_is_kept() -> None:
    plan = analyse([("cache-control", "max-age=10, stale-while-revalidate=60"), ("age", "20")])
    assert isinstance(plan, StorePlan)


def shop(headers: list[tuple[str, str]]) -> Any:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain"), *headers])
        return [b"page"]
    return scalekit.wrap(app, **SETTINGS)


def test_cache_status_never_says_stored_for_a_response_that_cannot_be_used() -> None:
    app = shop([("Cache-Control", "max-age=10"), ("Age", "20")])
    try:
        with httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://shop.test") as client:
            first = client.get("/page").headers["cache-status"]
            second = client.get("/page").headers["cache-status"]
        assert "stored" not in first, first
        assert second == "scalekit; fwd=uri-miss", second
    finally:
        app.runtime.close()


def test_cache_status_says_stored_and_then_revalidates_with_a_validator() -> None:
    app = shop([("Cache-Control", "max-age=10"), ("Age", "20"), ("ETag", '"v1"')])
    try:
        with httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://shop.test") as client:
            assert "stored" in client.get("/page").headers["cache-status"]
            assert client.get("/page").headers["cache-status"].startswith("scalekit; fwd=stale")
    finally:
        app.runtime.close()
