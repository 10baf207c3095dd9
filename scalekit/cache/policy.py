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
from typing import Literal

from ..headers import CacheControl, parse_cache_control
from ..memo import TextMemo
from .answers import OriginAnswers
from .config import CacheConfig
from .decisions import (
    CACHEABLE_METHODS,
    SAFE_METHODS,
    SPECIAL_REQUEST_HEADERS,
    Buffer,
    Decision,
    Forward,
    Freshen,
    Fwd,
    PassThrough,
    Refuse,
    RequestView,
    ResponseDecision,
    Serve,
    ServeStale,
    has_validators,
    merge_headers,
    validators_of,
)
from .entry import CachedEntry
from .keys import ForwardedHeaders, KeyBuilder, has_request_body, secondary_key, variant_key
from .responses import ResponseBuilder
from .rules import RuleMatcher
from .storable import ShapeMemo, StoreSettings, combine_fields

# The decision types live in decisions.py and the response half in answers.py; they are
# re-exported here, where callers look for the policy.
__all__ = [
    "CACHEABLE_METHODS",
    "SAFE_METHODS",
    "SPECIAL_REQUEST_HEADERS",
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

_CLIENT_CONDITIONALS = ("if-none-match", "if-modified-since")
# Float rounding of clock arithmetic near 2**31 seconds is under a microsecond.
PLAIN_HIT_MARGIN_SECONDS = 1e-4


class CachePolicy(OriginAnswers):
    """All of the cache layer's HTTP decisions, precomputed from :class:`CacheConfig`."""

    def __init__(self, config: CacheConfig, *, allowed_hosts: tuple[str, ...],
                 etag_max_body_bytes: int = -1, max_body_bytes: int | None = None) -> None:
        self.config = config
        self.keys = KeyBuilder(allowed_hosts=allowed_hosts,
                               ignored_query_params=config.ignored_query_params)
        self.forwarded = ForwardedHeaders(config.keyed_forwarded_headers)
        self.rules = RuleMatcher(config.rules)
        self.has_rules = bool(self.rules)
        self.settings = StoreSettings(
            heuristic_freshness=config.heuristic_freshness,
            heuristic_fraction=config.heuristic_fraction,
            heuristic_max_seconds=config.heuristic_max_seconds,
            max_vary_value_bytes=config.max_vary_value_bytes,
            max_body_bytes=config.max_body_bytes if max_body_bytes is None else max_body_bytes,
            store_server_errors=config.store_server_errors,
            targeted_fields=tuple(name.lower() for name in config.targeted_cache_control or ()),
            strip_targeted=config.strip_targeted_cache_control,
        )
        self.shapes = ShapeMemo(self.settings)
        consumed = frozenset(self.settings.targeted_fields) if self.settings.strip_targeted else frozenset()
        self.responses = ResponseBuilder(config.status_name, etag_max_body_bytes=etag_max_body_bytes,
                                         consumed=consumed)
        self.honour_client_no_cache = config.honour_client_no_cache
        self.coalesce = config.coalesce
        # Request Cache-Control values are client-controlled: only short ones are remembered.
        self._request_directives: TextMemo[CacheControl] = TextMemo(max_entries=1024, max_text_chars=256)
        # decide_request's answer to a plain request when nothing is stored, by method and
        # whether it carries credentials: GET and HEAD, so at most four, each built once.
        self._plain_misses: dict[tuple[str, bool], Decision] = {}

    # ----------------------------------------------------------------- keys
    def primary_key(self, request: RequestView) -> str | None:
        """The request's primary key (with the values of keyed proxy headers), or None when its
        Host is not allowed or not in canonical form."""
        forwarded = ""
        if request.special and self.forwarded.keyed:
            forwarded = self.forwarded.key_part(request.method, request.scheme, request.host,
                                                request.header) or ""
        return self.keys.primary_key(request.scheme, request.host, request.path, request.query, forwarded)

    def variant_lookup(self, primary: str, index: CachedEntry, request: RequestView) -> str | None:
        """Where this request's variant of a Vary'd URL would be (None: not storable)."""
        secondary = secondary_key(index.vary, request.header,
                                  max_value_bytes=self.settings.max_vary_value_bytes)
        return None if secondary is None else variant_key(primary, index.variants_id, secondary)

    @staticmethod
    def bypasses(request: RequestView) -> bool:
        """Whether the cache neither looks the request up nor stores its answer, whatever the
        rules say: a protocol upgrade (a WebSocket handshake handed over as HTTP).

        RFC 9110 §7.8: Upgrade asks to switch this connection to another protocol; the answer
        (101, or a refusal such as a 404 from an app without that route) belongs to that
        connection alone.
        """
        return request.special and request.header("upgrade") is not None

    def request_directives(self, request: RequestView) -> CacheControl:
        raw = request.header("cache-control")
        if raw is None:
            return _NO_DIRECTIVES
        found = self._request_directives.get(raw)
        if found is None:
            found = parse_cache_control(raw)
            self._request_directives.put(raw, found)
        return found

    # ----------------------------------------------------------------- the request
    def decide_plain_miss(self, request: RequestView) -> Decision:
        """:meth:`decide_request` for a GET or HEAD with none of the special headers
        (``request.special`` False) when the store held nothing under its key: a function of its
        method and credentials alone, so each answer is built once (every new URL comes here)."""
        memo_key = (request.method, request.header("authorization") is not None)
        decision = self._plain_misses.get(memo_key)
        if decision is None:
            decision = self._forward(request, _NO_DIRECTIVES, "uri-miss", None, "")
            if len(self._plain_misses) < 8:  # only GET and HEAD reach here; bounded all the same
                self._plain_misses[memo_key] = decision
        return decision

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
        if special and (has_request_body(request.header) or self.forwarded.key_part(
                request.method, request.scheme, request.host, request.header) is None):
            # A body, or a proxy header the key does not hold, may change what the app answers:
            # the app alone answers (RFC 9110 §9.3.1: content in a GET "has no generally defined
            # semantics").
            return _BYPASS
        directives = self.request_directives(request) if special else _NO_DIRECTIVES
        if found is None:
            return self._forward(request, directives, miss, None, "")
        entry, tier = found
        if entry.vary and entry.secondary_key != secondary_key(
                entry.vary, request.header, max_value_bytes=self.settings.max_vary_value_bytes):
            # Never serve a variant selected for other header values (the Vary secondary key).
            return self._forward(request, directives, "vary-miss", None, "")
        header = request.header
        if special and (header("if-match") is not None or header("if-unmodified-since") is not None):
            # RFC 9111 §4.3.2: preconditions that "only apply to an origin server" go there.
            return self._forward(request, directives, "request", None, "")
        if entry.status == 206 and not self.responses.covers(entry, request):
            # RFC 9111 §3.3: "A cache MUST NOT use an incomplete response to answer requests
            # unless ... the request is partial and specifies a range wholly within" it.
            return self._forward(request, directives, "partial", None, "", partial=entry)
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
            if not special:
                # The hot path: stored headers, Age and Cache-Status, nothing else to decide.
                extra = self.responses.hit_headers(tier, age, lifetime)
                return Serve(entry.status, entry.headers + extra,
                             b"" if request.method == "HEAD" else entry.body, "hit", None,
                             entry.route, entry.headers, entry.origin_seconds, entry.db_seconds, entry.tags)
            return self._serve(entry, tier, request, now, "hit", age=age)
        return self._stale(entry, tier, request, directives, now, staleness=age - lifetime)

    def _stale(self, entry: CachedEntry, tier: str, request: RequestView, directives: CacheControl,
               now: float, *, staleness: float) -> Decision:
        """A stored entry past its freshness lifetime: served stale where RFC 5861 or the
        client's max-stale allows, else validated or fetched again."""
        if staleness < entry.stale_while_revalidate_seconds:
            # RFC 5861 §3: serve stale "while it asynchronously revalidates it in the background".
            refresh = Forward(fwd="stale", stored=entry, tier=tier, may_store=True,
                              validating=has_validators(entry),
                              request_headers=self._revalidation_headers(entry, request))
            return self._serve(entry, tier, request, now, "stale", refresh=refresh)
        if (directives.max_stale is not None and staleness <= directives.max_stale
                and not entry.must_revalidate):
            # §5.2.1.2 max-stale: "the client is willing to accept a response that has
            # exceeded its freshness lifetime" by up to that many seconds.
            return self._serve(entry, tier, request, now, "stale")
        return self._forward(request, directives, "stale", entry, tier)

    def plain_hit(self, entry: CachedEntry, now: float) -> tuple[int, int, float] | None:
        """``(Age, ttl, until)`` when ``entry`` (current, from L1) answers a GET or HEAD that
        carries no special request header as a fresh hit: Age and ttl in whole seconds, and the
        instant before which both keep those values (the hit's headers can be reused until
        then). None when the request must go through :meth:`decide_request` (Vary,
        revalidation, stale, a variant index).

        The shells' hot path: it answers what :meth:`decide_request` would for such a request
        (property tests hold the two equal, and the values constant before ``until``).
        """
        if entry.vary or entry.requires_revalidation or entry.is_vary_index or entry.status == 206:
            return None
        age = self.responses.current_age(entry, now)
        remaining = entry.freshness_lifetime_seconds - age
        if remaining <= 0:
            return None
        if now < entry.response_time:
            until = now  # the resident time is clamped at 0 until then: recompute each time
        else:
            # Age grows with the clock and the ttl shrinks: int(age) holds until age reaches
            # the next whole second, int(remaining) while remaining stays at or above its
            # whole part. The margin keeps float rounding on the early side.
            until = now + min(1.0 - age % 1.0, remaining % 1.0) - PLAIN_HIT_MARGIN_SECONDS
        return int(age), int(remaining), until

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
                 stored: CachedEntry | None, tier: str, *, partial: CachedEntry | None = None) -> Decision:
        if directives.only_if_cached:
            # §5.2.1.7: "respond using a stored response ... or ... with a 504 (Gateway Timeout)".
            status, headers, body = self.responses.refusal(504, "only-if-cached")
            return Refuse(status, headers, b"" if request.method == "HEAD" else body)
        is_get = request.method == "GET"
        # §5.2.1.5 request no-store: "a cache MUST NOT store any part of either this request or
        # any response to it".
        may_store = is_get and not directives.no_store
        changes = self._revalidation_headers(stored, request) if stored is not None else (
            self._strip_client_conditionals(request) if may_store and request.special else ())
        # A request with credentials neither waits for another nor is waited for: an answer to
        # it is shared only if it says so (RFC 9111 §3.5: public, s-maxage, must-revalidate),
        # and other credentials mostly get other answers (a long poll would hold the rest).
        coalesce = (self.coalesce and may_store and fwd != "request"
                    and request.header("authorization") is None)
        validating = stored is not None and has_validators(stored)
        # By position, in the fields' order (see scalekit/records.py): one is built per miss.
        return Forward(fwd, stored, tier, may_store, coalesce, changes, validating, partial)

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
        return Serve(status, headers, body, outcome, refresh, entry.route, base, entry.origin_seconds,
                     entry.db_seconds, entry.tags)

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
        # The target URI whatever form its Host came in: a POST to A.test:80 changes a.test's.
        host = self.keys.host(request.scheme, request.host)
        if host is None:
            return ()
        target = self.primary_key(request) if host == request.host else self.keys.primary_key(
            request.scheme, host, request.path, request.query)
        if target is None:
            return ()
        keys = {target}
        fields = combine_fields(headers)
        for name in ("location", "content-location"):
            other = self.keys.same_origin_key(request.scheme, host, request.path, fields.get(name))
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
_BYPASS = Forward(fwd="bypass", may_store=False)
