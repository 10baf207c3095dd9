"""What a response's status and header lines decide on their own (RFC 9111 §3): whether
anything forbids storing it, its directives, Vary, length, validators, tags and the lines a
shared cache keeps. The same for every response with the same lines, so :class:`ShapeMemo`
computes it once per distinct lines; :mod:`.storable` adds the request, rule and clock.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass

from ..headers import (
    HOP_BY_HOP,
    CacheControl,
    SurrogateControl,
    hop_by_hop_names,
    parse_cache_control,
    parse_delta_seconds,
    parse_http_date,
    parse_surrogate_control,
    parse_tags,
    parse_vary,
)
from ..memo import TextMemo
from ..records import keyword_record, record
from .fields import parse_targeted
from .range import parse_content_range

__all__ = [
    "HEURISTIC_STATUSES",
    "UNDERSTOOD_STATUSES",
    "NotStorable",
    "ResponseShape",
    "ShapeMemo",
    "StoreSettings",
    "combine_fields",
    "response_shape",
    "stored_headers",
]

# RFC 9110 §15.1: "Responses with status codes that are defined as heuristically cacheable
# (e.g., 200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, and 501 in this specification)
# can be reused by a cache with heuristic expiration".
HEURISTIC_STATUSES = frozenset({200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501})
# The status codes whose caching requirements this cache implements, "understands" in RFC 9111
# §3 and §5.2.2.3: those RFC 9110 §15 defines, and 429 / 431 (RFC 6585) and 451 (RFC 7725).
# 206 is stored as a piece of its representation (§3.3); 304 is not: it updates a stored
# response (§4.3.4) and is never stored itself.
UNDERSTOOD_STATUSES = frozenset({
    200, 201, 202, 203, 204, 205, 206, 300, 301, 302, 303, 305, 307, 308,
    *range(400, 418), 421, 422, 426, 429, 431, 451, *range(500, 506),
})
# Fields the cache consumes: Age is recomputed on every hit (RFC 9111 §5.1), Surrogate-Control
# is addressed to surrogates and removed by them (Edge Architecture §2.1), Cache-Status of this
# cache is added per response.
CONSUMED_FIELDS = frozenset({"age", "surrogate-control"})
_ALWAYS_DROPPED = HOP_BY_HOP | CONSUMED_FIELDS
EVENT_STREAM = "text/event-stream"
# What an entry may carry that its response did not: the body's ETag and Content-Length.
SYNTHESISED_FIELDS = frozenset({"etag", "content-length"})


@dataclass(frozen=True, slots=True)
class StoreSettings:
    """The parts of CacheConfig the analysis reads, frozen once at start-up."""

    heuristic_freshness: bool = False
    heuristic_fraction: float = 0.1
    heuristic_max_seconds: float = 86400.0
    max_vary_value_bytes: int = 512
    max_body_bytes: int = 8 * 1024 * 1024
    store_server_errors: bool = True
    # RFC 9213 target list (lower-case field names, in precedence order), and whether the
    # fields on it are removed from what is stored and sent on.
    targeted_fields: tuple[str, ...] = ()
    strip_targeted: bool = False


@record
class NotStorable:
    reason: str


def combine_fields(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Lower-case name -> value, several lines joined with ", " (RFC 9110 §5.3)."""
    fields: dict[str, str] = {}
    for name, value in headers:
        name = name.lower()
        fields[name] = f"{fields[name]}, {value}" if name in fields else value
    return fields


@keyword_record
class ResponseShape:
    """What a response's status and header lines decide on their own, with no request, rule or
    clock: the same for every response with the same lines, so it may be computed once for
    them (:class:`ShapeMemo`). ``fields`` is shared by everyone who reads the shape: read-only."""

    status: int
    fields: dict[str, str]
    directives: CacheControl
    expires: str | None
    surrogate: SurrogateControl
    vary: tuple[str, ...]
    content_length: int | None
    date: float | None
    has_validators: bool
    said_shared: bool
    states_freshness: bool
    stored_headers: tuple[tuple[str, str], ...]  # without Content-Length (see StorePlan.headers)
    stored_etag: bool
    unsent: frozenset[str]
    header_tags: tuple[str, ...]


