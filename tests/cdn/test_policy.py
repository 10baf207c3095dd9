"""Stamping decisions, pure: each preset, rule precedence, who wins, safety, Vary, ETag choice."""

from __future__ import annotations

from typing import Any

import pytest

from scalekit.cdn.config import CDNConfig, PolicyConfig, RuleConfig
from scalekit.cdn.policy import Stamper, compile_path
from scalekit.errors import ConfigError

P = pytest.param
HTML = [("content-type", "text/html; charset=utf-8"), ("content-length", "10")]


def stamp(config: CDNConfig, *, method: str = "GET", path: str = "/x", status: int = 200,
          headers: list[tuple[str, str]] | None = None, authorization: bool = False,
          tags: tuple[str, ...] = ()) -> dict[str, str]:
    outcome = Stamper(config).stamp(method, path, authorization, status,
                                    list(HTML if headers is None else headers), tags)
    merged: dict[str, str] = {}
    for name, value in outcome.headers:
        merged[name] = f"{merged[name]}, {value}" if name in merged else value
    return merged


def rules(*items: RuleConfig, **config: Any) -> CDNConfig:
    return CDNConfig(rules=items, **config)


@pytest.mark.parametrize("preset, cache_control, cdn_cache_control", [
    P("immutable-asset", "public, max-age=31536000, immutable", None, id="immutable-asset"),
    P("page", "public, max-age=0, s-maxage=60",
      "max-age=60, stale-while-revalidate=30, stale-if-error=300", id="page"),
    P("api", "public, max-age=0, s-maxage=10",
      "max-age=10, stale-while-revalidate=10, stale-if-error=60", id="api"),
    P("private", "private, no-cache", None, id="private"),
    P("no-store", "no-store", None, id="no-store"),
])
def test_each_preset(preset: str, cache_control: str, cdn_cache_control: str | None) -> None:
    headers = stamp(rules(RuleConfig(path="/**", policy=preset)))
    assert headers["cache-control"] == cache_control
    assert headers.get("cdn-cache-control") == cdn_cache_control
    assert "surrogate-control" not in headers


@pytest.mark.parametrize("preset, surrogate_control", [
    P("immutable-asset", "max-age=31536000", id="immutable-asset"),
    P("page", "max-age=60, stale-while-revalidate=30, stale-if-error=300", id="page"),
    P("private", "no-store", id="private: CDN must not store"),
    P("no-store", "no-store", id="no-store"),
])
def test_surrogate_control_when_configured(preset: str, surrogate_control: str) -> None:
    headers = stamp(rules(RuleConfig(path="/**", policy=preset), surrogate_control=True))
    assert headers["surrogate-control"] == surrogate_control


def test_cdn_cache_control_can_be_switched_off() -> None:
    headers = stamp(rules(RuleConfig(path="/**", policy="page"), cdn_cache_control=False))
    assert "cdn-cache-control" not in headers
    assert headers["cache-control"] == "public, max-age=0, s-maxage=60"


def test_stale_directives_reach_browsers_only_with_browser_freshness() -> None:
    policy = PolicyConfig(max_age_seconds=30, stale_while_revalidate_seconds=15)
    headers = stamp(rules(RuleConfig(path="/**", policy=policy)))
    assert headers["cache-control"] == "max-age=30, stale-while-revalidate=15"


@pytest.mark.parametrize("policy, expected", [
    P(PolicyConfig(no_store=True, max_age_seconds=60, public=True), "no-store", id="no-store wins"),
    P(PolicyConfig(private=True, shared_max_age_seconds=60, max_age_seconds=5), "private, max-age=5",
      id="private drops shared freshness"),
])
def test_contradictory_policies_resolve_to_the_safer_side(policy: PolicyConfig, expected: str) -> None:
    headers = stamp(rules(RuleConfig(path="/**", policy=policy)))
    assert headers["cache-control"] == expected
    assert "cdn-cache-control" not in headers


