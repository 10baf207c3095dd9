"""The cache's decisions, sans I/O: plain values in, frozen decisions out (RFC 9111, 5861, 9211).

The WSGI and ASGI shells (``wsgi.py``, ``asgi.py``) only move bytes and talk to the store;
every ``if`` about HTTP semantics is here. Two moments:

- :meth:`CachePolicy.decide_request` — given the request and what the store had: serve it
  (:class:`Serve`), go to the origin (:class:`Forward`: miss, stale, revalidation), or refuse
  (:class:`Refuse`: ``only-if-cached`` with nothing usable → 504).
- :meth:`CachePolicy.decide_response` — given the origin's status and headers: pass them
  through (:class:`PassThrough`), read the body to store it (:class:`Buffer`), or answer from
  the stored entry (:class:`Freshen` after a 304, :class:`ServeStale` on an error).

Everything derivable from config is computed in ``__init__``; a hit costs a key, a few
comparisons, ``Age`` and ``Cache-Status``.

>>> from scalekit.cache.config import CacheConfig
>>> policy = CachePolicy(CacheConfig(), allowed_hosts=("*",))
>>> view = RequestView("GET", "http", "example.com", "/", "", {}.get)
>>> policy.decide_request(view, None, now=0.0).fwd
'uri-miss'
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from ..headers import CacheControl, parse_cache_control
from .config import CacheConfig
from .entry import CachedEntry
from .keys import KeyBuilder, secondary_key, variant_key
from .responses import ResponseBuilder
from .rules import ResponseRule, RuleMatcher
from .storable import (
    NotStorable,
    StorePlan,
    StoreSettings,
    analyse_response,
    combine_fields,
    corrected_initial_age,
)

__all__ = [
    "SAFE_METHODS",
    "Buffer",
    "CachePolicy",
    "Decision",
    "Forward",
    "Freshen",
    "PassThrough",
    "Refuse",
    "RequestView",
    "ResponseDecision",
    "Serve",
    "ServeStale",
    "has_validators",
    "merge_headers",
    "validators_of",
]

# RFC 9110 §9.2.1: the safe methods. §4.4 of RFC 9111 invalidates on every other method
# ("including methods whose safety is unknown").
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
CACHEABLE_METHODS = frozenset({"GET", "HEAD"})
Fwd = Literal["miss", "uri-miss", "vary-miss", "stale", "request", "method", "bypass"]
HeaderGetter = Callable[[str], "str | None"]
_CLIENT_CONDITIONALS = ("if-none-match", "if-modified-since")


# Request headers that change what the cache does with a stored response. A request without
# any of them (most requests) skips every directive and conditional check on the hit path.
SPECIAL_REQUEST_HEADERS = ("cache-control", "pragma", "if-none-match", "if-modified-since",
                           "if-match", "if-unmodified-since", "range", "if-range")


class RequestView:
    """The request as the policy sees it; ``header(name)`` takes a lower-case name.

    ``special`` is False when the request has none of :data:`SPECIAL_REQUEST_HEADERS` (the
    shells know it cheaply); True is always safe.
    """

    __slots__ = ("header", "host", "method", "path", "query", "scheme", "special")

    def __init__(self, method: str, scheme: str, host: str | None, path: str, query: str,
                 header: HeaderGetter, special: bool = True) -> None:
        self.method = method
        self.scheme = scheme
        self.host = host
        self.path = path
        self.query = query
        self.header = header
        self.special = special


# --------------------------------------------------------------------------- request decisions


@dataclass(frozen=True, slots=True)
class Serve:
    """Answer from the cache; ``refresh`` set: revalidate in the background once (RFC 5861)."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    outcome: Literal["hit", "stale"]
    refresh: Forward | None = None
    route: str = ""
    # The stored header tuple that ``headers`` starts with, when it does: the ASGI shell
    # encodes it to bytes once per entry instead of once per hit.
    base: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Forward:
    """Go to the origin. ``stored`` is the selected entry (validators, stale-if-error)."""

    fwd: Fwd
    stored: CachedEntry | None = None
    tier: str = ""
    may_store: bool = True
    coalesce: bool = False
    # Request header changes for the origin call: (lower-case name, value or None to remove).
    request_headers: tuple[tuple[str, str | None], ...] = ()
    validating: bool = False


@dataclass(frozen=True, slots=True)
class Refuse:
    """Answer with a response of the cache's own (504 for ``only-if-cached``)."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


Decision = Serve | Forward | Refuse


# --------------------------------------------------------------------------- response decisions


@dataclass(frozen=True, slots=True)
class PassThrough:
    """Send the origin's response on with these headers; ``delete_stored``: drop the entry."""

    headers: tuple[tuple[str, str], ...]
    delete_stored: bool = False


