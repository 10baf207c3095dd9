"""Targeted cache control (RFC 9213): ``cache.targeted_cache_control`` names the fields (in
precedence order) whose directives replace Cache-Control and Expires for this cache."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scalekit.cache.config import CacheConfig
from scalekit.cache.fields import parse_targeted
from scalekit.cache.policy import Buffer, CachePolicy, Forward, RequestView
from scalekit.cache.storable import NotStorable, StorePlan, StoreSettings, analyse_response
from scalekit.errors import ConfigError
from scalekit.headers import CacheControl, format_http_date
from tests.cache.harness import Harness

Make = Callable[..., Harness]
NOW = 1_000_000.0
CDN = ("cdn-cache-control",)


def analyse(headers: list[tuple[str, str]], targets: tuple[str, ...] = CDN, **settings: Any) -> StorePlan | NotStorable:
    return analyse_response(200, [("date", format_http_date(NOW)), *headers], {}.get, now=NOW,
                            request_time=NOW, rule=None,
                            settings=StoreSettings(targeted_fields=targets, **settings))


def lifetime(plan: StorePlan | NotStorable) -> float | str:
    return plan.freshness_lifetime_seconds if isinstance(plan, StorePlan) else plan.reason


@pytest.mark.parametrize("headers, targets, expected", [
    pytest.param([("cache-control", "no-store"), ("cdn-cache-control", "max-age=600")], CDN, 600,
                 id="§2.1 the targeted field replaces Cache-Control"),
    pytest.param([("cache-control", "max-age=60, s-maxage=120"), ("CDN-Cache-Control", "max-age=600")], CDN, 600,
                 id="§3.1 example: 600 s for a CDN, 120 for other shared caches"),
    pytest.param([("cache-control", "no-store"), ("cdn-cache-control", "none")], CDN, "no-freshness",
                 id="§3.1 'none': stored by CDNs only, here without a lifetime"),
    pytest.param([("expires", format_http_date(NOW + 60)), ("cdn-cache-control", "public")], CDN, "no-freshness",
                 id="§2.1 Expires is ignored too"),
    pytest.param([("cache-control", "max-age=60"), ("cdn-cache-control", "max-age=60,,")], CDN, 60,
                 id="§2.1 an invalid targeted field is ignored whole"),
    pytest.param([("cache-control", "max-age=60"), ("cdn-cache-control", "")], CDN, 60,
                 id="§2.1 an empty targeted field is ignored"),
    pytest.param([("cache-control", "max-age=60"), ("cdn-cache-control", "Max-Age=600")], CDN, 60,
                 id="RFC 8941 keys are lower case: a parsing error"),
    pytest.param([("cache-control", "max-age=60"), ("cdn-cache-control", "max-age=1.5")], CDN, "no-freshness",
                 id="§2.1 a decimal max-age is not consumed (the field stays valid)"),
    pytest.param([("example-cache-control", "max-age=5"), ("cdn-cache-control", "max-age=600")],
                 ("example-cache-control", "cdn-cache-control"), 5, id="§2.2 the first in target-list order"),
    pytest.param([("example-cache-control", "max-age=?"), ("cdn-cache-control", "max-age=600")],
                 ("example-cache-control", "cdn-cache-control"), 600, id="§2.2 the first valid one"),
    pytest.param([("cache-control", "max-age=60"), ("cdn-cache-control", "max-age=600")], (), 60,
                 id="§2.2 fields not on the target list change nothing"),
    pytest.param([("cdn-cache-control", "max-age=600, private")], CDN, "private", id="§2.2 private"),
    pytest.param([("cdn-cache-control", "max-age=600, no-store")], CDN, "no-store", id="§2.2 no-store"),
    pytest.param([("cdn-cache-control", 'max-age=600, no-store=?0')], CDN, 600, id="a false boolean is absent"),
])
def test_targeted_fields(headers: list[tuple[str, str]], targets: tuple[str, ...], expected: float | str) -> None:
    assert lifetime(analyse(headers, targets)) == expected


def test_directives_keep_their_cache_control_semantics() -> None:
    plan = analyse([("cache-control", "max-age=5"), ("etag", '"e"'),
                    ("cdn-cache-control", 'max-age=60, must-revalidate, stale-if-error=30, private="x-user"'),
                    ("x-user", "alice")])
    assert isinstance(plan, StorePlan) and plan.must_revalidate
    assert plan.stale_if_error_seconds == 0  # §4.2.4 must-revalidate forbids serving stale
    assert all(name != "x-user" for name, _ in plan.headers)
    revalidate = analyse([("cdn-cache-control", "no-cache"), ("etag", '"e"')])
    assert isinstance(revalidate, StorePlan) and revalidate.requires_revalidation


def test_the_field_reaches_downstream_unless_stripped() -> None:
    for strip in (False, True):
        config = CacheConfig(targeted_cache_control=("CDN-Cache-Control",), strip_targeted_cache_control=strip)
        policy = CachePolicy(config, allowed_hosts=("*",))
        view = RequestView("GET", "http", "shop.test", "/p", "", {}.get)
        forward = policy.decide_request(view, None, now=NOW)
        assert isinstance(forward, Forward)
        decision = policy.decide_response(view, forward, 200, [("CDN-Cache-Control", "max-age=60")],
                                          now=NOW, request_time=NOW, rule=None)
        assert isinstance(decision, Buffer)
        kept = [name.lower() for name, _ in decision.plan.headers]
        passed = [name.lower() for name, _ in decision.pass_headers]
        assert ("cdn-cache-control" in kept) is not strip and ("cdn-cache-control" in passed) is not strip


def test_config() -> None:
    assert CacheConfig().targeted_cache_control is None  # in-app: off
    with pytest.raises(ConfigError, match="targeted_cache_control"):
        CacheConfig(targeted_cache_control=("Cache-Control",))
    with pytest.raises(ConfigError, match="targeted_cache_control"):
        CacheConfig(targeted_cache_control=("not a name",))


@given(st.text(max_size=60))
def test_parse_targeted_never_raises(value: str) -> None:
    assert parse_targeted(value) is None or isinstance(parse_targeted(value), CacheControl)


def test_in_process(make: Make, path: str) -> None:
    h = make(targeted_cache_control=["CDN-Cache-Control"])
    url = f"{path}?cc=no-store&cdn=max-age%3D60"
    first = h.get(url)
    assert "stored; ttl=60" in first.cache_status and first.headers["cdn-cache-control"] == "max-age=60"
    assert h.get(url).hit
    off = make()
    for _ in range(2):
        assert not off.get(url).hit