# --------------------------------------------------------------------------- rule precedence

ORDERED = rules(
    RuleConfig(path="/static/**", policy="immutable-asset"),
    RuleConfig(path="/api/**", policy="no-store", methods=("POST",)),
    RuleConfig(path="/api/**", policy="api", content_types=("application/json",)),
    RuleConfig(path="/api/**", policy="private"),
    RuleConfig(path="re:^/blog/[0-9]+$", policy="page"),
    RuleConfig(path="/errors/*", policy="page", statuses=(404,)),
    RuleConfig(path="/**", policy="private", content_types=("image/*",)),
)
JSON = [("content-type", "application/json")]


@pytest.mark.parametrize("method, path, status, headers, expected", [
    P("GET", "/static/app.1234.css", 200, HTML, "public, max-age=31536000, immutable",
      id="first matching rule wins"),
    P("GET", "/static/deep/er/a.js", 200, HTML, "public, max-age=31536000, immutable", id="** crosses /"),
    P("POST", "/api/orders", 200, JSON, "no-store", id="method-specific rule"),
    P("GET", "/api/orders", 200, JSON, "public, max-age=0, s-maxage=10", id="content type matches"),
    P("GET", "/api/orders", 200, HTML, "private, no-cache", id="content type differs: next rule"),
    P("HEAD", "/api/orders", 200, JSON, "public, max-age=0, s-maxage=10", id="empty methods: GET and HEAD"),
    P("GET", "/blog/12", 200, HTML, "public, max-age=0, s-maxage=60", id="regex rule"),
    P("GET", "/blog/12/comments", 200, HTML, None, id="regex anchored: no rule"),
    P("GET", "/static/missing.css", 404, HTML, None, id="default statuses: 2xx/3xx only"),
    P("GET", "/static/moved.css", 301, HTML, "public, max-age=31536000, immutable", id="3xx matches"),
    P("GET", "/errors/x", 404, HTML, "public, max-age=0, s-maxage=60", id="explicit status"),
    P("GET", "/errors/x", 200, HTML, None, id="explicit status excludes others"),
    P("GET", "/errors/x/y", 404, HTML, None, id="* stays within a segment"),
    P("GET", "/img/a.png", 200, [("content-type", "image/png")], "private, no-cache", id="type/* wildcard"),
    P("DELETE", "/static/a.css", 200, HTML, None, id="unsafe method not listed: no rule"),
])
def test_rule_precedence(method: str, path: str, status: int, headers: list[tuple[str, str]],
                         expected: str | None) -> None:
    assert stamp(ORDERED, method=method, path=path, status=status, headers=headers).get("cache-control") == expected


def test_glob_compilation() -> None:
    assert compile_path("/a/*.css").match("/a/b.css")
    assert not compile_path("/a/*.css").match("/a/b/c.css")
    assert compile_path("/a/?.css").match("/a/b.css")
    assert not compile_path("/a.css").match("/aXcss")  # dots are literal


def test_app_cache_control_wins_unless_override() -> None:
    app_headers = HTML + [("cache-control", "max-age=5")]
    keep = stamp(rules(RuleConfig(path="/**", policy="page")), headers=app_headers)
    assert keep["cache-control"] == "max-age=5" and "cdn-cache-control" not in keep
    forced = stamp(rules(RuleConfig(path="/**", policy="page", override=True)), headers=app_headers)
    assert forced["cache-control"] == "public, max-age=0, s-maxage=60"


@pytest.mark.parametrize("field", ["cache-control", "cdn-cache-control", "surrogate-control", "expires"])
def test_any_app_caching_field_means_the_app_decides(field: str) -> None:
    value = "Thu, 01 Jan 1970 00:00:00 GMT" if field == "expires" else "private"
    headers = stamp(rules(RuleConfig(path="/**", policy="page")), headers=HTML + [(field, value)])
    # A rule never adds a CDN lifetime beside the app's own statement (the safer side).
    assert headers[field] == value
    assert "s-maxage" not in headers.get("cache-control", "")
    assert ("cdn-cache-control" in headers) == (field == "cdn-cache-control")


