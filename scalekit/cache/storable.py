"""Whether a response may be stored by a shared cache, and for how long (RFC 9111 §3, §4.2).

Pure: the caller passes the status, the header list, the request's header getter, the rule
in force and the times. The result is a :class:`StorePlan` (everything needed to build the
entry once the body has arrived) or a :class:`NotStorable` naming the reason.

>>> plan = analyse_response(200, [("cache-control", "max-age=60")], lambda name: None,
...                         now=100.0, request_time=99.5, rule=None, settings=StoreSettings())
>>> plan.freshness_lifetime_seconds, plan.corrected_initial_age_seconds
(60.0, 0.5)
>>> analyse_response(200, [("cache-control", "private, max-age=60")], lambda name: None,
...                  now=100.0, request_time=99.5, rule=None, settings=StoreSettings())
NotStorable(reason='private')
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ..headers import (
    HOP_BY_HOP,
    CacheControl,
    SurrogateControl,
    hop_by_hop_names,
    parse_age,
    parse_cache_control,
    parse_delta_seconds,
    parse_http_date,
    parse_surrogate_control,
    parse_tags,
    parse_vary,
)
from ..memo import TextMemo
from ..records import keyword_record, record
from .entry import CachedEntry
from .fields import parse_targeted
from .keys import secondary_key
from .range import parse_content_range
from .rules import ResponseRule

__all__ = [
    "HEURISTIC_STATUSES",
    "UNDERSTOOD_STATUSES",
    "NotStorable",
    "ResponseShape",
    "ShapeMemo",
    "StorePlan",
    "StoreSettings",
    "analyse_response",
    "combine_fields",
    "corrected_initial_age",
    "plan_storing",
    "response_shape",
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
HeaderGetter = Callable[[str], "str | None"]


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


@keyword_record
class StorePlan:
    """A storable response's metadata; the entry is built once its body has been read."""

    status: int
    # The lines a shared cache keeps, but Content-Length: the entry's is its body's length.
    headers: tuple[tuple[str, str], ...]
    request_time: float
    response_time: float
    corrected_initial_age_seconds: float
    freshness_lifetime_seconds: float
    stale_while_revalidate_seconds: float
    stale_if_error_seconds: float
    requires_revalidation: bool
    must_revalidate: bool
    vary: tuple[str, ...]
    secondary_key: str
    header_tags: tuple[str, ...]
    content_length: int | None
    # Whether ``headers`` has an ETag (else the entry gets the body's), and which of the fields
    # the entry synthesises (ETag, Content-Length) the origin did not send its client.
    stored_etag: bool = False
    unsent: frozenset[str] = frozenset()
    # A 206: the stored piece of the same representation it may combine with (RFC 9111 §3.4).
    combine_with: CachedEntry | None = None


