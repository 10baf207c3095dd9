"""Hypothesis: whatever the app sends and whatever the rules say, stamping stays safe and valid.

1. A response carrying Set-Cookie, or answering a request with Authorization, never leaves
   shared-cacheable (no rule here allows it): Cache-Control says private or no-store, and no
   CDN-targeted field lets a CDN store it.
2. Every header the layer emits or rewrites parses back: Cache-Control style fields are in the
   canonical form of the shared parser (format(parse(v)) == v), surrogate keys split back into
   keys the dialect accepts within its limits, every value is a valid field value.
"""

from __future__ import annotations

from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scalekit.cdn import surrogate
from scalekit.cdn.config import CDNConfig, PolicyConfig, RuleConfig
from scalekit.cdn.policy import Stamper
from scalekit.cdn.presets import BUILTIN_PRESETS
from scalekit.headers import format_cache_control, parse_cache_control

seconds = st.none() | st.integers(0, 2**31 - 1)
policies = st.sampled_from(sorted(BUILTIN_PRESETS)) | st.builds(
    PolicyConfig, max_age_seconds=seconds, shared_max_age_seconds=seconds,
    stale_while_revalidate_seconds=seconds, stale_if_error_seconds=seconds,
    immutable=st.booleans(), public=st.booleans(), private=st.booleans(),
    no_cache=st.booleans(), no_store=st.booleans(), must_revalidate=st.booleans())
rule_configs = st.builds(
    RuleConfig,
    path=st.sampled_from(["/**", "/x/*", "/x/y", "/other/**", "re:^/x"]),
    policy=policies,
    methods=st.sampled_from([(), ("GET",), ("POST", "PUT"), ("GET", "HEAD", "POST")]),
    content_types=st.sampled_from([(), ("text/html",), ("image/*",)]),
    statuses=st.sampled_from([(), (200,), (500, 503), (404,)]),
    override=st.booleans())
configs = st.builds(
    CDNConfig, rules=st.lists(rule_configs, max_size=4).map(tuple),
    default_policy=st.none() | st.sampled_from(sorted(BUILTIN_PRESETS)),
    cdn_cache_control=st.booleans(), surrogate_control=st.booleans(),
    surrogate_keys=st.sampled_from(["fastly", "cloudflare", "akamai", "varnish", "none"]),
    server_error_shared_max_age_seconds=st.sampled_from([0, 5, 3600]), compression=st.booleans())

directive_text = st.sampled_from([
    "public", "private", "no-store", "no-cache", "max-age=60", "s-maxage=600", "MAX-AGE=5",
    "max-age=abc", 'private="set-cookie"', "immutable", "must-revalidate", "stale-while-revalidate=30",
    "x-ext=\"a, b\"", "", " ,", "max-age=5, max-age=7"])
field_values = st.lists(directive_text, max_size=4).map(", ".join)
tag_text = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x2FF), min_size=1, max_size=30)
optional_fields = st.fixed_dictionaries({}, optional={
    "cache-control": field_values,
    "cdn-cache-control": field_values,
    "surrogate-control": field_values,
    "expires": st.sampled_from(["0", "Thu, 01 Jan 2099 00:00:00 GMT"]),
    "set-cookie": st.just("session=s3cret; HttpOnly"),
    "vary": st.sampled_from(["Cookie", "*", "Accept-Encoding"]),
    "content-encoding": st.just("gzip"),
    "etag": st.sampled_from(['"v1"', 'W/"v1"']),
    "surrogate-key": st.lists(tag_text.filter(lambda t: " " not in t), max_size=3).map(" ".join),
    "cache-tag": st.lists(tag_text.filter(lambda t: "," not in t), max_size=3).map(",".join),
})
responses = st.tuples(
    st.sampled_from([200, 203, 204, 301, 304, 404, 410, 500, 501, 503]),
    st.sampled_from(["text/html; charset=utf-8", "application/json", "image/png"]),
    optional_fields)


def _shareable(value: str | None) -> bool:
    directives = parse_cache_control(value)
    return not (directives.no_store or directives.private)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=configs, response=responses, method=st.sampled_from(["GET", "HEAD", "POST"]),
       authorization=st.booleans(), tags=st.sets(tag_text, max_size=5))
def test_stamping_is_safe_and_every_emitted_header_parses_back(
        config: CDNConfig, response: tuple[int, str, dict[str, str]], method: str,
        authorization: bool, tags: set[str]) -> None:
    status, content_type, extra = response
    app_headers = [("content-type", content_type), *extra.items()]
    outcome = Stamper(config).stamp(method, "/x/y", authorization, status, list(app_headers), tags)
    out = outcome.headers

    # 1. Never shared-cacheable with credentials (the rules here never allow it).
    if "set-cookie" in extra or authorization:
        cache_control = [v for n, v in out if n == "cache-control"]
        assert cache_control and not _shareable(", ".join(cache_control))
        assert all(not _shareable(v) for n, v in out if n in ("cdn-cache-control", "surrogate-control"))
    # 5xx: no shared freshness beyond the configured limit.
    if status >= 500:
        limit = config.server_error_shared_max_age_seconds
        for name, value in out:
            if name in ("cache-control", "cdn-cache-control") and _shareable(value):
                directives = parse_cache_control(value)
                shared = directives.s_maxage if directives.s_maxage is not None else directives.max_age
                if name == "cache-control":
                    assert shared is None or shared <= limit
                else:
                    assert shared is not None and shared <= limit

    # 2. What the layer added or rewrote parses back.
    added = Counter(out) - Counter(app_headers)
    for name, value in added:
        assert value == value.strip() and value
        value.encode("latin-1")
        assert not any(ord(char) < 0x20 or ord(char) == 0x7F for char in value)
        if name in ("cache-control", "cdn-cache-control", "surrogate-control"):
            assert format_cache_control(parse_cache_control(value)) == value
        elif name in surrogate.KEY_HEADERS:
            dialect = surrogate.DIALECTS[config.surrogate_keys]
            assert name == dialect.header
            keys = surrogate.parse_key_header(value, dialect.separator)
            assert value == dialect.separator.join(keys)
            assert all(set(key) <= dialect.allowed and len(key) <= dialect.max_key_bytes for key in keys)
            assert len(value) <= dialect.max_line_bytes
        elif name == "vary":
            assert "accept-encoding" in value.lower()
    if config.surrogate_keys != "none":
        assert sum(n in surrogate.KEY_HEADERS for n, _ in out) <= (
            1 if not surrogate.DIALECTS[config.surrogate_keys].multiple_lines else 8)
