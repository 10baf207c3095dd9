"""Web cache deception: a rule that makes ``*.css`` storable must not store a private page a
credentialed request reached through a confusable path (``/account/settings-x.css``).

Freshness the response did not state itself (a rule, ``cache_response()``, a heuristic) never
stores the answer to a request that carried Cookie or Authorization, unless the response says
``public`` / ``s-maxage`` or the rule opts in with ``public = true``. The property at the end
holds this, and the never-stored list, whatever the rules say.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scalekit.cache.config import CacheRule
from scalekit.cache.rules import ResponseRule
from scalekit.cache.storable import NotStorable, StorePlan, StoreSettings, analyse_response
from scalekit.headers import format_http_date, parse_cache_control
from tests.cache.harness import Harness

Make = Callable[..., Harness]
NOW = 1_000_000.0
DATE = format_http_date(NOW)
CSS_RULE = ResponseRule(300)


def analyse(headers: list[tuple[str, str]], request: dict[str, str], rule: ResponseRule | None,
            **settings: Any) -> StorePlan | NotStorable:
    return analyse_response(200, [("date", DATE), *headers], request.get, now=NOW, request_time=NOW,
                            rule=rule, settings=StoreSettings(**settings),
                            authorization="authorization" in request)


@pytest.mark.parametrize("headers, request_headers, rule, expected", [
    pytest.param([], {"cookie": "session=alice"}, CSS_RULE, "credentialed-request",
                 id="a rule's lifetime, a request with Cookie"),
    pytest.param([("cache-control", "must-revalidate")], {"authorization": "Bearer a"}, CSS_RULE,
                 "credentialed-request", id="a rule's lifetime, Authorization (RFC 9111 §3.5 must-revalidate)"),
    pytest.param([("last-modified", format_http_date(NOW - 1000))], {"cookie": "s=1"}, None,
                 "credentialed-request", id="a heuristic lifetime, a request with Cookie"),
    pytest.param([("cache-control", "private")], {"cookie": "s=1"}, ResponseRule(300, public=True),
                 "private", id="public=true never overrides private"),
    pytest.param([("set-cookie", "s=2")], {}, ResponseRule(300, public=True), "set-cookie",
                 id="public=true never stores Set-Cookie"),
    pytest.param([("cache-control", "no-store")], {}, ResponseRule(300, public=True), "no-store",
                 id="public=true never overrides no-store"),
])
def test_not_stored(headers: list[tuple[str, str]], request_headers: dict[str, str],
                    rule: ResponseRule | None, expected: str) -> None:
    assert analyse(headers, request_headers, rule, heuristic_freshness=True) == NotStorable(expected)


@pytest.mark.parametrize("headers, request_headers, rule", [
    pytest.param([], {}, CSS_RULE, id="a rule's lifetime, no credentials"),
    pytest.param([], {"cookie": ""}, CSS_RULE, id="an empty Cookie carries nothing"),
    pytest.param([("cache-control", "public")], {"cookie": "s=1"}, CSS_RULE, id="the app said public"),
    pytest.param([("cache-control", "s-maxage=60")], {"authorization": "Bearer a"}, None, id="the app said s-maxage"),
    pytest.param([("cache-control", "max-age=60")], {"cookie": "s=1"}, None,
                 id="the app stated freshness itself"),
    pytest.param([], {"cookie": "s=1", "authorization": "Bearer a"}, ResponseRule(300, public=True),
                 id="the rule opted in with public=true"),
])
def test_stored(headers: list[tuple[str, str]], request_headers: dict[str, str],
                rule: ResponseRule | None) -> None:
    assert isinstance(analyse(headers, request_headers, rule), StorePlan)


def test_rule_option_is_validated() -> None:
    from scalekit.config import load_config
    from scalekit.errors import ConfigError

    rules = load_config({"cache": {"rules": [{"path": "*.css", "public": True}]}}, environ={},
                        cwd="/nonexistent").cache.rules
    assert rules == (CacheRule(path="*.css", public=True),)
    with pytest.raises(ConfigError, match="public"):
        load_config({"cache": {"rules": [{"path": "*.css", "public": "perhaps"}]}}, environ={},
                    cwd="/nonexistent")


# ------------------------------------------------------------------------- the attack end to end


def test_a_confusable_path_with_a_session_cookie_is_not_stored(make: Make) -> None:
    h = make(rules=[{"path": "*.css"}])
    alice = h.get("/account/settings-x.css", cookie="session=alice")
    assert alice.status == 200 and "stored" not in alice.cache_status
    stranger = h.get("/account/settings-x.css")
    assert not stranger.hit and stranger.body != alice.body  # the origin answered the stranger
    assert h.calls("/account/settings-x.css") == 2
    # A stylesheet fetched without credentials is still cached under the rule.
    h.get("/static/site.css")
    assert h.get("/static/site.css").hit


def test_a_public_rule_stores_answers_to_credentialed_requests(make: Make) -> None:
    h = make(rules=[{"path": "/static/*", "public": True}])
    h.get("/static/app.css", cookie="analytics=1")
    assert h.get("/static/app.css").hit


def test_cache_response_public_opts_in(make: Make, path: str) -> None:
    # The origin app calls cache_response(TTL) for ``rule=TTL``; the Cookie alone keeps it out.
    h = make()
    h.get(f"{path}?rule=60", cookie="session=alice")
    assert not h.get(f"{path}?rule=60").hit


# ------------------------------------------------------------------------- the property

DIRECTIVES = st.lists(st.sampled_from([
    "public", "private", "no-store", "no-cache", "max-age=60", "s-maxage=60", "must-revalidate",
    'private="x-user"', "must-understand", "proxy-revalidate",
]), max_size=4).map(", ".join)
EXTRA = st.lists(st.sampled_from([
    ("set-cookie", "s=1"), ("expires", format_http_date(NOW + 60)), ("etag", '"e"'),
    ("last-modified", format_http_date(NOW - 1000)), ("vary", "accept"), ("surrogate-control", "max-age=30"),
]), max_size=3, unique=True)
REQUESTS = st.fixed_dictionaries({}, optional={
    "cookie": st.sampled_from(["session=alice", "a=1; b=2"]),
    "authorization": st.sampled_from(["Bearer a", "Basic eDp5"]),
    "accept": st.just("text/css"),
})
RULES = st.none() | st.builds(ResponseRule, st.floats(0, 1e6), st.floats(0, 100), st.floats(0, 100),
                              public=st.booleans())


@settings(max_examples=300, deadline=None)
@given(cache_control=DIRECTIVES, extra=EXTRA, request=REQUESTS, rule=RULES, heuristic=st.booleans(),
       status=st.sampled_from([200, 203, 301, 404, 500]))
def test_nothing_private_is_ever_stored(cache_control: str, extra: list[tuple[str, str]],
                                        request: dict[str, str], rule: ResponseRule | None,
                                        heuristic: bool, status: int) -> None:
    headers = [("cache-control", cache_control), *extra] if cache_control else list(extra)
    plan = analyse_response(status, [("date", DATE), *headers], request.get, now=NOW, request_time=NOW,
                            rule=rule, settings=StoreSettings(heuristic_freshness=heuristic),
                            authorization="authorization" in request)
    if not isinstance(plan, StorePlan):
        return
    names = {name for name, _ in headers}
    directives = parse_cache_control(cache_control)
    # Never, whatever a rule says: Set-Cookie, private, no-store (but under must-understand).
    assert "set-cookie" not in names
    assert not directives.private
    assert not directives.no_store or directives.must_understand
    assert all(name != "x-user" for name, _ in plan.headers)
    said_shared = directives.public or directives.s_maxage is not None
    opted_in = rule is not None and rule.public
    if "authorization" in request:  # RFC 9111 §3.5, or the operator's rule standing in for public
        assert said_shared or directives.must_revalidate or opted_in
    if request.get("cookie") or "authorization" in request:
        stated = (directives.max_age is not None or directives.s_maxage is not None
                  or directives.no_cache or "expires" in names or "surrogate-control" in names)
        assert said_shared or opted_in or stated