def test_custom_presets_and_default_policy() -> None:
    config = CDNConfig(presets={"page": PolicyConfig(max_age_seconds=0, shared_max_age_seconds=5),
                                "feed": PolicyConfig(max_age_seconds=120)},
                       rules=(RuleConfig(path="/feed", policy="feed"),), default_policy="page")
    assert stamp(config, path="/feed")["cache-control"] == "max-age=120"
    assert stamp(config, path="/other")["cache-control"] == "public, max-age=0, s-maxage=5"
    assert "cache-control" not in stamp(config, path="/other", status=404)
    assert "cache-control" not in stamp(config, path="/other", method="POST")


def test_config_rejects_unknown_presets_and_bad_patterns() -> None:
    with pytest.raises(ConfigError, match="rules\\[0\\].policy"):
        CDNConfig(rules=(RuleConfig(policy="pgae"),))
    with pytest.raises(ConfigError, match="regular expression"):
        RuleConfig(path="re:(")
    with pytest.raises(ConfigError, match="path"):
        RuleConfig(path="static/**")
    with pytest.raises(ConfigError, match="default_policy"):
        CDNConfig(default_policy="nope")


def test_rules_load_from_toml_style_config() -> None:
    from scalekit.config import load_config

    config = load_config({"cdn": {"rules": [
        {"path": "/static/**", "policy": "immutable-asset"},
        {"path": "/feed", "policy": {"max_age_seconds": 30, "public": True}, "override": True},
    ], "surrogate_keys": "cloudflare"}}, environ={}, cwd="/nonexistent")
    assert config.cdn.rules[1].policy == PolicyConfig(max_age_seconds=30, public=True)
    assert stamp(config.cdn, path="/feed")["cache-control"] == "public, max-age=30"


# --------------------------------------------------------------------------- safety

COOKIE = HTML + [("set-cookie", "session=abc; HttpOnly")]


@pytest.mark.parametrize("app_headers, authorization, expected", [
    P(COOKIE, False, "private, max-age=0", id="Set-Cookie: rule made private"),
    P(HTML, True, "private, max-age=0", id="Authorization: rule made private"),
])
def test_credentials_are_never_stamped_shared(app_headers: list[tuple[str, str]], authorization: bool,
                                              expected: str) -> None:
    headers = stamp(rules(RuleConfig(path="/**", policy="page")), headers=app_headers,
                    authorization=authorization)
    assert headers["cache-control"] == expected
    assert "cdn-cache-control" not in headers


def test_rule_may_allow_credentials_explicitly() -> None:
    config = rules(RuleConfig(path="/**", policy="page", allow_set_cookie=True, allow_authorization=True))
    assert stamp(config, headers=COOKIE, authorization=True)["cache-control"] == "public, max-age=0, s-maxage=60"
    only_cookie = rules(RuleConfig(path="/**", policy="page", allow_set_cookie=True))
    assert stamp(only_cookie, headers=COOKIE, authorization=True)["cache-control"] == "private, max-age=0"


@pytest.mark.parametrize("app_cache_control, expected", [
    P("public, s-maxage=600, max-age=60", "private, max-age=60", id="public app header made private"),
    P(None, "private", id="no header: private added"),
    P("no-store", "no-store", id="already not shareable: untouched"),
    P('private="set-cookie", max-age=60', "private, max-age=60", id="qualified private made whole"),
])
def test_app_headers_with_cookies_are_made_private(app_cache_control: str | None, expected: str) -> None:
    app_headers = COOKIE + ([("cache-control", app_cache_control)] if app_cache_control else [])
    app_headers.append(("cdn-cache-control", "max-age=600"))
    headers = stamp(CDNConfig(), headers=app_headers)
    assert headers["cache-control"] == expected
    assert "cdn-cache-control" not in headers