def combine_fields(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Lower-case name -> value, several lines joined with ", " (RFC 9110 §5.3)."""
    fields: dict[str, str] = {}
    for name, value in headers:
        name = name.lower()
        fields[name] = f"{fields[name]}, {value}" if name in fields else value
    return fields


def corrected_initial_age(fields: dict[str, str], *, request_time: float, response_time: float) -> float:
    """RFC 9111 §4.2.3: the age the response had when it arrived here."""
    if "date" not in fields and "age" not in fields:  # most apps: the server adds Date later
        return response_time - request_time if response_time > request_time else 0.0
    date = parse_http_date(fields.get("date"))
    apparent_age = max(0.0, response_time - date) if date is not None else 0.0
    age_value = parse_age(fields.get("age")) or 0
    response_delay = max(0.0, response_time - request_time)
    return max(apparent_age, age_value + response_delay)


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
    """The request-, rule- and time-independent half of :func:`analyse_response`: the
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


def analyse_response(
    status: int,
    headers: list[tuple[str, str]],
    request_header: HeaderGetter,
    *,
    now: float,
    request_time: float,
    rule: ResponseRule | None,
    settings: StoreSettings,
    authorization: bool = False,
    fields: dict[str, str] | None = None,
    initial_age: float | None = None,
) -> StorePlan | NotStorable:
    """Decide whether a response to a GET may be stored, per RFC 9111 §3 for a shared cache.

    ``fields`` (``combine_fields(headers)``) and ``initial_age`` (``corrected_initial_age``)
    may be passed when the caller already has them.
    """
    shape = response_shape(status, headers, settings, fields)
    if isinstance(shape, NotStorable):
        return shape
    return plan_storing(shape, request_header, now=now, request_time=request_time, rule=rule,
                        settings=settings, authorization=authorization, initial_age=initial_age)


def plan_storing(shape: ResponseShape, request_header: HeaderGetter, *, now: float,
                 request_time: float, rule: ResponseRule | None, settings: StoreSettings,
                 authorization: bool = False, initial_age: float | None = None) -> StorePlan | NotStorable:
    """The request-, rule- and time-dependent half of :func:`analyse_response`."""
    directives, fields = shape.directives, shape.fields
    opted_in = rule is not None and rule.public
    # §3.5: "A shared cache MUST NOT use a cached response to a request with an Authorization
    # header field ... unless" must-revalidate, public or s-maxage is present. A rule with
    # public = true is the origin's operator saying public for the response.
    if authorization and not (shape.said_shared or directives.must_revalidate or opted_in):
        return NotStorable("authorization")
    secondary = secondary_key(shape.vary, request_header, max_value_bytes=settings.max_vary_value_bytes)
    if secondary is None:
        return NotStorable("vary-value-too-long")
    if shape.content_length is not None and shape.content_length > settings.max_body_bytes:
        return NotStorable("too-large")
    date = shape.date
    lifetime = _freshness_lifetime(shape.status, directives, shape.surrogate.max_age, fields, shape.expires,
                                   date if date is not None else now, rule, settings)
    if (lifetime is not None and not shape.states_freshness and not (shape.said_shared or opted_in)
            and (authorization or request_header("cookie"))):
        # Web cache deception: a rule (or a heuristic) grants freshness by path, and a path can
        # be made to look like a stylesheet (/account/settings-x.css); the answer to a request
        # carrying credentials may be that user's page. Only the response itself, or a rule
        # that says public, may share it.
        return NotStorable("credentialed-request")
    has_validators = shape.has_validators
    if lifetime is None and directives.no_cache and has_validators and shape.status in HEURISTIC_STATUSES:
        # §3 allows storing a heuristically cacheable status; no-cache means every use is
        # revalidated (§5.2.2.4), so no lifetime is needed, and none is invented.
        lifetime = 0.0
    if lifetime is None:
        return NotStorable("no-freshness")
    swr, sie = _stale_windows(directives, shape.surrogate.stale_seconds, rule)
    if directives.no_cache and not has_validators:
        return NotStorable("no-cache-without-validators")
    if initial_age is None:
        initial_age = corrected_initial_age(fields, request_time=request_time, response_time=now)
    if not has_validators and initial_age >= lifetime + max(swr, sie):
        # Stale on arrival (Age or Date at or past its lifetime and stale windows) with nothing
        # to revalidate with: it could never be used, like max-age=0.
        return NotStorable("no-freshness")
    return StorePlan(
        status=shape.status, headers=shape.stored_headers, request_time=request_time, response_time=now,
        corrected_initial_age_seconds=initial_age, freshness_lifetime_seconds=float(lifetime),
        stale_while_revalidate_seconds=float(swr), stale_if_error_seconds=float(sie),
        requires_revalidation=directives.no_cache,
        # §5.2.2.10: s-maxage "incorporates the semantics of the proxy-revalidate response
        # directive for a shared cache": no client max-stale. Explicit stale-while-revalidate /
        # stale-if-error beside s-maxage still apply (they are in-protocol permissions).
        must_revalidate=(directives.must_revalidate or directives.proxy_revalidate
                         or directives.s_maxage is not None),
        vary=shape.vary, secondary_key=secondary, header_tags=shape.header_tags,
        content_length=shape.content_length, stored_etag=shape.stored_etag, unsent=shape.unsent)


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


def _freshness_lifetime(
    status: int,
    directives: CacheControl,
    surrogate_max_age: int | None,
    fields: dict[str, str],
    expires_value: str | None,
    date: float,
    rule: ResponseRule | None,
    settings: StoreSettings,
) -> float | None:
    # Surrogate-Control is addressed to surrogates like us and overrides Cache-Control for
    # them (Edge Architecture §2.2).
    if surrogate_max_age is not None:
        return float(surrogate_max_age)
    # RFC 9111 §4.2.1: "If the cache is shared and the s-maxage response directive is present,
    # use its value, or If the max-age response directive is present, use its value, or If
    # the Expires response header field is present, use its value minus the value of the Date
    # response header field (using the time the message was received if it is not present)".
    if directives.s_maxage is not None:
        return float(directives.s_maxage)
    if directives.max_age is not None:
        return float(directives.max_age)
    if expires_value is not None:
        # §5.3: an invalid Expires (e.g. "0", or two lines joined) means "already expired".
        expires = parse_http_date(expires_value)
        return max(0.0, expires - date) if expires is not None else 0.0
    # A route rule or cache_response() gives the lifetime the response did not state.
    if rule is not None and status in HEURISTIC_STATUSES:
        return rule.ttl_seconds
    # §4.2.2: "a cache MAY assign a heuristic expiration time when an explicit time is not
    # specified ... If the response has a Last-Modified header field, caches are encouraged to
    # use a heuristic expiration value that is no more than some fraction of the interval
    # since that time. A typical setting of this fraction might be 10%."
    # §5.2.2.9: "If a response with the public directive has no explicit freshness
    # information, it is heuristically cacheable".
    if settings.heuristic_freshness and (status in HEURISTIC_STATUSES or directives.public):
        modified = parse_http_date(fields.get("last-modified"))
        if modified is not None and date > modified:
            return min(settings.heuristic_fraction * (date - modified), settings.heuristic_max_seconds)
    return None


def _stale_windows(directives: CacheControl, surrogate_stale: int | None,
                   rule: ResponseRule | None) -> tuple[float, float]:
    # RFC 9111 §4.2.4: "A cache MUST NOT generate a stale response if it is prohibited by an
    # explicit in-protocol directive (e.g., by a no-cache response directive, a must-revalidate
    # response directive, or an applicable s-maxage or proxy-revalidate response directive)".
    if directives.no_cache or directives.must_revalidate or directives.proxy_revalidate:
        return 0.0, 0.0
    swr: float | None = directives.stale_while_revalidate
    if swr is None:
        swr = surrogate_stale
    sie: float | None = directives.stale_if_error
    if rule is not None:
        swr = rule.stale_while_revalidate_seconds if swr is None else swr
        sie = rule.stale_if_error_seconds if sie is None else sie
    return float(swr or 0), float(sie or 0)


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
