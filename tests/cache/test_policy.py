"""The sans-I/O policy, table-driven against the RFC sections each row cites. No app, no server."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scalekit.cache.config import CacheConfig
from scalekit.cache.entry import CachedEntry
from scalekit.cache.policy import (
    Buffer,
    CachePolicy,
    Forward,
    Freshen,
    PassThrough,
    Refuse,
    RequestView,
    Serve,
    ServeStale,
)
from scalekit.cache.rules import ResponseRule
from scalekit.cache.storable import NotStorable, StorePlan, StoreSettings, analyse_response
from scalekit.headers import format_http_date

NOW = 1_000_000.0
DATE = format_http_date(NOW)


def analyse(headers: list[tuple[str, str]], *, status: int = 200, request: dict[str, str] | None = None,
            rule: ResponseRule | None = None, **settings: Any) -> StorePlan | NotStorable:
    return analyse_response(status, [("date", DATE), *headers], (request or {}).get, now=NOW,
                            request_time=NOW, rule=rule, settings=StoreSettings(**settings),
                            authorization="authorization" in (request or {}))


@pytest.mark.parametrize("headers, expected", [
    pytest.param([("cache-control", "max-age=10, s-maxage=20")], 20, id="§4.2.1 s-maxage first for a shared cache"),
    pytest.param([("cache-control", "max-age=10")], 10, id="§4.2.1 max-age"),
    pytest.param([("expires", format_http_date(NOW + 30))], 30, id="§4.2.1 Expires minus Date"),
    pytest.param([("expires", "0"), ("etag", '"e"')], 0, id="§5.3 invalid Expires: already expired"),
    pytest.param([("cache-control", "max-age=10"), ("expires", format_http_date(NOW + 30))], 10,
                 id="§5.3 max-age overrides Expires"),
    pytest.param([("surrogate-control", "max-age=99"), ("cache-control", "max-age=10")], 99,
                 id="Edge Architecture: Surrogate-Control wins for surrogates"),
    pytest.param([("cache-control", "no-cache"), ("etag", '"e"')], 0, id="§5.2.2.4 no-cache with validators"),
])
def test_freshness_lifetime(headers: list[tuple[str, str]], expected: float) -> None:
    plan = analyse(headers)
    assert isinstance(plan, StorePlan)
    assert plan.freshness_lifetime_seconds == expected


@pytest.mark.parametrize("headers, kwargs, expected", [
    pytest.param([("cache-control", "private, max-age=60")], {}, "private", id="§3 private, shared cache"),
    pytest.param([("cache-control", "no-store, max-age=60")], {}, "no-store", id="§3 no-store"),
    pytest.param([("surrogate-control", "no-store"), ("cache-control", "max-age=60")], {}, "no-store",
                 id="Surrogate-Control no-store"),
    pytest.param([("cache-control", "max-age=60"), ("set-cookie", "a=1")], {}, "set-cookie",
                 id="Set-Cookie is never shared"),
    pytest.param([("cache-control", "max-age=60"), ("vary", "Accept, *")], {}, "vary-star", id="§4.1 Vary: *"),
    pytest.param([("cache-control", "max-age=60")], {"request": {"authorization": "x"}}, "authorization",
                 id="§3.5 Authorization needs permission"),
    pytest.param([("cache-control", "max-age=60")], {"status": 304}, "status",
                 id="§3 a 304 updates a stored response, it is never one"),
    pytest.param([("cache-control", "max-age=60")], {"status": 199}, "status", id="§3 only final statuses"),
    pytest.param([("cache-control", "max-age=60")], {"status": 600}, "status",
                 id="RFC 9110 §15 statuses beyond 599 are invalid"),
    pytest.param([("cache-control", "max-age=60, must-understand")], {"status": 599}, "must-understand",
                 id="§5.2.2.3 must-understand: only statuses the cache understands"),
    pytest.param([("cache-control", "max-age=60, must-understand")], {"status": 299}, "must-understand",
                 id="§5.2.2.3 must-understand, unknown 2xx"),
    pytest.param([("cache-control", "max-age=60")], {"status": 503, "store_server_errors": False},
                 "server-error", id="the switch that keeps 5xx out of the cache"),
    pytest.param([("last-modified", format_http_date(NOW - 1000))], {"status": 500, "heuristic_freshness": True},
                 "no-freshness", id="RFC 9110 §15.1 heuristics only for heuristically cacheable statuses"),
    pytest.param([], {}, "no-freshness", id="no explicit freshness, heuristics off, no rule"),
    pytest.param([("cache-control", "public")], {}, "no-freshness", id="public alone needs a heuristic"),
    pytest.param([("cache-control", "max-age=60"), ("vary", "accept")],
                 {"request": {"accept": "x" * 600}}, "vary-value-too-long", id="over-long Vary'd value"),
    pytest.param([("cache-control", "max-age=60"), ("content-length", "2000")], {"max_body_bytes": 1000},
                 "too-large", id="declared body over the limit"),
    pytest.param([("cache-control", "max-age=0")], {}, "no-freshness", id="stale on arrival, no validators"),
    pytest.param([], {"status": 302, "rule": ResponseRule(60)}, "no-freshness",
                 id="rules give lifetimes only to heuristically cacheable statuses"),
])
def test_not_storable(headers: list[tuple[str, str]], kwargs: dict[str, Any], expected: str) -> None:
    assert analyse(headers, **kwargs) == NotStorable(expected)


@pytest.mark.parametrize("status", [400, 303, 299, 500, 502, 503, 504, 599])
@pytest.mark.parametrize("freshness", ["max-age=60", "s-maxage=60"])
def test_every_final_status_with_explicit_freshness_is_stored(status: int, freshness: str) -> None:
    # RFC 9111 §3: a response with explicit freshness may be stored whatever its final status
    # (only 206 and 304, or must-understand, require the cache to understand the status).
    plan = analyse([("cache-control", freshness)], status=status)
    assert isinstance(plan, StorePlan) and plan.status == status
    assert plan.freshness_lifetime_seconds == 60


def test_must_understand_overrides_no_store_for_understood_statuses() -> None:
    # §5.2.2.3: "the cache SHOULD ignore the no-store directive if it understands and implements
    # the status code's caching requirements".
    plan = analyse([("cache-control", "max-age=60, no-store, must-understand")], status=404)
    assert isinstance(plan, StorePlan)
    assert analyse([("cache-control", "max-age=60, no-store, must-understand")], status=599) == \
        NotStorable("must-understand")
    assert analyse([("cache-control", "max-age=60, no-store")], status=404) == NotStorable("no-store")


def test_public_makes_any_status_heuristically_cacheable() -> None:
    # §5.2.2.9: "If a response with the public directive has no explicit freshness
    # information, it is heuristically cacheable".
    headers = [("cache-control", "public"), ("last-modified", format_http_date(NOW - 1000))]
    plan = analyse(headers, status=400, heuristic_freshness=True)
    assert isinstance(plan, StorePlan) and plan.freshness_lifetime_seconds == 100


@pytest.mark.parametrize("age_lines, expected", [
    pytest.param([("age", "7200, 0")], 7200, id="§5.1 a list-valued Age: the first member"),
    pytest.param([("age", "7200"), ("age", "0")], 7200, id="§5.1 a repeated Age: the first line"),
    pytest.param([("age", " 30 ")], 30, id="§5.1 whitespace around the value"),
    pytest.param([("age", "abc")], 0, id="§5.1 an invalid Age is ignored"),
    pytest.param([("age", "-5, 7")], 0, id="§5.1 an invalid first member is ignored, not skipped"),
])
def test_age_uses_the_first_member(age_lines: list[tuple[str, str]], expected: float) -> None:
    # The ETag keeps a response that is stale on arrival (Age 7200 > max-age) worth storing.
    plan = analyse([("cache-control", "max-age=3600"), ("etag", '"v1"'), *age_lines])
    assert isinstance(plan, StorePlan) and plan.corrected_initial_age_seconds == expected


@pytest.mark.parametrize("headers, request_headers", [
    pytest.param([("cache-control", "public, max-age=60")], {"authorization": "x"}, id="§3.5 public"),
    pytest.param([("cache-control", "s-maxage=60")], {"authorization": "x"}, id="§3.5 s-maxage"),
    pytest.param([("cache-control", "must-revalidate, max-age=60")], {"authorization": "x"}, id="§3.5 must-revalidate"),
    pytest.param([("cache-control", "max-age=60"), ("vary", "Accept")], {"accept": "a"}, id="§4.1 Vary"),
])
def test_storable(headers: list[tuple[str, str]], request_headers: dict[str, str]) -> None:
    assert isinstance(analyse(headers, request=request_headers), StorePlan)


def test_rules_and_heuristics() -> None:
    ruled = analyse([], rule=ResponseRule(300, 5, 7))
    assert isinstance(ruled, StorePlan) and ruled.freshness_lifetime_seconds == 300
    assert (ruled.stale_while_revalidate_seconds, ruled.stale_if_error_seconds) == (5, 7)
    explicit = analyse([("cache-control", "max-age=10")], rule=ResponseRule(300))
    assert isinstance(explicit, StorePlan) and explicit.freshness_lifetime_seconds == 10
    # §4.2.2 heuristic: a fraction of the time since Last-Modified.
    heuristic = analyse([("last-modified", format_http_date(NOW - 1000))], heuristic_freshness=True)
    assert isinstance(heuristic, StorePlan) and heuristic.freshness_lifetime_seconds == 100


def test_stored_headers_drop_what_a_shared_cache_must_not_keep() -> None:
    plan = analyse([
        ("cache-control", 'max-age=60, private="X-User", no-cache="X-Token"'),
        ("connection", "X-Hop"), ("x-hop", "1"), ("keep-alive", "5"), ("age", "3"),
        ("surrogate-control", "max-age=60"), ("x-user", "bob"), ("x-token", "t"), ("X-Kept", "yes"),
    ])
    assert isinstance(plan, StorePlan)
    names = [name for name, _ in plan.headers]
    # §5.2.2.7 private="x", §5.2.2.4 no-cache="x", §3.1 hop-by-hop, §5.1 Age recomputed.
    assert names == ["date", "cache-control", "x-kept"]


def test_stale_windows_and_revalidation_flags() -> None:
    both = analyse([("cache-control", "max-age=10, stale-while-revalidate=20, stale-if-error=30")])
    assert isinstance(both, StorePlan)
    assert (both.stale_while_revalidate_seconds, both.stale_if_error_seconds) == (20, 30)
    # §4.2.4: must-revalidate forbids serving stale.
    strict = analyse([("cache-control", "max-age=10, must-revalidate, stale-while-revalidate=20")])
    assert isinstance(strict, StorePlan) and strict.stale_while_revalidate_seconds == 0
    assert strict.must_revalidate
    # §5.2.2.10: s-maxage implies proxy-revalidate (no client max-stale) but explicit SWR stays.
    shared = analyse([("cache-control", "s-maxage=10, stale-while-revalidate=20")])
    assert isinstance(shared, StorePlan) and shared.must_revalidate
    assert shared.stale_while_revalidate_seconds == 20


def test_corrected_initial_age() -> None:
    # §4.2.3: max(apparent_age, age_value + response_delay).
    plan = analyse_response(200, [("cache-control", "max-age=60"), ("age", "10"), ("date", DATE)],
                            {}.get, now=NOW, request_time=NOW - 0.5, rule=None, settings=StoreSettings())
    assert isinstance(plan, StorePlan) and plan.corrected_initial_age_seconds == 10.5
    # An ETag keeps a response worth storing though its Date makes it stale on arrival.
    late = analyse_response(200, [("cache-control", "max-age=60"), ("etag", '"v1"'),
                                  ("date", format_http_date(NOW - 100))],
                            {}.get, now=NOW, request_time=NOW, rule=None, settings=StoreSettings())
    assert isinstance(late, StorePlan) and late.corrected_initial_age_seconds == 100


# --------------------------------------------------------------------------- request decisions

POLICY = CachePolicy(CacheConfig(), allowed_hosts=("*",))
HONOURING = CachePolicy(CacheConfig(honour_client_no_cache=True), allowed_hosts=("*",))


def view(method: str = "GET", **headers: str) -> RequestView:
    named = {name.replace("_", "-"): value for name, value in headers.items()}
    return RequestView(method, "http", "shop.test", "/p", "", named.get)


def entry(*, lifetime: float = 60, swr: float = 0, sie: float = 0, etag: bool = True,
          must_revalidate: bool = False, no_cache: bool = False, vary: tuple[str, ...] = (),
          secondary: str = "") -> CachedEntry:
    headers = (("date", DATE), ("last-modified", DATE), ("content-length", "4")) + (
        (("etag", '"v1"'),) if etag else ())
    return CachedEntry(status=200, headers=headers, body=b"body", request_time=NOW,
                       response_time=NOW, corrected_initial_age_seconds=0.0,
                       freshness_lifetime_seconds=lifetime, stale_while_revalidate_seconds=swr,
                       stale_if_error_seconds=sie, requires_revalidation=no_cache,
                       must_revalidate=must_revalidate, vary=vary, secondary_key=secondary)


@pytest.mark.parametrize("stored, age, request_view, policy, expected", [
    pytest.param(entry(), 30, view(), POLICY, ("serve", "hit"), id="§4.2 fresh"),
    pytest.param(entry(), 90, view(), POLICY, ("forward", "stale"), id="§4.3 stale: validate"),
    pytest.param(entry(swr=60), 90, view(), POLICY, ("serve", "stale"), id="RFC 5861 §3 stale-while-revalidate"),
    pytest.param(entry(swr=10), 90, view(), POLICY, ("forward", "stale"), id="RFC 5861 §3 past the window"),
    pytest.param(entry(), 90, view(cache_control="max-stale=60"), POLICY, ("serve", "stale"),
                 id="§5.2.1.2 max-stale"),
    pytest.param(entry(must_revalidate=True), 90, view(cache_control="max-stale"), POLICY,
                 ("forward", "stale"), id="§5.2.2.2 must-revalidate beats max-stale"),
    pytest.param(entry(), 30, view(cache_control="max-age=10"), POLICY, ("forward", "request"),
                 id="§5.2.1.1 request max-age"),
    pytest.param(entry(), 30, view(cache_control="min-fresh=40"), POLICY, ("forward", "request"),
                 id="§5.2.1.3 min-fresh"),
    pytest.param(entry(no_cache=True), 0, view(), POLICY, ("forward", "stale"),
                 id="§5.2.2.4 response no-cache: always validate"),
    pytest.param(entry(), 30, view(cache_control="no-cache"), POLICY, ("serve", "hit"),
                 id="§5.2.1.4 client no-cache ignored by default"),
    pytest.param(entry(), 30, view(cache_control="no-cache"), HONOURING, ("forward", "request"),
                 id="§5.2.1.4 client no-cache honoured when configured"),
    pytest.param(entry(), 30, view(if_match='"v1"'), POLICY, ("forward", "request"),
                 id="§4.3.2 origin-only preconditions go to the origin"),
    pytest.param(entry(), 90, view(cache_control="only-if-cached"), POLICY, ("refuse", 504),
                 id="§5.2.1.7 only-if-cached, nothing usable"),
    pytest.param(entry(vary=("accept",), secondary="accept=a"), 0, view(accept="b"), POLICY,
                 ("forward", "vary-miss"), id="§4.1 never a variant for other header values"),
])
def test_decide_request(stored: CachedEntry, age: float, request_view: RequestView, policy: CachePolicy,
                        expected: tuple[str, Any]) -> None:
    decision = policy.decide_request(request_view, (stored, "memory"), now=NOW + age)
    match decision:
        case Serve():
            assert ("serve", decision.outcome) == expected
            assert decision.body == b"body"
            assert ("age", str(int(age))) in decision.headers
        case Forward():
            assert ("forward", decision.fwd) == expected
        case Refuse():
            assert ("refuse", decision.status) == expected


def test_forward_carries_validators_and_request_no_store() -> None:
    stale = POLICY.decide_request(view(if_none_match='"client"'), (entry(), "memory"), now=NOW + 90)
    assert isinstance(stale, Forward) and stale.validating
    # §4.3.1: the stored validators replace the client's conditionals.
    assert stale.request_headers == (("if-none-match", '"v1"'), ("if-modified-since", DATE))
    miss = POLICY.decide_request(view(cache_control="no-store"), None, now=NOW)
    assert isinstance(miss, Forward) and not miss.may_store  # §5.2.1.5
    swr = POLICY.decide_request(view(), (entry(swr=60), "memory"), now=NOW + 90)
    assert isinstance(swr, Serve) and swr.refresh is not None and swr.refresh.validating


@given(method=st.sampled_from(["GET", "HEAD"]), authorization=st.sampled_from([None, "Basic eA=="]),
       coalesce=st.booleans(), repeat=st.integers(1, 3))
def test_a_plain_miss_is_decided_as_decide_request_decides_it(method: str, authorization: str | None,
                                                            coalesce: bool, repeat: int) -> None:
    """The memoised answer for a request with no special header and nothing stored is the one
    decide_request gives it, for every method, credentials and config, however often asked."""
    policy = CachePolicy(CacheConfig(coalesce=coalesce), allowed_hosts=("*",))
    headers = {} if authorization is None else {"authorization": authorization}
    plain = RequestView(method, "http", "shop.test", "/p", "", headers.get, special=False)
    expected = policy.decide_request(plain, None, now=NOW)
    for _ in range(repeat):
        assert policy.decide_plain_miss(plain) == expected
    assert isinstance(expected, Forward) and expected.may_store == (method == "GET")
    assert expected.coalesce == (coalesce and method == "GET" and authorization is None)


def test_collapsed_waiter_takes_the_leaders_fresh_answer() -> None:
    decision = POLICY.decide_request(view(), (entry(lifetime=0), "memory"), now=NOW + 1,
                                     collapsed_since=NOW - 1)
    assert isinstance(decision, Serve)
    assert "collapsed" in dict(decision.headers)["cache-status"]


# --------------------------------------------------------------------------- response decisions


def test_304_freshens_and_updates_headers() -> None:
    forward = POLICY.decide_request(view(), (entry(), "memory"), now=NOW + 90)
    assert isinstance(forward, Forward)
    decision = POLICY.decide_response(view(), forward, 304,
                                      [("cache-control", "max-age=120"), ("x-new", "1")],
                                      now=NOW + 90, request_time=NOW + 90, rule=None)
    # §4.3.4: the stored response is updated with the 304's fields and is fresh again.
    assert isinstance(decision, Freshen) and decision.entry is not None
    assert decision.entry.freshness_lifetime_seconds == 120
    assert ("x-new", "1") in decision.entry.headers and decision.body == b"body"


def test_5xx_within_stale_if_error_serves_stale() -> None:
    stored = entry(lifetime=60, sie=100)
    forward = POLICY.decide_request(view(), (stored, "memory"), now=NOW + 90)
    assert isinstance(forward, Forward)
    # RFC 5861 §4: stale-if-error within the window.
    stale = POLICY.decide_response(view(), forward, 503, [], now=NOW + 90, request_time=NOW + 90, rule=None)
    assert isinstance(stale, ServeStale) and "fwd-status=503" in dict(stale.headers)["cache-status"]
    late = POLICY.decide_response(view(), forward, 503, [], now=NOW + 200, request_time=NOW + 200, rule=None)
    assert isinstance(late, PassThrough)


def test_head_response_updates_or_drops_the_stored_get() -> None:
    forward = POLICY.decide_request(view("HEAD"), (entry(), "memory"), now=NOW + 90)
    assert isinstance(forward, Forward)
    # §4.3.5: a HEAD with the same validators freshens; different ones mark it unusable.
    same = POLICY.decide_response(view("HEAD"), forward, 200, [("etag", '"v1"'), ("cache-control", "max-age=30")],
                                  now=NOW + 90, request_time=NOW + 90, rule=None)
    assert isinstance(same, Freshen) and same.body == b""
    changed = POLICY.decide_response(view("HEAD"), forward, 200, [("etag", '"v2"')],
                                     now=NOW + 90, request_time=NOW + 90, rule=None)
    assert isinstance(changed, PassThrough) and changed.delete_stored


def test_storable_responses_are_buffered_others_passed_through() -> None:
    forward = POLICY.decide_request(view(), None, now=NOW)
    assert isinstance(forward, Forward)
    stored = POLICY.decide_response(view(), forward, 200, [("Cache-Control", "max-age=5"), ("Surrogate-Control", "x")],
                                    now=NOW, request_time=NOW, rule=None)
    assert isinstance(stored, Buffer)
    assert all(name.lower() != "surrogate-control" for name, _ in stored.pass_headers)
    private = POLICY.decide_response(view(), forward, 200, [("cache-control", "private")],
                                     now=NOW, request_time=NOW, rule=None)
    assert isinstance(private, PassThrough)
    assert dict(private.headers)["cache-status"] == "scalekit; fwd=uri-miss"


@pytest.mark.parametrize("method, status, headers, expected", [
    pytest.param("POST", 201, [("location", "/p/9")], ["http://shop.test/p", "http://shop.test/p/9"],
                 id="§4.4 target and Location"),
    pytest.param("PUT", 204, [("content-location", "http://other.test/p")], ["http://shop.test/p"],
                 id="§4.4 other hosts are not invalidated"),
    pytest.param("DELETE", 500, [], [], id="§4.4 only non-error statuses"),
    pytest.param("GET", 200, [], [], id="safe methods invalidate nothing"),
    pytest.param("PURGE", 200, [], ["http://shop.test/p"], id="§4.4 methods of unknown safety"),
])
def test_invalidated_keys(method: str, status: int, headers: list[tuple[str, str]], expected: list[str]) -> None:
    assert list(POLICY.invalidated_keys(view(method), status, headers)) == expected


@pytest.mark.parametrize("headers, status, body", [
    pytest.param({"if_none_match": '"v1"'}, 304, b"", id="RFC 9110 §13.1.2 If-None-Match"),
    pytest.param({"if_none_match": 'W/"v1"'}, 304, b"", id="§13.1.2 weak comparison"),
    pytest.param({"if_modified_since": DATE}, 304, b"", id="§13.1.3 If-Modified-Since"),
    pytest.param({"range": "bytes=1-2"}, 206, b"od", id="§14.2 Range"),
    pytest.param({"range": "bytes=1-2", "if_range": '"v0"'}, 200, b"body", id="§13.1.5 If-Range mismatch"),
    pytest.param({"range": "bytes=9-"}, 416, b"", id="§15.5.17 unsatisfiable"),
])
def test_answers_from_a_fresh_entry(headers: dict[str, str], status: int, body: bytes) -> None:
    decision = POLICY.decide_request(view(**headers), (entry(), "memory"), now=NOW + 1)
    assert isinstance(decision, Serve)
    assert (decision.status, decision.body) == (status, body)


# --------------------------------------------------------------------------- origin unreachable

UNREACHABLE = [("content-type", "text/plain"), ("cache-control", "no-store"),
               ("proxy-status", "scalekit; error=connection_refused")]


@pytest.mark.parametrize("stored, status, headers, served", [
    pytest.param(entry(), 502, UNREACHABLE, True, id="§4.2.4 disconnected: stale without stale-if-error"),
    pytest.param(entry(), 504, [("proxy-status", 'edge, "origin"; error=connection_read_timeout')], True,
                 id="RFC 9209 the last hop timed out reading"),
    pytest.param(entry(must_revalidate=True), 502, UNREACHABLE, False,
                 id="§4.2.4 must-revalidate (also proxy-revalidate, s-maxage) forbids it"),
    pytest.param(entry(no_cache=True), 502, UNREACHABLE, False, id="§4.2.4 no-cache forbids it"),
    pytest.param(entry(), 502, [("proxy-status", "scalekit; received-status=502")], False,
                 id="a 502 the origin sent is an answer, not a disconnection"),
    pytest.param(entry(), 502, [], False, id="a plain 502: stale-if-error only"),
    pytest.param(entry(), 502, [("proxy-status", "scalekit; error=")], False, id="an invalid Proxy-Status"),
    pytest.param(entry(), 200, [("proxy-status", "scalekit; error=connection_refused")], False,
                 id="only a gateway error status"),
])
def test_stale_when_the_origin_cannot_be_reached(stored: CachedEntry, status: int,
                                                 headers: list[tuple[str, str]], served: bool) -> None:
    forward = POLICY.decide_request(view(), (stored, "memory"), now=NOW + 3600)
    assert isinstance(forward, Forward)
    decision = POLICY.decide_response(view(), forward, status, headers, now=NOW + 3600,
                                      request_time=NOW + 3600, rule=None)
    if served:
        assert isinstance(decision, ServeStale) and decision.body == b"body"
        cache_status = dict(decision.headers)["cache-status"]
        assert "fwd=stale" in cache_status and "detail=origin-unreachable" in cache_status
    else:
        assert not isinstance(decision, ServeStale)


def test_an_exception_in_the_app_is_a_disconnection() -> None:
    # §4.2.4: an origin that raised could not answer; any stale entry nothing forbids is served.
    forward = POLICY.decide_request(view(), (entry(), "memory"), now=NOW + 3600)
    assert isinstance(forward, Forward)
    stale = POLICY.stale_fallback(forward, view(), now=NOW + 3600, origin_status=None)
    assert stale is not None and "detail=origin-unreachable" in dict(stale.headers)["cache-status"]
    strict = POLICY.decide_request(view(), (entry(must_revalidate=True), "memory"), now=NOW + 3600)
    assert isinstance(strict, Forward)
    assert POLICY.stale_fallback(strict, view(), now=NOW + 3600, origin_status=None) is None
