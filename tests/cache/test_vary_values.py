"""Vary'd request header values are normalised where RFC 9110 says two spellings mean the same
(whitespace, the case of case-insensitive tokens, weights, Accept-Encoding's order), so equal
variants share an entry; nothing an app could answer differently is merged."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from werkzeug.http import parse_accept_header

from scalekit.cache.keys import secondary_key
from tests.cache.harness import Harness


def key(name: str, value: str) -> str | None:
    return secondary_key((name,), {name: value}.get, max_value_bytes=512)


@pytest.mark.parametrize("name, first, second", [
    pytest.param("accept-encoding", "gzip, br", "br,gzip", id="codings in any order"),
    pytest.param("accept-encoding", "GZIP", "gzip", id="coding case"),
    pytest.param("accept-encoding", "gzip;q=1.0, br", "br, gzip", id="the default weight"),
    pytest.param("accept-encoding", "gzip ; q=0.50", "gzip;q=0.5", id="weight spelling"),
    pytest.param("accept-encoding", "gzip,,br,", "gzip, br", id="empty members"),
    pytest.param("accept-language", "en-US, fr;q=0.5", "en-us,fr;Q=0.500", id="language tag case"),
    pytest.param("accept", "Text/HTML, */*;q=0.8", "text/html,*/*; q=0.8", id="media type case"),
    pytest.param("accept-charset", "UTF-8, iso-8859-1;q=0.5", "utf-8,ISO-8859-1;q=0.5", id="charset case"),
    pytest.param("cookie", " a=1; b=2 ", "a=1; b=2", id="whitespace at the ends"),
])
def test_equal_values_share_a_variant(name: str, first: str, second: str) -> None:
    assert key(name, first) == key(name, second)


@pytest.mark.parametrize("name, first, second", [
    pytest.param("accept-language", "fr, en", "en, fr", id="language preference order"),
    pytest.param("accept", "text/html, application/json", "application/json, text/html", id="media order"),
    pytest.param("accept-encoding", "gzip;q=0", "gzip", id="a refused coding"),
    pytest.param("accept", "text/html;level=1", "text/html;level=2", id="parameter values"),
    pytest.param("accept", "text/plain;charset=A", "text/plain;charset=a", id="parameter value case"),
    pytest.param("accept", 'a/b;x="1, 2"', 'a/b;x="1,2"', id="inside a quoted string"),
    pytest.param("cookie", "a=B", "a=b", id="cookie case"),
    pytest.param("user-agent", "Foo (a, b)", "Foo (a,b)", id="spaces inside a user agent"),
    pytest.param("x-tenant", "a, b", "a,b", id="a header of unknown syntax"),
])
def test_values_an_app_may_tell_apart_stay_apart(name: str, first: str, second: str) -> None:
    assert key(name, first) != key(name, second)


codings = st.sampled_from(["gzip", "GZip", "br", "deflate", "*", "identity", "zstd"])
weights = st.sampled_from(["", ";q=0", ";q=0.5", ";q=0.50", ";q=1", ";q=1.000", " ; q=0.3", ";q=0.25"])
spaces = st.sampled_from(["", " ", "  "])
members = st.tuples(spaces, codings, weights, spaces).map("".join)
accept_encodings = st.lists(members, min_size=1, max_size=4).map(",".join)


def meaning(value: str) -> list[tuple[str, float]]:
    """What Accept-Encoding tells a server: each coding's weight (werkzeug's reading)."""
    return sorted((coding.lower(), weight) for coding, weight in parse_accept_header(value))


@settings(max_examples=150, deadline=None)
@given(accept_encodings, accept_encodings)
def test_accept_encoding_variants_share_exactly_when_they_mean_the_same(first: str, second: str) -> None:
    same_key = key("accept-encoding", first) == key("accept-encoding", second)
    if same_key:
        assert meaning(first) == meaning(second)
    if meaning(first) == meaning(second) and len({c for c, _ in meaning(first)}) == len(meaning(first)):
        # Without a coding named twice, the same meaning is the same variant.
        assert same_key


def test_equal_variants_share_an_entry_end_to_end(make: object, path: str) -> None:
    h: Harness = make()  # type: ignore[operator]
    url = f"{path}?cc=max-age%3D60&vary=accept-encoding,accept-language"
    h.get(url, accept_encoding="gzip, br", accept_language="en-US,fr;q=0.5")
    reply = h.get(url, accept_encoding="br,GZIP", accept_language="en-us, fr;q=0.50")
    assert reply.hit and h.calls(path) == 1
    assert not h.get(url, accept_encoding="br", accept_language="en-us, fr;q=0.5").hit
    assert not h.get(url, accept_encoding="gzip, br", accept_language="fr;q=0.5, en-us").hit
