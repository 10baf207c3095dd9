"""Cache keys: allowed hosts, query normalisation, Vary secondary keys, same-origin URIs."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scalekit.cache.keys import KeyBuilder, secondary_key

KEYS = KeyBuilder(allowed_hosts=("shop.test", ".example.com"), ignored_query_params=("utm_*", "fbclid"))
ANY = KeyBuilder(allowed_hosts=("*",), ignored_query_params=())


@pytest.mark.parametrize("host, expected", [
    pytest.param("shop.test", "shop.test", id="exact name"),
    pytest.param("SHOP.test.", "shop.test", id="case and trailing dot"),
    pytest.param("shop.test:80", "shop.test", id="default port dropped"),
    pytest.param("shop.test:8080", "shop.test:8080", id="other port kept"),
    pytest.param("example.com", "example.com", id="domain itself"),
    pytest.param("a.b.example.com", "a.b.example.com", id="subdomain"),
    pytest.param("badexample.com", None, id="not a subdomain"),
    pytest.param("evil.test", None, id="unlisted"),
    pytest.param("shop.test@evil.test", None, id="userinfo is not a host"),
    pytest.param("shop.test/x", None, id="path is not a host"),
    pytest.param("", None, id="empty"),
    pytest.param(None, None, id="absent"),
])
def test_host_allowlist(host: str | None, expected: str | None) -> None:
    assert KEYS.host("http", host) == expected


def test_any_host_keeps_hosts_apart() -> None:
    assert ANY.primary_key("http", "a.test", "/", "") != ANY.primary_key("http", "b.test", "/", "")
    assert ANY.primary_key("https", "[::1]:8443", "/p", "") == "https://[::1]:8443/p"


@pytest.mark.parametrize("query, expected", [
    ("", ""),
    ("b=2&a=1", "a=1&b=2"),
    ("a=1&&utm_source=x&utm_medium=y&fbclid=z", "a=1"),
    ("utm%5Fsource=x&a=1", "a=1"),
    ("a=2&a=1", "a=2&a=1"),  # a name's values keep their order (apps read the first)
    ("b=2&a=1&a=0", "a=1&a=0&b=2"),
])
def test_query_normalisation(query: str, expected: str) -> None:
    assert KEYS.normalise_query(query) == expected


def test_same_origin_location() -> None:
    assert KEYS.same_origin_key("http", "shop.test", "/a/b", "../c?x=1") == "http://shop.test/c?x=1"
    assert KEYS.same_origin_key("http", "shop.test", "/a/b", "http://shop.test:80/z") == "http://shop.test/z"
    assert KEYS.same_origin_key("http", "shop.test", "/a/b", "http://a.example.com/z") is None
    assert KEYS.same_origin_key("http", "shop.test", "/a/b", "https://shop.test/z") is None


def test_secondary_key_normalises_and_bounds() -> None:
    headers = {"accept-language": "fr,  en", "accept": ""}
    assert secondary_key(("accept", "accept-language", "x"), headers.get, max_value_bytes=10) == \
        "accept=\naccept-language=fr,en\nx!"
    assert secondary_key(("accept-language",), {"accept-language": "x" * 11}.get, max_value_bytes=10) is None


HEADER_NAMES = st.sampled_from(["accept", "accept-language", "x-a", "cookie", "user-agent"])


@settings(max_examples=100)
@given(st.dictionaries(HEADER_NAMES, st.text("abc ,", max_size=5)),
       st.dictionaries(HEADER_NAMES, st.text("abc ,", max_size=5)))
def test_key_ignores_headers_vary_does_not_name(a: dict[str, str], b: dict[str, str]) -> None:
    vary = ("accept",)
    a2 = {**a, "accept": "v"}
    b2 = {**b, "accept": "v"}
    assert secondary_key(vary, a2.get, max_value_bytes=100) == secondary_key(vary, b2.get, max_value_bytes=100)


@settings(max_examples=100)
@given(st.lists(st.sampled_from(["a=1", "b=2", "utm_x=3", "c=", "d"]), max_size=6))
def test_query_order_does_not_matter(parts: list[str]) -> None:
    assert KEYS.normalise_query("&".join(parts)) == KEYS.normalise_query("&".join(reversed(parts)))


def test_the_same_parts_reuse_the_last_key_and_other_parts_never_do() -> None:
    """A miss asks for its key twice (early path, full path): the second is the first's object;
    any part that differs, the proxy part included, builds its own key."""
    keys = KeyBuilder(allowed_hosts=("shop.test",), ignored_query_params=("utm_*",))
    first = keys.primary_key("http", "shop.test", "/a", "b=1&a=2")
    assert first == "http://shop.test/a?a=2&b=1"
    assert keys.primary_key("http", "shop.test", "/a", "b=1&a=2") is first
    assert keys.primary_key("http", "shop.test", "/a", "b=1&a=2", "|xfh=x") == "http://shop.test/a?a=2&b=1|xfh=x"
    assert keys.primary_key("https", "shop.test", "/a", "b=1&a=2") == "https://shop.test/a?a=2&b=1"
    assert keys.primary_key("http", "shop.test", "/b", "b=1&a=2") == "http://shop.test/b?a=2&b=1"
    assert keys.primary_key("http", "evil.test", "/b", "b=1&a=2") is None
    assert keys.primary_key("http", "evil.test", "/b", "b=1&a=2") is None
    assert keys.primary_key("http", "shop.test", "/b", "b=1&a=2&utm_x=1") == "http://shop.test/b?a=2&b=1"