def response_shape(status: int, headers: list[tuple[str, str]], settings: StoreSettings,
                   fields: dict[str, str] | None = None) -> ResponseShape | NotStorable:
    """The request-, rule- and time-independent half of :func:`.storable.analyse_response`: the
    response's directives and what they forbid outright, its Vary, length, validators, tags
    and the header lines a shared cache keeps."""
    if fields is None:
        fields = combine_fields(headers)
    read = _read_directives(status, fields, settings)
    if isinstance(read, NotStorable):
        return read
    directives, expires, surrogate = read
    vary = parse_vary(fields.get("vary"))
    # §4.1: "A stored response with a Vary header field value containing a member "*" always
    # fails to match", so storing it would only waste space.
    if vary == ("*",):
        return NotStorable("vary-star")
    content_length = parse_delta_seconds(fields.get("content-length"))
    dropped = frozenset(settings.targeted_fields) if settings.strip_targeted else frozenset()
    kept = tuple([line for line in stored_headers(headers, fields, directives, dropped) if line[0] != "content-length"])
    return ResponseShape(
        status=status, fields=fields, directives=directives, expires=expires, surrogate=surrogate,
        vary=vary, content_length=content_length, date=parse_http_date(fields.get("date")),
        has_validators="etag" in fields or "last-modified" in fields,
        said_shared=directives.public or directives.s_maxage is not None,
        states_freshness=_states_freshness(directives, surrogate.max_age, expires),
        stored_headers=kept, stored_etag=any(name == "etag" for name, _ in kept),
        unsent=SYNTHESISED_FIELDS.difference(fields),
        header_tags=parse_tags(fields.get("surrogate-key"), fields.get("cache-tag")))


class ShapeMemo:
    """``(status, header lines) -> (fields, shape)`` for the responses an app keeps sending
    alike (one route's pages differ in their bodies, not their headers), so a miss does not
    parse the same lines again: a :class:`~scalekit.memo.TextMemo` keyed by the lines, bounded
    in entries and in the text it keeps (header values can echo client input)."""

    __slots__ = ("_memo", "items", "settings")

    def __init__(self, settings: StoreSettings, *, max_entries: int = 256, max_text_chars: int = 2048) -> None:
        self.settings = settings
        self._memo: TextMemo[tuple[dict[str, str], ResponseShape | NotStorable]] = TextMemo(
            max_entries=max_entries, max_text_chars=max_text_chars)
        self.items = self._memo.items

    def shape(self, status: int, headers: list[tuple[str, str]]
              ) -> tuple[dict[str, str], ResponseShape | NotStorable]:
        """The response's combined fields and its shape (see :func:`response_shape`)."""
        key = (status, tuple(headers))
        try:
            found = self._memo.get(key)
        except TypeError:  # a header line that is not a pair of strings: no memo for it
            return self._read(status, headers)
        if found is None:
            found = self._read(status, headers)
            self._memo.put(key, found, chars=_text_chars(headers))
        return found

    def _read(self, status: int, headers: list[tuple[str, str]]
              ) -> tuple[dict[str, str], ResponseShape | NotStorable]:
        fields = combine_fields(headers)
        return fields, response_shape(status, headers, self.settings, fields)


def _text_chars(headers: list[tuple[str, str]]) -> int:
    """The characters of the header lines (an app breaking PEP 3333 with a value that is not
    text: more than any memo keeps, so it is analysed every time)."""
    try:
        return sum(len(name) + len(value) for name, value in headers)
    except TypeError:
        return sys.maxsize


