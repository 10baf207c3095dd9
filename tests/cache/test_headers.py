"""scalekit.headers: table-driven against the RFCs, plus Hypothesis round trips and no-raise."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scalekit.headers import (
    DELTA_SECONDS_MAX,
    CacheControl,
    format_cache_control,
    format_http_date,
    hop_by_hop_names,
    parse_cache_control,
    parse_http_date,
    parse_list,
    parse_surrogate_control,
    parse_tags,
    parse_vary,
)

EPOCH_1994 = 784111777.0  # Sun, 06 Nov 1994 08:49:37 GMT, the RFC 9110 §5.6.7 example


@pytest.mark.parametrize("value, expected", [
    pytest.param("max-age=60", CacheControl(max_age=60), id="delta-seconds §5.2.2.1"),
    pytest.param('max-age="60"', CacheControl(max_age=60), id="quoted delta-seconds accepted"),
    pytest.param("MAX-AGE=60, Public", CacheControl(max_age=60, public=True), id="names are case-insensitive §5.2"),
    pytest.param("max-age=abc", CacheControl(max_age=0), id="invalid max-age means stale §4.2.1"),
    pytest.param("max-age=5, max-age=6", CacheControl(max_age=0), id="conflicting duplicates are stale §4.2.1"),
    pytest.param("s-maxage=99999999999", CacheControl(s_maxage=DELTA_SECONDS_MAX), id="capped at 2^31 §1.2.2"),
    pytest.param('no-cache="Set-Cookie, X-A"', CacheControl(no_cache_fields=("set-cookie", "x-a")),
                 id="qualified no-cache §5.2.2.4"),
    pytest.param('private="x-user"', CacheControl(private_fields=("x-user",)), id="qualified private §5.2.2.7"),
    pytest.param("private", CacheControl(private=True), id="unqualified private"),
    pytest.param("max-stale", CacheControl(max_stale=DELTA_SECONDS_MAX), id="max-stale without value §5.2.1.2"),
    pytest.param("min-fresh=5, only-if-cached", CacheControl(min_fresh=5, only_if_cached=True),
        id="request directives"),
    pytest.param("stale-while-revalidate=30, stale-if-error=60",
                 CacheControl(stale_while_revalidate=30, stale_if_error=60), id="RFC 5861"),
    pytest.param('foo, bar="a, b"', CacheControl(extensions=(("foo", None), ("bar", "a, b"))), id="extensions kept"),
    pytest.param(",,, =, max-age", CacheControl(max_age=0), id="garbage is neutral"),
    pytest.param("", CacheControl(), id="empty"),
])
def test_parse_cache_control(value: str, expected: CacheControl) -> None:
    assert parse_cache_control(value) == expected


@pytest.mark.parametrize("value, expected", [
    pytest.param("Sun, 06 Nov 1994 08:49:37 GMT", EPOCH_1994, id="IMF-fixdate"),
    pytest.param("Sunday, 06-Nov-94 08:49:37 GMT", EPOCH_1994, id="obsolete rfc850-date"),
    pytest.param("Sun Nov  6 08:49:37 1994", EPOCH_1994, id="obsolete asctime-date"),
    pytest.param("0", None, id="'0' is invalid: already expired §5.3"),
    pytest.param("-1", None, id="negative"),
    pytest.param("Sun, 06 Nov 1994 08:49:37 +0000", None, id="numeric zone: email parser accepts, HTTP does not"),
    pytest.param("Sun, 06 Nov 94 08:49:37 GMT", None, id="two-digit year in IMF form"),
    pytest.param("6 Nov 1994 08:49:37 GMT", None, id="no day name"),
    pytest.param("Sun, 06 Nov 1994 08:49 GMT", None, id="no seconds"),
    pytest.param("Sun, 31 Feb 1994 08:49:37 GMT", None, id="no such day"),
    pytest.param("Sun, 06 Nov 1994 25:49:37 GMT", None, id="no such hour"),
    pytest.param("Thu, 01 Dec 1994 16:00:00 GMT, Fri, 02 Dec 1994 16:00:00 GMT", None, id="two dates"),
])
def test_parse_http_date_is_strict(value: str, expected: float | None) -> None:
    assert parse_http_date(value) == expected


def test_surrogate_control_and_lists() -> None:
    assert parse_surrogate_control("max-age=60+30, no-store;other").max_age == 60
    assert parse_surrogate_control("max-age=60+30").stale_seconds == 30
    assert parse_surrogate_control("no-store").no_store
    assert not parse_surrogate_control("no-store;cdn").no_store  # targeted at another device
    assert parse_vary("Accept-Encoding, accept-language") == ("accept-encoding", "accept-language")
    assert parse_vary("Accept, *") == ("*",)
    assert parse_list("keep-alive, Upgrade") == ("keep-alive", "upgrade")
    assert "x-private-hop" in hop_by_hop_names("X-Private-Hop")
    assert parse_tags("a b  a", "c, d") == ("a", "b", "c", "d")


TOKENS = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)
KNOWN = {"public", "private", "no-cache", "no-store", "max-age", "s-maxage", "must-revalidate",
         "proxy-revalidate", "no-transform", "immutable", "must-understand", "stale-while-revalidate",
         "stale-if-error", "max-stale", "min-fresh", "only-if-cached"}
FIELD_NAMES = st.lists(TOKENS, max_size=3, unique=True).map(lambda names: tuple(sorted(names)))
DELTAS = st.none() | st.integers(0, DELTA_SECONDS_MAX)
EXTENSIONS = st.lists(
    st.tuples(TOKENS.filter(lambda name: name not in KNOWN),
              st.none() | st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=10)),
    max_size=3,
).map(tuple)
CACHE_CONTROLS = st.builds(
    CacheControl,
    public=st.booleans(), private=st.booleans(), private_fields=FIELD_NAMES, no_cache=st.booleans(),
    no_cache_fields=FIELD_NAMES, no_store=st.booleans(), max_age=DELTAS, s_maxage=DELTAS,
    must_revalidate=st.booleans(), proxy_revalidate=st.booleans(), no_transform=st.booleans(),
    immutable=st.booleans(), must_understand=st.booleans(), stale_while_revalidate=DELTAS,
    stale_if_error=DELTAS, max_stale=DELTAS, min_fresh=DELTAS, only_if_cached=st.booleans(),
    extensions=EXTENSIONS,
)


@settings(max_examples=300)
@given(CACHE_CONTROLS)
def test_cache_control_round_trips(directives: CacheControl) -> None:
    assert parse_cache_control(format_cache_control(directives)) == directives


@settings(max_examples=300)
@given(st.text())
def test_header_parsers_never_raise(text: str) -> None:
    parsed = parse_cache_control(text)
    # Whatever came in, the canonical form is a fixed point.
    assert parse_cache_control(format_cache_control(parsed)) == parsed
    parse_http_date(text)
    parse_surrogate_control(text)
    parse_vary(text)
    parse_list(text)
    parse_tags(text, text)


@settings(max_examples=200)
@given(st.integers(0, 253402300799))  # up to 9999-12-31
def test_http_date_round_trips(seconds: int) -> None:
    assert parse_http_date(format_http_date(seconds)) == seconds


@settings(max_examples=200)
@given(st.text())
def test_vary_and_list_normal_forms_are_fixed_points(text: str) -> None:
    vary = parse_vary(text)
    assert parse_vary(", ".join(vary)) == vary
    listed = parse_list(text)
    assert parse_list(", ".join(listed)) == listed


@pytest.mark.parametrize("value", [
    '", no-store', 'no-store, "', 'max-age="60, no-store', 'x="a\\", no-store',
])
def test_a_quote_left_open_never_hides_a_directive_after_it(value: str) -> None:
    # Read as one quoted string to the end, the field lost its no-store: the CDN layer then
    # stamped such a response "private" alone (storable by a browser) and hashed an ETag for it.
    assert parse_cache_control(value).no_store


def test_a_closed_quoted_string_keeps_its_commas() -> None:
    directives = parse_cache_control('private="set-cookie, x-user", max-age=5')
    assert directives.private_fields == ("set-cookie", "x-user") and directives.max_age == 5
