"""The cache's behaviour end to end, one suite run over WSGI and ASGI (in process) and over
gunicorn and uvicorn (real HTTP). Time moves only through the injected clock."""

from __future__ import annotations

import pytest

from tests.cache.harness import Harness

MAX_AGE = "cc=max-age%3D60"


def test_miss_then_hit_with_age_and_cache_status(h: Harness, path: str) -> None:
    first = h.get(f"{path}?{MAX_AGE}")
    assert first.status == 200
    assert first.cache_status == "scalekit; fwd=uri-miss; stored; ttl=60"
    assert first.headers["age"] == "0"
    h.advance(10)
    second = h.get(f"{path}?{MAX_AGE}")
    assert second.body == first.body
    assert second.cache_status == "scalekit; hit; ttl=50; detail=memory"
    assert second.headers["age"] == "10"  # RFC 9111 §5.1 / §4.2.3
    assert h.calls(path) == 1


def test_age_includes_the_age_the_response_arrived_with(h: Harness, path: str) -> None:
    # RFC 9111 §4.2.3: corrected_initial_age counts the Age an upstream cache sent.
    url = f"{path}?cc=max-age%3D3600&age=100"
    first = h.get(url)
    assert first.headers["age"] == "100"
    h.advance(10)
    second = h.get(url)
    assert second.hit and second.headers["age"] == "110"
    assert "ttl=3490" in second.cache_status


def test_head_shares_the_get_entry(h: Harness, path: str) -> None:
    h.get(f"{path}?{MAX_AGE}")
    head = h.request("HEAD", f"{path}?{MAX_AGE}")
    assert head.hit and head.body == b""
    assert h.calls(path) == 1


def test_query_is_normalised_and_trackers_dropped(h: Harness, path: str) -> None:
    h.get(f"{path}?b=2&{MAX_AGE}&a=1")
    again = h.get(f"{path}?a=1&utm_source=news&{MAX_AGE}&b=2&fbclid=x")
    assert again.hit
    other = h.get(f"{path}?a=1&b=3&{MAX_AGE}")
    assert not other.hit
    assert h.calls(path) == 2


def test_unlisted_host_bypasses_the_cache(h: Harness, path: str) -> None:
    for _ in range(2):
        reply = h.request("GET", f"{path}?{MAX_AGE}", {"host": "evil.test"})
        assert reply.cache_status == "scalekit; fwd=bypass; detail=host-not-allowed"   # says why
    assert h.calls(path) == 2
    # A listed domain (".example.com") is cached, each host in its own key space.
    h.request("GET", f"{path}?{MAX_AGE}", {"host": "a.example.com"})
    assert h.request("GET", f"{path}?{MAX_AGE}", {"host": "a.example.com"}).hit
    assert not h.request("GET", f"{path}?{MAX_AGE}", {"host": "b.example.com"}).hit


def test_vary_variants_coexist(h: Harness, path: str) -> None:
    url = f"{path}?{MAX_AGE}&vary=Accept-Language"
    en = h.get(url, accept_language="en")
    fr = h.get(url, accept_language="fr")
    assert "fwd=uri-miss" in en.cache_status and "fwd=vary-miss" in fr.cache_status
    assert h.get(url, accept_language="en").body == en.body
    assert h.get(url, accept_language="fr").body == fr.body
    assert b"Accept-Language=fr" in fr.body and b"Accept-Language=en" in en.body
    assert h.calls(path) == 2


@pytest.mark.parametrize("vary", ["*", "Accept,%20*", "accept-language,*"])
def test_vary_star_is_never_served_from_cache(h: Harness, path: str, vary: str) -> None:
    # RFC 9111 §4.1: "*" "always fails to match".
    for _ in range(2):
        assert not h.get(f"{path}?{MAX_AGE}&vary={vary}").hit
    assert h.calls(path) == 2


