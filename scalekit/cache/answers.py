"""What the cache does with the origin's answer (RFC 9111 §3, §4.3.3–§4.3.5, RFC 5861 §4).

:class:`OriginAnswers` is the response half of :class:`~scalekit.cache.policy.CachePolicy`:
pass through, buffer to store, freshen the stored entry after a 304 or a matching HEAD, or
serve it stale when the origin failed. Pure, like the rest of the policy.
"""

from __future__ import annotations

from dataclasses import replace

from .decisions import (
    Buffer,
    Forward,
    Freshen,
    PassThrough,
    RequestView,
    ResponseDecision,
    ServeStale,
    merge_headers,
)
from .entry import CachedEntry
from .fields import UNREACHABLE_ERRORS, proxy_status_error
from .responses import ResponseBuilder
from .rules import ResponseRule, RuleMatcher
from .storable import (
    NotStorable,
    ShapeMemo,
    StoreSettings,
    analyse_response,
    combine_fields,
    corrected_initial_age,
    plan_storing,
)

__all__ = ["OriginAnswers"]


class OriginAnswers:
    """Response-side decisions; mixed into CachePolicy, which sets the attributes below."""

    responses: ResponseBuilder
    rules: RuleMatcher
    has_rules: bool  # bool(rules), read once: most sites configure none
    settings: StoreSettings
    shapes: ShapeMemo

    def stale_fallback(self, forward: Forward, request: RequestView, *, now: float,
                       origin_status: int | None, any_age: bool = False,
                       unreachable: bool = False) -> ServeStale | None:
        """The stale entry to serve instead of the origin's answer, or None.

        ``origin_status`` a 5xx: within RFC 5861 §4 stale-if-error. ``origin_status`` None (the
        app raised) or ``unreachable`` (a gateway said it could not reach the origin): RFC 9111
        §4.2.4 lets a "disconnected" cache serve any stale entry no directive forbids.
        ``any_age``: a coalescing wait timed out; the same directives apply.
        """
        entry = forward.stored
        if entry is None:
            return None
        disconnected = unreachable or (origin_status is None and not any_age)
        within_window = (origin_status is not None and self.responses.current_age(entry, now)
                         - entry.freshness_lifetime_seconds < entry.stale_if_error_seconds)
        if not within_window:
            if not (disconnected or any_age):
                return None
            # §4.2.4: "A cache MUST NOT generate a stale response if it is prohibited by an
            # explicit in-protocol directive (e.g., by a no-cache response directive, a
            # must-revalidate response directive, or an applicable s-maxage or proxy-revalidate
            # response directive" (the last three are must_revalidate) "... unless it is
            # disconnected or doing so is explicitly permitted".
            if entry.must_revalidate or entry.requires_revalidation:
                return None
        detail = UNREACHABLE_DETAIL if disconnected and not within_window else None
        status, headers, body = self.responses.from_entry(
            entry, request, now=now, tier=forward.tier, fwd="stale",
            fwd_status=None if detail else origin_status, detail=detail)
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
                stale = self.stale_fallback(forward, request, now=now, origin_status=status,
                                            unreachable=_reports_unreachable(status, headers))
                if stale is not None:
                    return stale
            if request.method == "HEAD" and status == 200:
                return self._head_update(request, forward, headers, now=now,
                                         request_time=request_time, rule=rule)
        fields, shape = self.shapes.shape(status, headers)
        initial_age = corrected_initial_age(fields, request_time=request_time, response_time=now)
        pass_headers = self.responses.forwarded(headers, forward.fwd, now=now, request_time=request_time,
                                                fields=fields, initial_age=initial_age)
        if not forward.may_store or isinstance(shape, NotStorable):
            return PassThrough(pass_headers)
        plan = plan_storing(shape, request.header, now=now, request_time=request_time,
                            rule=rule or (self.rules.match(request.path) if self.has_rules else None),
                            settings=self.settings, authorization=request.header("authorization") is not None,
                            initial_age=initial_age)
        if isinstance(plan, NotStorable):
            return PassThrough(pass_headers)
        if plan.status == 206 and forward.partial is not None:
            plan = replace(plan, combine_with=forward.partial)  # RFC 9111 §3.4
        return Buffer(plan, pass_headers)

    def stored_miss_response(
        self, request: RequestView, forward: Forward, status: int, entry: CachedEntry | None,
        unsent: frozenset[str], pass_headers: tuple[tuple[str, str], ...], body: bytes, *, now: float,
    ) -> tuple[int, tuple[tuple[str, str], ...], bytes]:
        """The answer to the request that filled the cache (``entry`` None: it was not stored;
        ``unsent``: the fields the entry synthesised that the origin did not send, its plan's).

        The origin's own headers go to this client (fields a shared cache may not store, like
        ``private="x"``, were addressed to it); conditionals and Range are answered from the
        new entry, and Cache-Status says ``stored``.
        """
        if entry is None or (entry.status == 206 and not self.responses.covers(entry, request)):
            return status, pass_headers, body
        if request.special:
            header = request.header
            if any(header(name) is not None for name in ("if-none-match", "if-modified-since", "range")):
                return self.responses.from_entry(entry, request, now=now, tier="", fwd=forward.fwd,
                                                 stored=True)
        ttl = int(entry.freshness_lifetime_seconds - self.responses.current_age(entry, now))
        # What the entry has and the origin's headers lack: complete() appended them last.
        added = tuple([item for item in entry.headers[-2:] if item[0] in unsent]) if unsent else ()
        kept = pass_headers[:-1]  # forwarded() put our Cache-Status last; an upstream one stays
        stored_status = self.responses.stored_status(forward.fwd, ttl)
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
            status=stored.status,
            headers=tuple((n.lower(), v) for n, v in headers if n.lower() != "age"),
            body=stored.body, request_time=request_time, response_time=now,
            corrected_initial_age_seconds=corrected_initial_age(fields, request_time=request_time,
                                                                response_time=now),
            freshness_lifetime_seconds=0.0)


UNREACHABLE_DETAIL = "origin-unreachable"


def _reports_unreachable(status: int, headers: list[tuple[str, str]]) -> bool:
    """A gateway error whose Proxy-Status (RFC 9209) says the origin could not be reached:
    what a reverse proxy in front of the cache's origin answers when it is disconnected."""
    if status not in (502, 503, 504):
        return False
    value = None
    for name, field in headers:
        if name.lower() == "proxy-status":
            value = field if value is None else f"{value}, {field}"
    return proxy_status_error(value) in UNREACHABLE_ERRORS
