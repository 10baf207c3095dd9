"""The records the miss path builds by position get every field in its place.

``StorePlan``, ``CachedEntry`` and ``Forward`` are built once per miss by position (a class
called with keywords costs a dict; see scalekit/records.py). A positional call type-checks
even when two fields of one type are swapped, so each hot construction is checked here with a
distinct value in every field, read back by name.
"""

from __future__ import annotations

import dataclasses

from scalekit.cache.config import CacheConfig
from scalekit.cache.entry import CachedEntry
from scalekit.cache.policy import CachePolicy, Forward, RequestView
from scalekit.cache.responses import ResponseBuilder
from scalekit.cache.storable import StorePlan, StoreSettings, analyse_response
from scalekit.headers import format_http_date

NOW = 2_000_000.0


def test_plan_storing_puts_each_value_in_its_field() -> None:
    request = {"accept": "text/html"}.get
    plan = analyse_response(
        200, [("cache-control", "max-age=30, s-maxage=100, stale-while-revalidate=7, stale-if-error=13"),
              ("age", "5"), ("date", format_http_date(NOW)), ("vary", "accept"), ("content-length", "4"),
              ("surrogate-key", "a b")],
        request, now=NOW, request_time=NOW - 2, rule=None, settings=StoreSettings())
    assert isinstance(plan, StorePlan)
    assert plan.status == 200
    assert ("vary", "accept") in plan.headers
    assert (plan.request_time, plan.response_time) == (NOW - 2, NOW)
    assert plan.corrected_initial_age_seconds == 7  # Age 5 + the 2 s the response took
    assert plan.freshness_lifetime_seconds == 100
    assert (plan.stale_while_revalidate_seconds, plan.stale_if_error_seconds) == (7, 13)
    assert (plan.requires_revalidation, plan.must_revalidate) == (False, True)
    assert plan.vary == ("accept",)
    assert plan.secondary_key != "" and "text/html" in plan.secondary_key
    assert set(plan.header_tags) == {"a", "b"}
    assert plan.content_length == 4
    assert (plan.stored_etag, plan.unsent) == (False, frozenset({"etag"}))
    no_cache = analyse_response(200, [("cache-control", "no-cache"), ("etag", '"e"')], {}.get, now=NOW,
                                request_time=NOW, rule=None, settings=StoreSettings())
    assert isinstance(no_cache, StorePlan)
    assert (no_cache.requires_revalidation, no_cache.must_revalidate, no_cache.stored_etag) == (True, False, True)


def test_complete_copies_each_plan_field_to_the_same_named_entry_field() -> None:
    plan = StorePlan(
        status=203, headers=(("x-a", "1"),), request_time=NOW - 3, response_time=NOW - 1,
        corrected_initial_age_seconds=4.0, freshness_lifetime_seconds=50.0,
        stale_while_revalidate_seconds=6.0, stale_if_error_seconds=8.0, requires_revalidation=True,
        must_revalidate=False, vary=("accept-language",), secondary_key="accept-language=fr",
        header_tags=(), content_length=None, stored_etag=True)
    entry = ResponseBuilder("scalekit").complete(plan, b"body", (("t", 9),), "/r/{id}", finished_at=NOW,
                                                 db_seconds=0.25)
    assert entry is not None
    for field in dataclasses.fields(StorePlan):
        if hasattr(entry, field.name) and field.name != "headers":
            assert getattr(entry, field.name) == getattr(plan, field.name), field.name
    assert entry.headers == (("x-a", "1"), ("content-length", "4"))
    assert (entry.body, entry.tags, entry.route) == (b"body", (("t", 9),), "/r/{id}")
    assert (entry.is_vary_index, entry.variants_id) == (False, "")
    assert (entry.origin_seconds, entry.db_seconds) == (3.0, 0.25)
    assert entry == CachedEntry(
        status=203, headers=entry.headers, body=b"body", request_time=NOW - 3, response_time=NOW - 1,
        corrected_initial_age_seconds=4.0, freshness_lifetime_seconds=50.0,
        stale_while_revalidate_seconds=6.0, stale_if_error_seconds=8.0, requires_revalidation=True,
        must_revalidate=False, tags=(("t", 9),), vary=("accept-language",),
        secondary_key="accept-language=fr", route="/r/{id}", origin_seconds=3.0, db_seconds=0.25)


def test_forward_puts_each_decision_in_its_field() -> None:
    policy = CachePolicy(CacheConfig(), allowed_hosts=("*",))
    stored = CachedEntry(
        status=200, headers=(("etag", '"v1"'), ("content-length", "4")), body=b"body", request_time=NOW,
        response_time=NOW, corrected_initial_age_seconds=0.0, freshness_lifetime_seconds=10.0)
    credentials = {"authorization": "Bearer x"}.get
    forward = policy.decide_request(RequestView("GET", "http", "shop.test", "/p", "", credentials),
                                    (stored, "memory"), now=NOW + 60)
    assert isinstance(forward, Forward)
    assert (forward.fwd, forward.stored, forward.tier) == ("stale", stored, "memory")
    # Storable, but a request with credentials never coalesces; the stored ETag is revalidated.
    assert (forward.may_store, forward.coalesce, forward.validating) == (True, False, True)
    assert ("if-none-match", '"v1"') in forward.request_headers
    assert forward.partial is None
    plain = policy.decide_request(RequestView("GET", "http", "shop.test", "/p", "", {}.get), None, now=NOW)
    assert isinstance(plain, Forward)
    assert (plain.fwd, plain.stored, plain.tier, plain.may_store, plain.coalesce, plain.validating,
            plain.request_headers) == ("uri-miss", None, "", True, True, False, ())