@pytest.mark.parametrize("limit, app_cache_control, expected", [
    P(0, None, "no-store", id="no header: no-store"),
    P(0, "public, max-age=300", "no-store", id="app's shared freshness removed"),
    P(0, "private, max-age=5", "private, max-age=5", id="private kept"),
    P(10, "public, max-age=300", "public, max-age=300, s-maxage=10", id="clamped by s-maxage"),
    P(10, "public, s-maxage=5", "public, s-maxage=5", id="already short"),
])
def test_server_errors_get_short_or_no_shared_freshness(limit: int, app_cache_control: str | None,
                                                        expected: str) -> None:
    app_headers = HTML + ([("cache-control", app_cache_control)] if app_cache_control else [])
    headers = stamp(CDNConfig(server_error_shared_max_age_seconds=limit), status=503, headers=app_headers)
    assert headers["cache-control"] == expected


@pytest.mark.parametrize("limit, expected", [
    P(0, "no-store", id="limit 0"),
    P(10, "public, max-age=0, s-maxage=10", id="rule clamped"),
])
def test_rule_for_5xx_is_clamped(limit: int, expected: str) -> None:
    config = rules(RuleConfig(path="/**", policy="page", statuses=(503,)),
                   server_error_shared_max_age_seconds=limit)
    headers = stamp(config, status=503)
    assert headers["cache-control"] == expected
    assert headers.get("cdn-cache-control", "max-age=10").startswith("max-age=10")


def test_5xx_targeted_fields_beyond_the_limit_are_dropped() -> None:
    app_headers = HTML + [("cache-control", "public, max-age=5"), ("cdn-cache-control", "max-age=600"),
                          ("surrogate-control", "max-age=3")]
    headers = stamp(CDNConfig(server_error_shared_max_age_seconds=10), status=500, headers=app_headers)
    assert "cdn-cache-control" not in headers
    assert headers["surrogate-control"] == "max-age=3"


# --------------------------------------------------------------------------- Vary and ETag


@pytest.mark.parametrize("app_headers, compression, expected", [
    P(HTML + [("content-encoding", "gzip")], False, "Accept-Encoding", id="compressed by the app"),
    P(HTML, True, "Accept-Encoding", id="compressed downstream"),
    P(HTML + [("vary", "Cookie")], True, "Cookie, Accept-Encoding", id="merged into Vary"),
    P(HTML + [("vary", "accept-encoding")], True, "accept-encoding", id="already there"),
    P(HTML + [("vary", "*")], True, "*", id="Vary: * untouched"),
    P([("content-type", "image/png")], True, None, id="not compressible"),
    P(HTML, False, None, id="no compression"),
])
def test_vary_accept_encoding(app_headers: list[tuple[str, str]], compression: bool, expected: str | None) -> None:
    assert stamp(CDNConfig(compression=compression), headers=app_headers).get("vary") == expected


@pytest.mark.parametrize("method, status, extra, etag_config, expected", [
    P("GET", 200, [], True, True, id="GET 200 without ETag"),
    P("HEAD", 200, [], True, True, id="HEAD 200"),
    P("GET", 200, [("etag", 'W/"v1"')], True, False, id="app's weak ETag preserved"),
    P("GET", 404, [], True, False, id="not a 200"),
    P("POST", 200, [], True, False, id="unsafe method"),
    P("GET", 200, [("cache-control", "no-store")], True, False, id="no-store: nobody revalidates"),
    P("GET", 200, [], False, False, id="switched off"),
])
def test_etag_decision(method: str, status: int, extra: list[tuple[str, str]], etag_config: bool,
                       expected: bool) -> None:
    outcome = Stamper(CDNConfig(etag=etag_config)).stamp(method, "/", False, status, HTML + extra, ())
    assert outcome.generate_etag is expected
    assert ("etag", 'W/"v1"') in outcome.headers or not extra or extra[0][0] != "etag"
