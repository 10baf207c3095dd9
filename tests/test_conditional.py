"""RFC 9110 §13.2.2, step by step: the one precondition evaluation shared by CDN and cache."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scalekit.cdn.etag import body_etag
from scalekit.conditional import (
    evaluate_preconditions,
    not_modified_headers,
    parse_entity_tags,
    parse_http_date,
)

ETAG = '"v2"'
WEAK = 'W/"v2"'
LAST_MODIFIED = "Sun, 06 Nov 1994 08:49:37 GMT"
BEFORE = "Sat, 05 Nov 1994 08:49:37 GMT"
AFTER = "Mon, 07 Nov 1994 08:49:37 GMT"
RFC850 = "Sunday, 06-Nov-94 08:49:37 GMT"
ASCTIME = "Sun Nov  6 08:49:37 1994"

P = pytest.param
# (method, If-Match, If-None-Match, If-Modified-Since, If-Unmodified-Since, etag, last_modified) -> result
CASES = [
    P("GET", None, None, None, None, ETAG, LAST_MODIFIED, None, id="no preconditions: perform"),
    # Step 1: If-Match, strong comparison.
    P("PUT", ETAG, None, None, None, ETAG, None, None, id="1 If-Match strong match: continue"),
    P("PUT", '"v1", "v2"', None, None, None, ETAG, None, None, id="1 If-Match list member matches"),
    P("PUT", '"v1"', None, None, None, ETAG, None, 412, id="1 If-Match no member matches: 412"),
    P("PUT", WEAK, None, None, None, ETAG, None, 412, id="1 If-Match W/ tag never matches strongly"),
    P("PUT", ETAG, None, None, None, WEAK, None, 412, id="1 If-Match vs weak representation tag: 412"),
    P("PUT", "*", None, None, None, ETAG, None, None, id="1 If-Match * with a representation"),
    P("PUT", "*", None, None, None, None, None, None, id="1 If-Match * needs no validator"),
    P("PUT", ETAG, None, None, None, None, None, 412, id="1 If-Match list, representation has no ETag"),
    P("GET", '"v1"', None, None, None, ETAG, None, 412, id="1 If-Match failing on GET is 412 too"),
    # Step 2: If-Unmodified-Since only when If-Match is absent.
    P("PUT", None, None, None, LAST_MODIFIED, None, LAST_MODIFIED, None, id="2 IUS equal date: true"),
    P("PUT", None, None, None, AFTER, None, LAST_MODIFIED, None, id="2 IUS later date: true"),
    P("PUT", None, None, None, BEFORE, None, LAST_MODIFIED, 412, id="2 IUS modified since: 412"),
    P("PUT", ETAG, None, None, BEFORE, ETAG, LAST_MODIFIED, None, id="2 IUS ignored when If-Match present"),
    P("PUT", None, None, None, "not a date", None, LAST_MODIFIED, None, id="2 IUS invalid date ignored"),
    P("PUT", None, None, None, f"{BEFORE}, {BEFORE}", None, LAST_MODIFIED, None,
      id="2 IUS list of dates ignored"),
    P("PUT", None, None, None, BEFORE, ETAG, None, None, id="2 IUS ignored without Last-Modified"),
    P("DELETE", None, None, None, RFC850.replace("06", "05"), None, LAST_MODIFIED, 412,
      id="2 IUS rfc850-date understood"),
    # Step 3: If-None-Match, weak comparison; 304 for GET/HEAD, 412 otherwise.
    P("GET", None, ETAG, None, None, ETAG, None, 304, id="3 INM match on GET: 304"),
    P("HEAD", None, ETAG, None, None, ETAG, None, 304, id="3 INM match on HEAD: 304"),
    P("GET", None, WEAK, None, None, ETAG, None, 304, id="3 INM weak vs strong matches weakly"),
    P("GET", None, ETAG, None, None, WEAK, None, 304, id="3 INM strong vs weak matches weakly"),
    P("GET", None, '"v1", W/"v2"', None, None, ETAG, None, 304, id="3 INM list member matches"),
    P("GET", None, '"v1"', None, None, ETAG, None, None, id="3 INM no match: full response"),
    P("GET", None, "*", None, None, ETAG, None, 304, id="3 INM * with a representation: 304"),
    P("PUT", None, ETAG, None, None, ETAG, None, 412, id="3 INM match on unsafe method: 412"),
    P("PUT", None, "*", None, None, ETAG, None, 412, id="3 INM * on PUT over existing: 412"),
    P("GET", None, ETAG, None, None, None, LAST_MODIFIED, None, id="3 INM with no ETag: true"),
    P("GET", None, '"v1"', BEFORE, None, ETAG, LAST_MODIFIED, None,
      id="3 INM true wins over a failing IMS (IMS ignored)"),
    P("GET", None, ETAG, AFTER, None, ETAG, LAST_MODIFIED, 304, id="3 INM evaluated, IMS ignored"),
    P("GET", ETAG, ETAG, None, None, ETAG, None, 304, id="1 then 3: If-Match true, INM false: 304"),
    P("GET", '"v1"', ETAG, None, None, ETAG, None, 412, id="1 before 3: If-Match false wins: 412"),
    P("GET", None, ETAG, None, BEFORE, ETAG, LAST_MODIFIED, 412, id="2 before 3: IUS false wins"),
    # Step 4: If-Modified-Since only for GET/HEAD without If-None-Match.
    P("GET", None, None, LAST_MODIFIED, None, None, LAST_MODIFIED, 304, id="4 IMS equal date: 304"),
    P("GET", None, None, AFTER, None, None, LAST_MODIFIED, 304, id="4 IMS later date: 304"),
    P("HEAD", None, None, AFTER, None, None, LAST_MODIFIED, 304, id="4 IMS on HEAD: 304"),
    P("GET", None, None, BEFORE, None, None, LAST_MODIFIED, None, id="4 IMS modified since: full"),
    P("GET", None, None, RFC850, None, None, LAST_MODIFIED, 304, id="4 IMS rfc850-date"),
    P("GET", None, None, ASCTIME, None, None, LAST_MODIFIED, 304, id="4 IMS asctime-date"),
    P("GET", None, None, "yesterday", None, None, LAST_MODIFIED, None, id="4 IMS invalid date ignored"),
    P("GET", None, None, f"{AFTER}, {AFTER}", None, None, LAST_MODIFIED, None,
      id="4 IMS list of dates ignored"),
    P("GET", None, None, AFTER, None, ETAG, None, None, id="4 IMS ignored without Last-Modified"),
    P("GET", None, None, AFTER, None, None, "garbage", None, id="4 IMS ignored, Last-Modified invalid"),
    P("POST", None, None, AFTER, None, None, LAST_MODIFIED, None, id="4 IMS ignored on POST"),
    P("PUT", None, None, AFTER, None, None, LAST_MODIFIED, None, id="4 IMS ignored on PUT"),
    P("get", None, None, AFTER, None, None, LAST_MODIFIED, 304, id="method case-insensitive"),
]


@pytest.mark.parametrize(
    "method, if_match, if_none_match, if_modified_since, if_unmodified_since, etag, last_modified, expected",
    CASES,
)
def test_rfc9110_13_2_2_precedence(
    method: str, if_match: str | None, if_none_match: str | None, if_modified_since: str | None,
    if_unmodified_since: str | None, etag: str | None, last_modified: str | None, expected: int | None,
) -> None:
    assert evaluate_preconditions(
        method, if_match, if_none_match, if_modified_since, if_unmodified_since,
        etag=etag, last_modified=last_modified,
    ) == expected


@pytest.mark.parametrize("method, if_match, if_none_match, expected", [
    P("PUT", "*", None, 412, id="If-Match * without a representation: 412"),
    P("PUT", None, "*", None, id="If-None-Match * without a representation: create"),
    P("PUT", ETAG, None, 412, id="If-Match tag without a representation: 412"),
    P("GET", None, ETAG, None, id="If-None-Match tag without a representation: true"),
])
def test_no_current_representation(method: str, if_match: str | None, if_none_match: str | None,
                                   expected: int | None) -> None:
    assert evaluate_preconditions(method, if_match, if_none_match, None, None, etag=None,
                                  last_modified=None, has_representation=False) == expected


def test_not_modified_headers_keep_validators_cache_fields_and_cookies() -> None:
    headers = [
        ("Content-Type", "text/html"), ("Content-Length", "10"), ("ETag", ETAG),
        ("Cache-Control", "max-age=0"), ("Vary", "Accept-Encoding"), ("Set-Cookie", "a=b"),
        ("Date", LAST_MODIFIED), ("Expires", LAST_MODIFIED), ("Content-Location", "/a"),
        ("Last-Modified", LAST_MODIFIED), ("CDN-Cache-Control", "max-age=60"),
        ("Surrogate-Key", "a b"), ("Content-Encoding", "gzip"),
    ]
    assert not_modified_headers(headers) == (
        ("ETag", ETAG), ("Cache-Control", "max-age=0"), ("Vary", "Accept-Encoding"), ("Set-Cookie", "a=b"),
        ("Date", LAST_MODIFIED), ("Expires", LAST_MODIFIED), ("Content-Location", "/a"),
        ("Last-Modified", LAST_MODIFIED), ("CDN-Cache-Control", "max-age=60"), ("Surrogate-Key", "a b"),
    )


@settings(max_examples=200, deadline=None)
@given(
    method=st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"]),
    fields=st.lists(st.none() | st.text(max_size=40), min_size=4, max_size=4),
    etag=st.none() | st.text(max_size=20),
    last_modified=st.none() | st.text(max_size=40),
)
def test_garbage_never_raises(method: str, fields: list[str | None], etag: str | None,
                              last_modified: str | None) -> None:
    result = evaluate_preconditions(method, *fields, etag=etag, last_modified=last_modified)
    assert result in (None, 304, 412)
    if result == 304:
        assert method in ("GET", "HEAD")


@given(st.text(max_size=60))
@settings(max_examples=200, deadline=None)
def test_parse_http_date_never_raises(text: str) -> None:
    parse_http_date(text)


def test_body_etag_is_strong_quoted_and_stable_across_processes() -> None:
    body = b"scalekit" * 1000
    tag = body_etag(body)
    assert tag.startswith('"') and tag.endswith('"') and len(tag) == 34
    assert body_etag(body + b"!") != tag
    other = subprocess.run(
        [sys.executable, "-c",
         "from scalekit.cdn.etag import body_etag; print(body_etag(b'scalekit' * 1000))"],
        capture_output=True, text=True, check=True, env={"PYTHONHASHSEED": "123"},
    ).stdout.strip()
    assert other == tag


@pytest.mark.parametrize("value, expected", [
    P('"a", W/"b", "c, d"', (False, {"a", "c, d"}, {"b"}), id="list with a comma inside quotes"),
    P("*", (True, set(), set()), id="star"),
    P('"a"\n', (False, {"a"}, set()), id="trailing newline: werkzeug 3.1 parse_etags loops forever"),
    P("a\n", (False, {"a"}, set()), id="bare token and newline"),
    P('""', (False, {""}, set()), id="empty opaque-tag"),
    P(',,  ,', (False, set(), set()), id="only separators"),
])
def test_parse_entity_tags(value: str, expected: tuple[bool, set[str], set[str]]) -> None:
    star, strong, weak = parse_entity_tags(value)
    assert (star, set(strong), set(weak)) == expected