@dataclass(frozen=True, slots=True)
class Buffer:
    """Read the body (up to max_body_bytes) and store it; over the limit, pass through."""

    plan: StorePlan
    pass_headers: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Freshen:
    """The origin confirmed the stored entry (304, or a matching HEAD): store ``entry`` (None:
    delete it, it may no longer be stored) and answer from it."""

    entry: CachedEntry | None
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


@dataclass(frozen=True, slots=True)
class ServeStale:
    """The origin failed; RFC 5861 stale-if-error allows the stored entry instead."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


ResponseDecision = PassThrough | Buffer | Freshen | ServeStale


class CachePolicy:
    """All of the cache layer's HTTP decisions, precomputed from :class:`CacheConfig`."""

    def __init__(self, config: CacheConfig, *, allowed_hosts: tuple[str, ...],
                 etag_max_body_bytes: int = -1) -> None:
        self.config = config
        self.keys = KeyBuilder(allowed_hosts=allowed_hosts,
                               ignored_query_params=config.ignored_query_params)
        self.rules = RuleMatcher(config.rules)
        self.settings = StoreSettings(
            heuristic_freshness=config.heuristic_freshness,
            heuristic_fraction=config.heuristic_fraction,
            heuristic_max_seconds=config.heuristic_max_seconds,
            max_vary_value_bytes=config.max_vary_value_bytes,
            max_body_bytes=config.max_body_bytes,
        )
        self.responses = ResponseBuilder(config.status_name, etag_max_body_bytes=etag_max_body_bytes)
        self.honour_client_no_cache = config.honour_client_no_cache
        self.coalesce = config.coalesce
        self._request_directives: dict[str, CacheControl] = {}

    # ----------------------------------------------------------------- keys
    def primary_key(self, request: RequestView) -> str | None:
        """The request's primary key, or None when its Host is not allowed."""
        return self.keys.primary_key(request.scheme, request.host, request.path, request.query)

    def variant_lookup(self, primary: str, index: CachedEntry, request: RequestView) -> str | None:
        """Where this request's variant of a Vary'd URL would be (None: not storable)."""
        secondary = secondary_key(index.vary, request.header,
                                  max_value_bytes=self.settings.max_vary_value_bytes)
        return None if secondary is None else variant_key(primary, index.variants_id, secondary)

    def request_directives(self, request: RequestView) -> CacheControl:
        raw = request.header("cache-control")
        if raw is None:
            return _NO_DIRECTIVES
        found = self._request_directives.get(raw)
        if found is None:
            found = parse_cache_control(raw)
            if len(self._request_directives) >= 1024:
                self._request_directives.clear()  # client-controlled: bound the memo
            self._request_directives[raw] = found
        return found

    # ----------------------------------------------------------------- the request
    def decide_request(
        self,
        request: RequestView,
        found: tuple[CachedEntry, str] | None,
        *,
        now: float,
        miss: Fwd = "uri-miss",
        collapsed_since: float | None = None,
    ) -> Decision:
        """What to do with a GET/HEAD given the entry the store selected (already checked to be
        current and to match the request's Vary'd headers), or None with ``miss`` saying why."""
        special = request.special
        directives = self.request_directives(request) if special else _NO_DIRECTIVES
        if found is None:
            return self._forward(request, directives, miss, None, "")
        entry, tier = found
        if entry.vary and entry.secondary_key != secondary_key(
                entry.vary, request.header, max_value_bytes=self.settings.max_vary_value_bytes):
            # Invariant 1: never serve a variant selected for other header values.
            return self._forward(request, directives, "vary-miss", None, "")
        header = request.header
        if special and (header("if-match") is not None or header("if-unmodified-since") is not None):
            # RFC 9111 §4.3.2: preconditions that "only apply to an origin server" go there.
            return self._forward(request, directives, "request", None, "")
        age = self.responses.current_age(entry, now)
        lifetime = entry.freshness_lifetime_seconds
        if collapsed_since is not None and entry.response_time >= collapsed_since:
            # A coalesced waiter: the leader obtained (or validated) this entry after the
            # waiter's request arrived, so it is as fresh as a forwarded answer would be.
            return self._serve(entry, tier, request, now, "hit", collapsed=True)
        if entry.requires_revalidation:
            # §5.2.2.4 no-cache: "the cache MUST NOT use the response to satisfy a subsequent
            # request without successful validation on the origin server".
            return self._forward(request, directives, "stale", entry, tier)
        if special and self._client_demands_origin(request, directives, age, lifetime):
            return self._forward(request, directives, "request", entry, tier)
        if age < lifetime:
            return self._serve(entry, tier, request, now, "hit", age=age)
        staleness = age - lifetime
        if staleness < entry.stale_while_revalidate_seconds:
            # RFC 5861 §3: serve stale "while it asynchronously revalidates it in the background".
            refresh = Forward("stale", entry, tier, may_store=True, validating=has_validators(entry),
                              request_headers=self._revalidation_headers(entry, request))
            return self._serve(entry, tier, request, now, "stale", refresh=refresh)
        if (directives.max_stale is not None and staleness <= directives.max_stale
                and not entry.must_revalidate):
            # §5.2.1.2 max-stale: "the client is willing to accept a response that has
            # exceeded its freshness lifetime" by up to that many seconds.
            return self._serve(entry, tier, request, now, "stale")
        return self._forward(request, directives, "stale", entry, tier)

    def _client_demands_origin(self, request: RequestView, directives: CacheControl,
                               age: float, lifetime: float) -> bool:
        if self.honour_client_no_cache:
            # §5.2.1.4 no-cache: "the client prefers a stored response not be used to satisfy
            # the request without successful validation on the origin server"; §5.4: Pragma
            # no-cache counts only when Cache-Control is absent.
            if directives.no_cache:
                return True
            if request.header("cache-control") is None and "no-cache" in (request.header("pragma") or ""):
                return True
        # §5.2.1.1 max-age: "the client prefers a response whose age is less than or equal to
        # the specified number of seconds"; §5.2.1.3 min-fresh: "fresh for at least" that long.
        if directives.max_age is not None and age > directives.max_age:
            return True
        return directives.min_fresh is not None and lifetime - age < directives.min_fresh

    def _forward(self, request: RequestView, directives: CacheControl, fwd: Fwd,
                 stored: CachedEntry | None, tier: str) -> Decision:
        if directives.only_if_cached:
            # §5.2.1.7: "respond using a stored response ... or ... with a 504 (Gateway Timeout)".
            return Refuse(*self.responses.refusal(504, "only-if-cached"))
        is_get = request.method == "GET"
        # §5.2.1.5 request no-store: "a cache MUST NOT store any part of either this request or
        # any response to it".
        may_store = is_get and not directives.no_store
        changes = self._revalidation_headers(stored, request) if stored is not None else (
            self._strip_client_conditionals(request) if may_store else ())
        return Forward(fwd, stored, tier, may_store=may_store,
                       coalesce=self.coalesce and may_store and fwd != "request",
                       request_headers=changes,
                       validating=stored is not None and has_validators(stored))

    def _revalidation_headers(self, entry: CachedEntry,
                              request: RequestView) -> tuple[tuple[str, str | None], ...]:
        # RFC 9111 §4.3.1: "When generating a conditional request for validation, a cache ...
        # MUST send the relevant entity tag (using If-None-Match) if the entity tag was provided
        # in the stored response ... SHOULD send the Last-Modified value (using
        # If-Modified-Since)". The client's own conditionals are evaluated by us afterwards.
        etag, last_modified = validators_of(entry)
        return (("if-none-match", etag), ("if-modified-since", last_modified))

    def _strip_client_conditionals(self, request: RequestView) -> tuple[tuple[str, str | None], ...]:
        # Fetch the complete response so it can be stored; the client's conditionals are then
        # answered from the stored entry.
        if any(request.header(name) is not None for name in _CLIENT_CONDITIONALS):
            return tuple((name, None) for name in _CLIENT_CONDITIONALS)
        return ()

    def _serve(self, entry: CachedEntry, tier: str, request: RequestView, now: float,
               outcome: Literal["hit", "stale"], *, refresh: Forward | None = None,
               collapsed: bool = False, age: float | None = None) -> Serve:
        status, headers, body = self.responses.from_entry(
            entry, request, now=now, tier=tier, collapsed=collapsed, age=age)
        stored = entry.headers
        base = stored if headers[:len(stored)] == stored else ()
        return Serve(status, headers, body, outcome, refresh, entry.route, base)

    def stale_fallback(self, forward: Forward, request: RequestView, *, now: float,
                       origin_status: int | None, any_age: bool = False) -> ServeStale | None:
        """RFC 5861 §4 stale-if-error: the stale entry to serve when the origin raised or
        answered 5xx (``any_age``: a coalescing wait timed out; any stale entry will do)."""
        entry = forward.stored
        if entry is None:
            return None
        if any_age:
            if entry.must_revalidate or entry.requires_revalidation:
                return None
        elif self.responses.current_age(entry, now) - entry.freshness_lifetime_seconds \
                >= entry.stale_if_error_seconds:
            return None
        status, headers, body = self.responses.from_entry(
            entry, request, now=now, tier=forward.tier, fwd="stale", fwd_status=origin_status)
        return ServeStale(status, headers, body)

    # ----------------------------------------------------------------- the response
    def decide_response(
        self,
        request: RequestView,
        forward: Forward,
        status: int,
        headers: list[tuple[str, str]],
        *,
        now: float,
        request_time: float,
        rule: ResponseRule | None,
    ) -> ResponseDecision:
        """What to do with the origin's answer to a forwarded GET/HEAD."""
        stored = forward.stored
        if stored is not None:
            if status == 304 and forward.validating:
                return self._freshen(request, forward, headers, now=now, request_time=request_time,
                                     rule=rule, fwd_status=304)
            if status >= 500:
                stale = self.stale_fallback(forward, request, now=now, origin_status=status)
                if stale is not None:
                    return stale
            if request.method == "HEAD" and status == 200:
                return self._head_update(request, forward, headers, now=now,
                                         request_time=request_time, rule=rule)
        fields = combine_fields(headers)
        pass_headers = self.responses.forwarded(headers, forward.fwd, now=now,
                                                request_time=request_time, fields=fields)
        if not forward.may_store:
            return PassThrough(pass_headers)
        plan = analyse_response(status, headers, request.header, now=now, request_time=request_time,
                                rule=rule or self.rules.match(request.path), settings=self.settings,
                                authorization=request.header("authorization") is not None,
                                fields=fields)
        if isinstance(plan, NotStorable):
            return PassThrough(pass_headers)
        return Buffer(plan, pass_headers)

    def stored_miss_response(
        self, request: RequestView, forward: Forward, status: int, entry: CachedEntry | None,
        pass_headers: tuple[tuple[str, str], ...], body: bytes, *, now: float,
    ) -> tuple[int, tuple[tuple[str, str], ...], bytes]:
        """The answer to the request that filled the cache (``entry`` None: it was not stored).

        The origin's own headers go to this client (fields a shared cache may not store, like
        ``private="x"``, were addressed to it); conditionals and Range are answered from the
        new entry, and Cache-Status says ``stored``.
        """
        if entry is None:
            return status, pass_headers, body
        header = request.header
        if any(header(name) is not None for name in ("if-none-match", "if-modified-since", "range")):
            return self.responses.from_entry(entry, request, now=now, tier="", fwd=forward.fwd,
                                             stored=True)
        ttl = int(entry.freshness_lifetime_seconds - self.responses.current_age(entry, now))
        present = {name.lower() for name, _ in pass_headers}
        added = tuple(item for item in entry.headers
                      if item[0] in ("content-length", "etag") and item[0] not in present)
        kept = pass_headers[:-1]  # forwarded() put our Cache-Status last; an upstream one stays
        stored_status = self.responses.cache_status(fwd=forward.fwd, stored=True, ttl=ttl)
        return status, kept + added + (("cache-status", stored_status),), body

    def _freshen(self, request: RequestView, forward: Forward, headers: list[tuple[str, str]], *,
                 now: float, request_time: float, rule: ResponseRule | None,
                 fwd_status: int | None) -> Freshen:
        stored = forward.stored
        assert stored is not None
        # RFC 9111 §4.3.4: "the cache MUST ... update ... the stored response" with the header
        # fields of the 304 as in §3.2, except Content-Length and the fields excepted from storage.
        if not any(name.lower() == "date" for name, _ in headers):
            # RFC 9110 §6.6.1: a recipient "MUST ... append a corresponding Date header field";
            # without it the old Date would make the freshened entry look old.
            headers = [*headers, ("date", self.responses.http_date(now))]
        merged = merge_headers(stored.headers, headers)
        plan = analyse_response(stored.status, merged, request.header, now=now,
                                request_time=request_time,
                                rule=rule or self.rules.match(request.path), settings=self.settings,
                                authorization=request.header("authorization") is not None)
        entry = None if isinstance(plan, NotStorable) else self.responses.complete(
            plan, stored.body, stored.tags, stored.route)
        if entry is None:
            unstorable = self.build_entry_from(stored, merged, now=now, request_time=request_time)
            status, out, body = self.responses.from_entry(
                unstorable, request, now=now, tier=forward.tier, fwd=forward.fwd, fwd_status=fwd_status)
            return Freshen(None, status, out, body)
        status, out, body = self.responses.from_entry(
            entry, request, now=now, tier=forward.tier, fwd=forward.fwd, fwd_status=fwd_status,
            stored=True)
        return Freshen(entry, status, out, body)

    def _head_update(self, request: RequestView, forward: Forward, headers: list[tuple[str, str]],
                     *, now: float, request_time: float, rule: ResponseRule | None) -> ResponseDecision:
        # RFC 9111 §4.3.5: a HEAD response updates the stored GET response it would select,
        # "if the ... ETag ... Last-Modified ... Content-Length" agree; otherwise "the cache
        # SHOULD mark the stored response as stale" — we drop it.
        stored = forward.stored
        assert stored is not None
        fields = combine_fields(headers)
        stored_fields = combine_fields(stored.headers)
        matches = all(fields.get(name) == stored_fields.get(name)
                      for name in ("etag", "last-modified", "content-length") if name in fields)
        if matches and ("etag" in fields or "last-modified" in fields):
            return self._freshen(request, forward, headers, now=now, request_time=request_time,
                                 rule=rule, fwd_status=200)
        return PassThrough(self.responses.forwarded(headers, forward.fwd, now=now,
                                                    request_time=request_time),
                           delete_stored=True)

    def build_entry_from(self, stored: CachedEntry, headers: list[tuple[str, str]], *, now: float,
                         request_time: float) -> CachedEntry:
        """``stored`` with new headers and times, unstorable: used to answer one request."""
        fields = combine_fields(headers)
        return CachedEntry(
            stored.status, tuple((n.lower(), v) for n, v in headers if n.lower() != "age"),
            stored.body, request_time, now,
            corrected_initial_age(fields, request_time=request_time, response_time=now), 0.0)

    # ----------------------------------------------------------------- unsafe methods
    def invalidated_keys(self, request: RequestView, status: int,
                         headers: list[tuple[str, str]]) -> tuple[str, ...]:
        """RFC 9111 §4.4: keys to invalidate after an unsafe request got a non-error status.

        "A cache MUST invalidate the target URI ... when it receives a non-error status code
        in response to an unsafe request method"; "A cache MAY invalidate other URIs ... the
        URI(s) in the Location and Content-Location response header fields (if present)" —
        "only ... if the host part ... is the same", to prevent denial-of-service attacks.
        """
        if request.method in SAFE_METHODS or not 200 <= status < 400:
            return ()
        target = self.primary_key(request)
        if target is None:
            return ()
        keys = {target}
        fields = combine_fields(headers)
        for name in ("location", "content-location"):
            other = self.keys.same_origin_key(request.scheme, request.host, request.path, fields.get(name))
            if other is not None:
                keys.add(other)
        return tuple(sorted(keys))

    def storage_writes(self, primary: str, entry: CachedEntry, index: CachedEntry | None, *,
                       new_variants_id: Callable[[], str]) -> tuple[tuple[str, CachedEntry], ...]:
        """The (key, entry) pairs that store ``entry`` for ``primary`` (its variant index too);
        ``new_variants_id()`` names a new variant index when one is needed."""
        if not entry.vary:
            return ((primary, entry),)
        if index is not None and index.vary == entry.vary and self.responses.kept_past(index, entry):
            return ((variant_key(primary, index.variants_id, entry.secondary_key), entry),)
        variants_id = index.variants_id if index is not None and index.vary == entry.vary else new_variants_id()
        new_index = self.responses.variant_index(entry, variants_id)
        return ((primary, new_index), (variant_key(primary, variants_id, entry.secondary_key), entry))


_NO_DIRECTIVES = CacheControl()


def validators_of(entry: CachedEntry) -> tuple[str | None, str | None]:
    """The stored ETag and Last-Modified (RFC 9110 §8.8), None where absent."""
    etag = last_modified = None
    for name, value in entry.headers:
        if name == "etag":
            etag = value
        elif name == "last-modified":
            last_modified = value
    return etag, last_modified


def has_validators(entry: CachedEntry) -> bool:
    return any(name in ("etag", "last-modified") for name, _ in entry.headers)


def merge_headers(stored: tuple[tuple[str, str], ...],
                  update: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """RFC 9111 §3.2: stored fields replaced by the update's, except Content-Length and
    fields that are not stored anyway (hop-by-hop, consumed ones are dropped by the analysis)."""
    incoming = [(name.lower(), value) for name, value in update
                if name.lower() not in ("content-length", "content-range", "transfer-encoding")]
    replaced = {name for name, _ in incoming}
    return [item for item in stored if item[0] not in replaced] + incoming