def _read_directives(status: int, fields: dict[str, str], settings: StoreSettings
                     ) -> tuple[CacheControl, str | None, SurrogateControl] | NotStorable:
    """The response's caching directives (RFC 9213 targeted ones first), its Expires (None when
    a targeted field overrides it) and Surrogate-Control, or what forbids storing it whatever
    its lifetime: a cookie, an event stream, its status, no-store, private."""
    # Never stored, whatever any directive or rule says: a cookie is one user's state.
    if "set-cookie" in fields:
        return NotStorable("set-cookie")
    # Server-sent events are live and may never end: a stored copy would replay old events.
    # (Browsers fetch them with cache mode "no-store": HTML Living Standard §9.2.2.)
    if fields.get("content-type", "")[:17].lower() == EVENT_STREAM:
        return NotStorable("event-stream")
    targeted = _targeted_directives(fields, settings.targeted_fields) if settings.targeted_fields else None
    directives = targeted if targeted is not None else parse_cache_control(fields.get("cache-control"))
    # RFC 9213 §2.2: with a valid targeted field the cache "MUST ignore the Cache-Control and
    # Expires header fields in that response".
    expires = fields.get("expires") if targeted is None else None
    surrogate = parse_surrogate_control(fields.get("surrogate-control"))
    refused = _status_refusal(status, directives, settings, fields)
    if refused is not None:
        return refused
    # §3: "the no-store cache directive is not present in the response"; §5.2.2.3: a cache that
    # understands the status of a must-understand response "SHOULD ignore the no-store
    # directive" (the status was checked above). §3: "if the cache is shared: the private
    # response directive is either not present or allows a shared cache to store a modified
    # response" (private="x" does).
    if (directives.no_store and not directives.must_understand) or surrogate.no_store:
        return NotStorable("no-store")
    if directives.private:
        return NotStorable("private")
    return directives, expires, surrogate


def _status_refusal(status: int, directives: CacheControl, settings: StoreSettings,
                    fields: dict[str, str]) -> NotStorable | None:
    # RFC 9111 §3: "the response status code is final" (RFC 9110 §15: 2xx to 5xx); "if the
    # response status code is 206 or 304, or the must-understand cache directive is present:
    # the cache understands the response status code". Any other final status with explicit
    # freshness may be stored: its stale handling then applies to it like to a 200.
    if not 200 <= status <= 599 or status == 304:
        return NotStorable("status")
    if status == 206 and parse_content_range(fields.get("content-range")) is None:
        # Understood here: one byte range of a representation of known length. Multipart
        # byteranges and other units pass through.
        return NotStorable("status")
    if directives.must_understand and status not in UNDERSTOOD_STATUSES:
        return NotStorable("must-understand")
    if status >= 500 and not settings.store_server_errors:
        return NotStorable("server-error")  # the operator's choice: cache.store_server_errors
    return None


def _targeted_directives(fields: dict[str, str], targets: tuple[str, ...]) -> CacheControl | None:
    # RFC 9213 §2.2: "the cache MUST select the first (in target-list order) field with a
    # valid, non-empty value and use its value to determine the caching policy".
    for name in targets:
        directives = parse_targeted(fields.get(name))
        if directives is not None:
            return directives
    return None


def _states_freshness(directives: CacheControl, surrogate_max_age: int | None,
                      expires: str | None) -> bool:
    """Whether the response gave its own lifetime (RFC 9111 §4.2.1), rather than a rule."""
    return (surrogate_max_age is not None or directives.s_maxage is not None
            or directives.max_age is not None or expires is not None)


def stored_headers(headers: Iterable[tuple[str, str]], fields: dict[str, str],
                   directives: CacheControl,
                   also_dropped: frozenset[str] = frozenset()) -> tuple[tuple[str, str], ...]:
    """The end-to-end headers a shared cache keeps, lower-case names, in order.

    Dropped: hop-by-hop fields (RFC 9111 §3.1 "the Connection header field and header fields
    listed by it"), fields the cache consumes, and fields named by ``private="..."``
    (§5.2.2.7 "a shared cache MUST NOT store the specified field names") and ``no-cache="..."``
    (§5.2.2.4: they "MUST NOT be sent in the response to a subsequent request without
    successful revalidation": not storing them is the simple way to honour that).
    ``also_dropped``: fields the cache consumes by configuration (stripped targeted fields).
    """
    connection = fields.get("connection")
    dropped = _ALWAYS_DROPPED if connection is None else hop_by_hop_names(connection) | CONSUMED_FIELDS
    if also_dropped:
        dropped = dropped | also_dropped
    if directives.private_fields or directives.no_cache_fields:
        dropped = dropped | set(directives.private_fields) | set(directives.no_cache_fields)
    return tuple([(lower, value) for name, value in headers if (lower := name.lower()) not in dropped])