@pytest.mark.parametrize("script", [
    pytest.param("cc=private%2C%20max-age%3D60", id="private §5.2.2.7"),
    pytest.param("cc=no-store%2C%20max-age%3D60", id="no-store §5.2.2.5"),
    pytest.param(f"{MAX_AGE}&cookie=1", id="set-cookie"),
    pytest.param("cc=public", id="no explicit freshness, heuristics off"),
    pytest.param("cc=max-age%3D60%2C%20must-understand&status=599", id="status not understood §5.2.2.3"),
    pytest.param("expires=0", id="invalid Expires is already expired §5.3"),
    pytest.param(f"{MAX_AGE}&partial=1", id="partial 206 passes through"),
])
def test_never_stored(h: Harness, path: str, script: str) -> None:
    for _ in range(2):
        assert not h.get(f"{path}?{script}").hit
    assert h.calls(path) == 2


def test_authorization_is_stored_only_when_the_response_allows_it(h: Harness, path: str) -> None:
    # RFC 9111 §3.5: public, s-maxage or must-revalidate allow it.
    for _ in range(2):
        assert not h.get(f"{path}?{MAX_AGE}", authorization="Bearer a").hit
    public = f"{path}?cc=public%2C%20max-age%3D60"
    h.get(public, authorization="Bearer a")
    assert h.get(public, authorization="Bearer a").hit


def test_surrogate_control_is_consumed_and_stripped(h: Harness, path: str) -> None:
    url = f"{path}?cc=max-age%3D0&sc=max-age%3D120"
    first = h.get(url)
    assert "surrogate-control" not in first.headers
    h.advance(100)
    second = h.get(url)
    assert second.hit and "surrogate-control" not in second.headers
    assert second.headers["cache-control"] == "max-age=0"


def test_expires_gives_freshness(h: Harness, path: str) -> None:
    h.get(f"{path}?expires=Sun,%2006%20Nov%202044%2008:49:37%20GMT")
    assert h.get(f"{path}?expires=Sun,%2006%20Nov%202044%2008:49:37%20GMT").hit


def test_stale_entry_is_revalidated_and_freshened(h: Harness, path: str) -> None:
    # RFC 9111 §4.3.1 conditional request, §4.3.4 freshening with a 304.
    url = f"{path}?{MAX_AGE}&etag=1"
    first = h.get(url)
    h.advance(70)
    second = h.get(url)
    assert second.status == 200 and second.body == first.body
    assert "fwd=stale; fwd-status=304; stored" in second.cache_status
    assert h.calls(path) == 2  # the 304
    third = h.get(url)
    assert third.hit and third.headers["age"] == "0"


def test_no_cache_response_is_revalidated_every_time(h: Harness, path: str) -> None:
    url = f"{path}?cc=no-cache&etag=1"
    h.get(url)
    reply = h.get(url)
    assert "fwd=stale; fwd-status=304" in reply.cache_status
    assert h.calls(path) == 2


def test_client_conditional_answered_with_304_from_a_fresh_entry(h: Harness, path: str) -> None:
    url = f"{path}?{MAX_AGE}&etag=1&vary=Accept"
    etag = h.get(url).headers["etag"]
    reply = h.get(url, if_none_match=etag)
    assert reply.status == 304 and reply.body == b"" and reply.hit
    for name in ("etag", "cache-control", "vary", "date"):
        assert name in reply.headers  # RFC 9110 §15.4.5
    assert "content-type" not in reply.headers
    assert h.get(url, if_none_match='"other"').status == 200
    assert h.calls(path) == 1


def test_unsafe_method_invalidates_target_and_location(h: Harness, path: str) -> None:
    # RFC 9111 §4.4.
    h.get(f"{path}?{MAX_AGE}")
    h.get(f"{path}/other?{MAX_AGE}")
    posted = h.request("POST", f"{path}?{MAX_AGE}", {"x-origin-location": f"{path}/other?{MAX_AGE}"})
    assert "fwd=method" in posted.cache_status and posted.headers["age"] == "0"
    assert not h.get(f"{path}?{MAX_AGE}").hit
    assert not h.get(f"{path}/other?{MAX_AGE}").hit


