"""Conditional requests (RFC 9110 §13): one pure evaluation shared by the CDN and cache layers.

:func:`evaluate_preconditions` follows the evaluation order of RFC 9110 §13.2.2 step by step and
answers ``None`` (perform the method / send the full response), ``304`` or ``412``.
:func:`not_modified_headers` picks the header fields a 304 carries (RFC 9110 §15.4.5).

No I/O, no clock: the caller passes the request's four precondition fields and the selected
representation's validators as plain strings.

>>> evaluate_preconditions("GET", None, '"v1"', None, None, etag='"v1"', last_modified=None)
304
>>> evaluate_preconditions("PUT", '"v0"', None, None, None, etag='"v1"', last_modified=None)
412
>>> evaluate_preconditions("GET", None, 'W/"v1"', None, None, etag='"v1"', last_modified=None)
304
>>> not_modified_headers([("Content-Type", "text/html"), ("ETag", '"v1"')])
(('ETag', '"v1"'),)
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime

from werkzeug.http import parse_date, unquote_etag

__all__ = [
    "NOT_MODIFIED_HEADERS",
    "evaluate_preconditions",
    "not_modified_headers",
    "parse_entity_tags",
    "parse_http_date",
]

# RFC 9110 §13.2.2 step 3/4: "respond 304 (Not Modified) if the request method is GET or HEAD".
GET_OR_HEAD = frozenset({"GET", "HEAD"})

# RFC 9110 §15.4.5: "The server generating a 304 response MUST generate any of the following
# header fields that would have been sent in a 200 (OK) response to the same request:
# Content-Location, Date, ETag, and Vary; Cache-Control and Expires". "A sender SHOULD NOT
# generate representation metadata other than the above listed fields unless said metadata
# exists for the purpose of guiding cache updates (e.g., Last-Modified might be useful if the
# response does not have an ETag field)". The targeted cache controls (RFC 9213), surrogate
# controls and keys, Age and Cache-Status exist to guide caches, so a CDN revalidating with us
# keeps its tags and freshness. Set-Cookie is client state, not representation metadata: losing
# it on a 304 would drop a session refresh (RFC 2109 §4.5: a proxy "should propagate the
# Set-cookie header to the client, regardless of whether the response was 304 (Not Modified)
# or 200 (OK)"; Django's ConditionalGetMiddleware keeps it too). Content-Length, Content-Type
# and the rest of the representation metadata are dropped.
NOT_MODIFIED_HEADERS = frozenset({
    "set-cookie",
    "cache-control",
    "content-location",
    "date",
    "etag",
    "expires",
    "vary",
    "last-modified",
    "age",
    "cache-status",
    "cdn-cache-control",
    "surrogate-control",
    "surrogate-key",
    "cache-tag",
    "edge-cache-tag",
    "xkey",
})


def evaluate_preconditions(
    method: str,
    if_match: str | None,
    if_none_match: str | None,
    if_modified_since: str | None,
    if_unmodified_since: str | None,
    *,
    etag: str | None,
    last_modified: str | None,
    has_representation: bool = True,
) -> int | None:
    """Evaluate the request's preconditions against the selected representation.

    Returns ``None`` to proceed (perform the method or send the full response), ``304`` (Not
    Modified) or ``412`` (Precondition Failed), in the order of RFC 9110 §13.2.2. ``etag`` is
    the representation's entity tag as sent in ``ETag`` (quoted, maybe ``W/``), or None when it
    has none; ``last_modified`` its ``Last-Modified`` value, or None. ``has_representation`` is
    False when the target resource has no current representation (a PUT creating it), which is
    what ``If-Match: *`` and ``If-None-Match: *`` test.

    The caller applies RFC 9110 §13.2.1: "A server MUST ignore all received preconditions if
    its response to the same request without those conditions ... would have been a status code
    other than a 2xx (Successful) or 412 (Precondition Failed)", so it only calls this for such
    responses. Range (step 5) is left to the server.
    """
    method = method.upper()
    modified = parse_http_date(last_modified)
    # Step 1: "When recipient is the origin server and If-Match is present, evaluate the
    # If-Match precondition: if true, continue to step 3; if false, respond 412".
    if if_match is not None:
        if not _if_match_holds(if_match, etag, has_representation):
            return 412
    # Step 2: "When recipient is the origin server, If-Match is not present, and
    # If-Unmodified-Since is present, evaluate the If-Unmodified-Since precondition".
    elif if_unmodified_since is not None and _if_unmodified_since_fails(if_unmodified_since, modified):
        return 412
    # Step 3: "When If-None-Match is present, evaluate the If-None-Match precondition: if true,
    # continue to step 5; if false for GET/HEAD, respond 304; if false for other methods,
    # respond 412".
    if if_none_match is not None:
        if not _if_none_match_holds(if_none_match, etag, has_representation):
            return 304 if method in GET_OR_HEAD else 412
        return None
    # Step 4: "When the method is GET or HEAD, If-None-Match is not present, and
    # If-Modified-Since is present, evaluate the If-Modified-Since precondition: if true,
    # continue to step 5; if false, respond 304".
    if (method in GET_OR_HEAD and if_modified_since is not None
            and _if_modified_since_fails(if_modified_since, modified)):
        return 304
    # Step 6: "Otherwise, perform the requested method and respond according to its success
    # or failure."
    return None


def _if_match_holds(field: str, etag: str | None, has_representation: bool) -> bool:
    # RFC 9110 §13.1.1: "If the field value is "*", the condition is false if the origin server
    # does not have a current representation for the target resource. If the field value is a
    # list of entity tags, the condition is false if none of the listed tags match the entity
    # tag of the selected representation." "An origin server MUST use the strong comparison
    # function when comparing entity tags for If-Match".
    star, strong, _weak_listed = parse_entity_tags(field)
    if star:
        return has_representation
    if etag is None or not has_representation:
        return False
    opaque, weak = unquote_etag(etag)
    # §8.8.3.2 strong comparison: "two entity tags are equivalent if both are not weak and
    # their opaque-tags match character-by-character".
    return not weak and opaque in strong


def _if_none_match_holds(field: str, etag: str | None, has_representation: bool) -> bool:
    # RFC 9110 §13.1.2: "If the field value is "*", the condition is false if the origin server
    # has a current representation for the target resource. If the field value is a list of
    # entity tags, the condition is false if one of the listed tags matches the entity tag of
    # the selected representation." "A recipient MUST use the weak comparison function".
    star, strong, weak_listed = parse_entity_tags(field)
    if star:
        return not has_representation
    if etag is None or not has_representation:
        return True
    opaque, _weak = unquote_etag(etag)
    # §8.8.3.2 weak comparison: "two entity tags are equivalent if their opaque-tags match
    # character-by-character, regardless of either or both being tagged as "weak"".
    return not (opaque in strong or opaque in weak_listed)


# One member of an If-Match / If-None-Match list: W/ prefix (werkzeug also accepts "w/"), then a
# quoted opaque-tag, or, leniently, a bare token as some clients send.
_ENTITY_TAG = re.compile(r'([Ww]/)?(?:"([^"]*)"|([^",\s]+))')


def parse_entity_tags(value: str) -> tuple[bool, frozenset[str], frozenset[str]]:
    """``(star, strong opaque-tags, weak opaque-tags)`` of an If-Match / If-None-Match value.

    Ours rather than werkzeug's ``parse_etags``: in werkzeug 3.1 its pattern can match the
    empty string before a trailing newline without advancing, so ``parse_etags("a\n")`` loops
    forever while its list grows; a request header must never be able to do that. ``finditer``
    always advances, and garbage between members is skipped.
    """
    if value.strip() == "*":
        return True, frozenset(), frozenset()
    strong: set[str] = set()
    weak: set[str] = set()
    for match in _ENTITY_TAG.finditer(value):
        is_weak, quoted, bare = match.groups()
        opaque = quoted if quoted is not None else bare
        if opaque == "*":
            return True, frozenset(), frozenset()
        (weak if is_weak else strong).add(opaque)
    return False, frozenset(strong), frozenset(weak)


def _if_modified_since_fails(field: str, modified: datetime | None) -> bool:
    # RFC 9110 §13.1.3: "A recipient MUST ignore the If-Modified-Since header field if the
    # received field value is not a valid HTTP-date, the field value has more than one member
    # ... A recipient MUST ignore the If-Modified-Since header field if the resource does not
    # have a modification date available." "If the selected representation's last
    # modification date is earlier or equal to the date provided in the field value, the
    # condition is false."
    since = parse_http_date(field)
    if since is None or modified is None:
        return False
    return modified <= since


def _if_unmodified_since_fails(field: str, modified: datetime | None) -> bool:
    # RFC 9110 §13.1.4: "A recipient MUST ignore the If-Unmodified-Since header field if the
    # received field value is not a valid HTTP-date (including when the field value appears to
    # be a list of dates)." "... if the resource does not have a modification date available."
    # "If the selected representation's last modification date is earlier than or equal to the
    # date provided in the field value, the condition is true. Otherwise, the condition is false."
    since = parse_http_date(field)
    if since is None or modified is None:
        return False
    return modified > since


def parse_http_date(value: str | None) -> datetime | None:
    """An HTTP-date (RFC 9110 §5.6.7, all three formats) as an aware datetime, None if invalid.

    A list of dates is invalid: werkzeug's ``parse_date`` would read the first member, but
    §13.1.3/§13.1.4 say a list must be ignored. A single IMF-fixdate or rfc850-date has one
    comma, right after the day name; asctime-date has none.
    """
    if not value:
        return None
    head, comma, tail = value.partition(",")
    if comma and ("," in tail or not head.strip().isalpha()):
        return None
    try:
        return parse_date(value)
    except (ValueError, OverflowError):  # werkzeug already maps most garbage to None
        return None


def not_modified_headers(headers: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """The subset of a 200's ``headers`` that its 304 carries (RFC 9110 §15.4.5), in order.

    Names keep their case; matching is case-insensitive.
    """
    return tuple((name, value) for name, value in headers if name.lower() in NOT_MODIFIED_HEADERS)
