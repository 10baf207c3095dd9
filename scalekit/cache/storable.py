"""Whether a response may be stored by a shared cache, and for how long (RFC 9111 §3, §4.2).

Pure: the caller passes the status, the header list, the request's header getter, the rule
in force and the times. The result is a :class:`StorePlan` (everything needed to build the
entry once the body has arrived) or a :class:`NotStorable` naming the reason. What the
response's own lines decide (its shape, memoised per distinct lines) is in :mod:`.shape`; this
module adds the request, the rule and the clock.

>>> plan = analyse_response(200, [("cache-control", "max-age=60")], lambda name: None,
...                         now=100.0, request_time=99.5, rule=None, settings=StoreSettings())
>>> plan.freshness_lifetime_seconds, plan.corrected_initial_age_seconds
(60.0, 0.5)
>>> analyse_response(200, [("cache-control", "private, max-age=60")], lambda name: None,
...                  now=100.0, request_time=99.5, rule=None, settings=StoreSettings())
NotStorable(reason='private')
"""

from __future__ import annotations

from collections.abc import Callable

from ..headers import CacheControl, parse_age, parse_http_date
from ..records import record
from .entry import CachedEntry
from .keys import secondary_key
from .rules import ResponseRule
from .shape import (
    HEURISTIC_STATUSES,
    UNDERSTOOD_STATUSES,
    NotStorable,
    ResponseShape,
    ShapeMemo,
    StoreSettings,
    combine_fields,
    response_shape,
)

__all__ = [  # the shape's names too: the analysis is one API, in two modules
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

HeaderGetter = Callable[[str], "str | None"]


@record
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


def corrected_initial_age(fields: dict[str, str], *, request_time: float, response_time: float) -> float:
    """RFC 9111 §4.2.3: the age the response had when it arrived here."""
    if "date" not in fields and "age" not in fields:  # most apps: the server adds Date later
        return response_time - request_time if response_time > request_time else 0.0
    date = parse_http_date(fields.get("date"))
    apparent_age = max(0.0, response_time - date) if date is not None else 0.0
    age_value = parse_age(fields.get("age")) or 0
    response_delay = max(0.0, response_time - request_time)
    return max(apparent_age, age_value + response_delay)


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
    # §5.2.2.10: s-maxage "incorporates the semantics of the proxy-revalidate response directive
    # for a shared cache": no client max-stale. Explicit stale-while-revalidate / stale-if-error
    # beside s-maxage still apply (they are in-protocol permissions).
    must_revalidate = directives.must_revalidate or directives.proxy_revalidate or directives.s_maxage is not None
    # By position, in the fields' order (see scalekit/records.py): one is built per stored miss.
    return StorePlan(
        shape.status, shape.stored_headers, request_time, now, initial_age, float(lifetime),
        float(swr), float(sie), directives.no_cache, must_revalidate, shape.vary, secondary,
        shape.header_tags, shape.content_length, shape.stored_etag, shape.unsent)


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
