"""Behaviour that depends on cache config or needs in-process access (tags, the runtime),
run over WSGI and ASGI in process by the ``make`` fixture."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

import scalekit
from scalekit.cache.policy import CachePolicy
from scalekit.cache.responses import ResponseBuilder
from scalekit.cdn.etag import body_etag
from tests.cache.harness import Harness

Make = Callable[..., Harness]
MAX_AGE = "cc=max-age%3D60"


def test_client_no_cache_forces_revalidation_when_configured(make: Make, path: str) -> None:
    h = make(honour_client_no_cache=True)
    h.get(f"{path}?{MAX_AGE}&etag=1")
    reply = h.get(f"{path}?{MAX_AGE}&etag=1", cache_control="no-cache")
    assert "fwd=request" in reply.cache_status  # RFC 9211 §2.2 "request"
    assert h.calls(path) == 2
    assert "fwd=request" in h.get(f"{path}?{MAX_AGE}&etag=1", pragma="no-cache").cache_status


def test_heuristic_freshness_is_off_by_default_and_on_behind_the_switch(make: Make, path: str) -> None:
    off = make()
    off.get(f"{path}?lm=1")
    assert not off.get(f"{path}?lm=1").hit
    on = make(heuristic_freshness=True)
    first = on.get(f"{path}?lm=1")
    # RFC 9111 §4.2.2: 10% of (Date - Last-Modified) = 10% of 86400 s, capped at one day.
    assert "stored; ttl=8640" in first.cache_status
    assert on.get(f"{path}?lm=1").hit


def test_config_rules_give_a_default_ttl_only_where_they_match(make: Make) -> None:
    h = make(rules=[{"path": "/products/*", "tags": ["catalogue"]}])
    assert "stored; ttl=300" in h.get("/products/1").cache_status
    assert h.get("/products/1").hit
    assert not h.get("/other").hit and not h.get("/other").hit
    h.runtime.invalidate(["catalogue"])
    assert not h.get("/products/1").hit


def test_bodies_over_the_limit_stream_through_unstored(make: Make, path: str) -> None:
    h = make(max_body_bytes=1000)
    big = h.get(f"{path}?{MAX_AGE}&size=5000")
    assert len(big.body) == 5000 and "stored" not in big.cache_status
    assert not h.get(f"{path}?{MAX_AGE}&size=5000").hit
    small = f"{path}/small?{MAX_AGE}&size=999"
    h.get(small)
    assert h.get(small).hit


def test_tag_invalidation_through_scalekit_invalidate(make: Make, path: str) -> None:
    h = make()
    url = f"{path}?{MAX_AGE}&tag=product-42%20list"
    h.get(url)
    assert h.get(url).hit
    scalekit.invalidate(["product-42"])
    assert "fwd=miss" in h.get(url).cache_status
    assert h.get(url).hit


def test_unsafe_method_with_the_host_in_another_form_invalidates_its_uri(make: Make, path: str) -> None:
    # RFC 9111 §4.4: TEST:80 names the same origin as test; such a request is never looked up
    # nor stored (the app may reflect the Host as sent), but its POST changes test's resource.
    h = make()
    url = f"{path}?{MAX_AGE}"
    h.get(url)
    assert h.get(url).hit
    h.request("POST", url, {"host": "TEST:80"})
    assert not h.get(url).hit


def test_response_overlapping_an_invalidation_is_not_stored(make: Make, path: str) -> None:
    # Generations are read when the request starts, not when it is stored.
    h = make()
    assert h.origin is not None
    h.origin.gate = threading.Event()
    url = f"{path}?{MAX_AGE}&tag=t-{path.replace('/', '')}"

    def invalidate_then_release() -> None:
        h.runtime.invalidate([f"t-{path.replace('/', '')}"])
        assert h.origin is not None and h.origin.gate is not None
        h.origin.gate.set()

    timer = threading.Timer(0.05, invalidate_then_release)
    timer.start()
    first = h.get(url)
    timer.join()
    h.origin.gate = None
    assert "stored" not in first.cache_status
    assert not h.get(url).hit


def test_coalescing_waiter_timeout_gets_stale_or_the_origin_never_a_504(make: Make, path: str) -> None:
    # A leader slower than coalesce_timeout_seconds: its waiters are served stale where
    # RFC 5861 allows, else they go to the origin themselves (a 504 of the cache's own was
    # answered here before; nginx's proxy_cache_lock_timeout behaves the same way).
    h = make(coalesce_timeout_seconds=0.2)
    assert h.origin is not None
    url = f"{path}?{MAX_AGE}&etag=1&sleep=1500"
    replies = h.many("GET", url, 3)
    assert sorted(reply.status for reply in replies) == [200, 200, 200]
    assert h.calls(path) == 3
    h.advance(70)  # stale, still kept by the memory tier for revalidation
    replies = h.many("GET", url, 3)
    assert sorted(reply.status for reply in replies) == [200, 200, 200]
    assert sum("fwd=stale" in reply.cache_status for reply in replies) >= 2
    assert h.calls(path) == 4


def test_etags_added_at_store_are_deterministic() -> None:
    # Two independent builders (two processes) derive the same ETag from the same body.
    from scalekit.cache.storable import StoreSettings, analyse_response

    plan = analyse_response(200, [("cache-control", "max-age=60")], lambda name: None, now=10.0,
                            request_time=10.0, rule=None, settings=StoreSettings())
    entries = [ResponseBuilder("a", etag_max_body_bytes=1 << 20).complete(plan, b"body", ())
               for _ in range(2)]
    assert all(entry is not None for entry in entries)
    etags = {dict(entry.headers)["etag"] for entry in entries if entry is not None}
    assert etags == {body_etag(b"body")}
    assert ResponseBuilder("a").complete(plan, b"body", ()) is not None


def test_cdn_etag_setting_reaches_the_cache() -> None:
    from scalekit.cache.config import CacheConfig

    policy = CachePolicy(CacheConfig(), allowed_hosts=("*",), etag_max_body_bytes=10)
    assert policy.responses.etag_max_body_bytes == 10


def test_unlisted_hosts_are_counted(make: Make, path: str) -> None:
    from prometheus_client import REGISTRY

    def rejected() -> float:
        return REGISTRY.get_sample_value("scalekit_host_rejected_total", {"layer": "cache"}) or 0.0

    h = make()
    before = rejected()
    h.request("GET", f"{path}?{MAX_AGE}", {"host": "evil.test"})
    assert rejected() == before + 1


def test_over_long_vary_values_are_not_stored(make: Make, path: str) -> None:
    h = make(max_vary_value_bytes=16)
    url = f"{path}?{MAX_AGE}&vary=Accept-Language"
    for _ in range(2):
        assert not h.get(url, accept_language="x" * 17).hit
    h.get(url, accept_language="short")
    assert h.get(url, accept_language="short").hit


def test_purge_endpoint_invalidates_tags(make: Make, path: str) -> None:
    token = "purge-token-0123456789"
    h = make(invalidation={"purge_token": token})
    url = f"{path}?{MAX_AGE}&tag=purge-me"
    h.get(url)
    assert h.get(url).hit
    assert h.request("POST", "/_scalekit/purge?tag=purge-me").status == 401
    purged = h.request("POST", "/_scalekit/purge?tag=purge-me", {"authorization": f"Bearer {token}"})
    # Neither Redis nor a disk tier here: nothing carries the purge past this process, so the
    # answer is not a 200 (tests/cache/tiers/test_purge.py has the 200 and 202 cases).
    assert purged.status == 503 and purged.headers["retry-after"]
    assert json.loads(purged.body)["reach"] == "process"
    assert not h.get(url).hit  # applied in this process all the same
