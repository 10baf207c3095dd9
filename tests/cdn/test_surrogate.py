"""Surrogate keys in each CDN's dialect, within its limits, never an invalid header."""

from __future__ import annotations

import logging

import pytest

from scalekit.cdn import surrogate
from scalekit.cdn.config import CDNConfig
from scalekit.cdn.policy import Stamper
from scalekit.cdn.surrogate import DIALECTS, emit_surrogate_keys, encode_key, parse_key_header

P = pytest.param


@pytest.fixture(autouse=True)
def fresh_warnings() -> None:
    surrogate._warned.clear()


@pytest.mark.parametrize("dialect, expected", [
    P("fastly", [("surrogate-key", "page:home product:42 table:orders")], id="fastly Surrogate-Key"),
    P("cloudflare", [("cache-tag", "page:home,product:42,table:orders")], id="cloudflare Cache-Tag"),
    P("akamai", [("edge-cache-tag", "page%3Ahome,product%3A42,table%3Aorders")], id="akamai Edge-Cache-Tag"),
    P("varnish", [("xkey", "page:home product:42 table:orders")], id="varnish xkey"),
])
def test_tags_leave_in_the_configured_dialect(dialect: str, expected: list[tuple[str, str]]) -> None:
    outcome = Stamper(CDNConfig(surrogate_keys=dialect)).stamp(  # type: ignore[arg-type]
        "GET", "/", False, 200,
        [("content-type", "text/html"), ("surrogate-key", "product:42"), ("cache-tag", "page:home")],
        {"table:orders"})
    keys = [(name, value) for name, value in outcome.headers if name in surrogate.KEY_HEADERS]
    assert keys == expected


def test_dialect_none_leaves_the_apps_tag_headers_alone() -> None:
    app = [("content-type", "text/html"), ("Surrogate-Key".lower(), "a b")]
    outcome = Stamper(CDNConfig()).stamp("GET", "/", False, 200, list(app), {"table:orders"})
    assert outcome.headers == app


@pytest.mark.parametrize("tag, dialect, expected", [
    P("product:42", "fastly", "product:42", id="fastly keeps ':'"),
    P("a b", "fastly", "a%20b", id="space is the separator"),
    P("a,b", "cloudflare", "a%2Cb", id="comma is the separator"),
    P("100%", "fastly", "100%25", id="percent itself encoded: reversible"),
    P("café", "varnish", "caf%C3%A9", id="non-ASCII as UTF-8"),
    P("x*y/z", "akamai", "x%2Ay%2Fz", id="akamai refuses * and /"),
])
def test_encoding(tag: str, dialect: str, expected: str) -> None:
    assert encode_key(tag, DIALECTS[dialect]) == expected


def test_key_longer_than_the_cdn_accepts_is_dropped_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "scalekit.cdn"):
        lines = emit_surrogate_keys(["ok", "x" * 129], DIALECTS["akamai"])
        emit_surrogate_keys(["y" * 129], DIALECTS["akamai"])
    assert lines == (("edge-cache-tag", "ok"),)
    assert len([r for r in caplog.records if "128" in r.getMessage()]) == 1  # once per reason


def test_akamai_keeps_at_most_128_tags(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "scalekit.cdn"):
        lines = emit_surrogate_keys([f"t{i:03d}" for i in range(200)], DIALECTS["akamai"])
    assert len(lines) == 1 and len(parse_key_header(lines[0][1], ",")) == 128
    assert "at most 128" in caplog.text


@pytest.mark.parametrize("dialect", ["fastly", "cloudflare", "akamai", "varnish"])
def test_header_budget_is_never_exceeded(dialect: str, caplog: pytest.LogCaptureFixture) -> None:
    spec = DIALECTS[dialect]
    tags = [f"tag-{i:05d}-" + "k" * 90 for i in range(600)]  # ~60 KB of keys
    with caplog.at_level(logging.WARNING, "scalekit.cdn"):
        lines = emit_surrogate_keys(tags, spec)
    assert lines and all(name == spec.header for name, _ in lines)
    assert all(len(value) <= spec.max_line_bytes for _, value in lines)
    assert sum(len(value) for _, value in lines) <= spec.max_total_bytes
    emitted = [key for _, value in lines for key in parse_key_header(value, spec.separator)]
    assert set(emitted) <= {encode_key(tag, spec) for tag in tags}
    assert "not emitted" in caplog.text
    if spec.multiple_lines:
        assert len(lines) > 1  # varnish reads several xkey lines: split rather than drop
    else:
        assert len(lines) == 1


def test_keys_are_sorted_and_deduplicated() -> None:
    assert emit_surrogate_keys(["b", "a", "b"], DIALECTS["fastly"]) == (("surrogate-key", "a b"),)
    assert emit_surrogate_keys([], DIALECTS["fastly"]) == ()