def test_stale_while_revalidate_serves_stale_and_refreshes_once(h: Harness, path: str) -> None:
    url = f"{path}?cc=max-age%3D10%2C%20stale-while-revalidate%3D60"
    h.get(url)
    h.advance(20)
    stale = h.get(url)
    assert stale.hit and b"call=1" in stale.body and "ttl=-10" in stale.cache_status
    h.eventually(lambda: h.calls(path) == 2)
    h.eventually(lambda: b"call=2" in h.get(url).body)
    assert h.get(url).hit and h.calls(path) == 2


@pytest.mark.parametrize("mode", ["500", "raise"])
def test_stale_if_error_serves_stale_when_the_origin_fails(h: Harness, path: str, mode: str) -> None:
    url = f"{path}?cc=max-age%3D10%2C%20stale-if-error%3D300"
    good = h.get(url)
    h.advance(20)
    h.fail(mode)
    try:
        reply = h.get(url)
    finally:
        h.fail("")
    assert reply.status == 200 and reply.body == good.body
    assert "fwd=stale" in reply.cache_status


def test_range_served_from_a_stored_complete_200(h: Harness, path: str) -> None:
    url = f"{path}?{MAX_AGE}&size=100"
    full = h.get(url)
    part = h.get(url, range="bytes=10-19")
    assert part.status == 206 and part.body == full.body[10:20]
    assert part.headers["content-range"] == "bytes 10-19/100"
    unsatisfiable = h.get(url, range="bytes=500-")
    assert unsatisfiable.status == 416 and unsatisfiable.headers["content-range"] == "bytes */100"
    assert h.calls(path) == 1


def test_only_if_cached_without_an_entry_is_504(h: Harness, path: str) -> None:
    assert h.get(f"{path}?{MAX_AGE}", cache_control="only-if-cached").status == 504
    h.get(f"{path}?{MAX_AGE}")
    assert h.get(f"{path}?{MAX_AGE}", cache_control="only-if-cached").hit
    assert h.calls(path) == 1


def test_request_max_age_and_min_fresh(h: Harness, path: str) -> None:
    url = f"{path}?{MAX_AGE}"
    h.get(url)
    h.advance(30)
    assert h.get(url, cache_control="max-age=40").hit
    assert not h.get(url, cache_control="max-age=10").hit  # §5.2.1.1
    h.advance(30)
    assert not h.get(url, cache_control="min-fresh=50").hit  # §5.2.1.3


def test_client_no_cache_does_not_bypass_by_default(h: Harness, path: str) -> None:
    h.get(f"{path}?{MAX_AGE}")
    assert h.get(f"{path}?{MAX_AGE}", cache_control="no-cache").hit
    assert h.get(f"{path}?{MAX_AGE}", pragma="no-cache").hit


def test_request_no_store_is_served_but_not_stored(h: Harness, path: str) -> None:
    h.get(f"{path}?{MAX_AGE}", cache_control="no-store")
    assert not h.get(f"{path}?{MAX_AGE}").hit
    assert h.get(f"{path}?{MAX_AGE}", cache_control="no-store").hit


def test_route_rule_from_app_code(h: Harness, path: str) -> None:
    # cache_response() gives a lifetime to a response without one; tags come with it.
    first = h.get(f"{path}?rule=30")
    assert "stored; ttl=30" in first.cache_status
    assert h.get(f"{path}?rule=30").hit
    assert not h.get(f"{path}?rule=30&cc=no-store").hit  # explicit headers still win


def test_concurrent_misses_make_one_origin_call(h: Harness, path: str) -> None:
    replies = h.many("GET", f"{path}?{MAX_AGE}&sleep=400", 6)
    assert {reply.body for reply in replies} == {replies[0].body}
    assert h.calls(path) == 1
    assert sum("collapsed" in reply.cache_status for reply in replies) >= 1


def test_private_responses_are_not_shared_with_coalesced_waiters(h: Harness, path: str) -> None:
    replies = h.many("GET", f"{path}?{MAX_AGE}&cookie=1&sleep=200", 4)
    assert len({reply.headers["set-cookie"] for reply in replies}) == 4
    assert h.calls(path) == 4
