"""Responses the cache builds: hits (200/206/304/416), stale answers, forwarded headers, entries.

Pure. The hot path is :meth:`ResponseBuilder.from_entry` for a plain hit: it appends ``Age``
and ``Cache-Status`` to the stored header tuple and returns the stored body; the conditional
and Range branches run only when the request carries those headers. A stored 206 is a piece of
its representation: it answers only the ranges it wholly contains (:meth:`covers`), and pieces
of one representation combine when they are stored (RFC 9111 §3.3-§3.4).

>>> from scalekit.cache.entry import CachedEntry
>>> builder = ResponseBuilder("scalekit")
>>> entry = CachedEntry(status=200, headers=(("content-length", "2"),), body=b"hi",
...                     request_time=100.0, response_time=100.0,
...                     corrected_initial_age_seconds=0.0, freshness_lifetime_seconds=60.0)
>>> builder.from_entry(entry, None, now=130.0, tier="memory")[1][-2:]
(('age', '30'), ('cache-status', 'scalekit; hit; ttl=30; detail=memory'))
"""

from __future__ import annotations

from typing import Any

from ..cdn.etag import body_etag
from ..conditional import evaluate_preconditions, not_modified_headers
from ..headers import format_http_date
from .codec import MAX_SECONDS
from .entry import CachedEntry
from .range import UNSATISFIABLE, content_range, parse_content_range, select_range
from .storable import StorePlan, combine_fields, corrected_initial_age

__all__ = ["ResponseBuilder", "usable_until"]

_CONDITIONAL_OR_RANGE = ("if-none-match", "if-modified-since", "range")
INDEX_MIN_SECONDS = 3600.0


def usable_until(entry: CachedEntry) -> float:
    """When ``entry`` stops being servable: fresh, then stale-while-revalidate/stale-if-error."""
    stale = max(entry.stale_while_revalidate_seconds, entry.stale_if_error_seconds)
    return (entry.response_time - entry.corrected_initial_age_seconds
            + entry.freshness_lifetime_seconds + stale)


class ResponseBuilder:
    """Builds headers and bodies; ``status_name`` is this cache's name in Cache-Status."""

    def __init__(self, status_name: str, *, etag_max_body_bytes: int = -1,
                 consumed: frozenset[str] = frozenset()) -> None:
        self.name = status_name
        # Fields this cache removes from what it forwards, besides Surrogate-Control and Age
        # (stripped targeted cache-control fields); lower-case names.
        self.consumed = consumed
        self._dropped = frozenset({"surrogate-control", "age"}) | consumed
        # Bodies up to this size get an ETag when stored without one (-1: never), mirroring
        # the CDN layer's etag / etag_max_body_bytes settings.
        self.etag_max_body_bytes = etag_max_body_bytes
        self._hit_prefix: dict[str, str] = {}
        self._forwarded_status: dict[str, str] = {}  # keyed by the closed set of fwd values
        self._date: tuple[int, str] = (-1, "")

    # ----------------------------------------------------------------- time
    @staticmethod
    def current_age(entry: CachedEntry, now: float) -> float:
        """RFC 9111 §4.2.3: corrected_initial_age + resident_time."""
        resident = now - entry.response_time
        return entry.corrected_initial_age_seconds + (resident if resident > 0 else 0.0)

    def http_date(self, now: float) -> str:
        second = int(now)
        if self._date[0] != second:
            self._date = (second, format_http_date(second))
        return self._date[1]

    # ----------------------------------------------------------------- Cache-Status (RFC 9211)
    def cache_status(self, *, tier: str = "", fwd: str | None = None, fwd_status: int | None = None,
                     stored: bool = False, ttl: int | None = None, collapsed: bool = False,
                     detail: str | None = None) -> str:
        """One Cache-Status member: ``name; hit`` or ``name; fwd=...``, then the parameters."""
        parts = [self.name]
        if fwd is None:
            parts.append("hit")
        else:
            parts.append(f"fwd={fwd}")
            if fwd_status is not None:
                parts.append(f"fwd-status={fwd_status}")
            if stored:
                parts.append("stored")
            if collapsed:
                parts.append("collapsed")
        if ttl is not None:
            parts.append(f"ttl={ttl}")
        if detail or tier:
            parts.append(f"detail={detail or tier}")
        return "; ".join(parts)

    def hit_headers(self, tier: str, age: float, lifetime: float) -> tuple[tuple[str, str], ...]:
        """``Age`` and ``Cache-Status`` of a fresh hit (the only per-hit work on headers)."""
        return self.plain_hit_headers(tier, int(age), int(lifetime - age))

    def plain_hit_headers(self, tier: str, age: int, ttl: int) -> tuple[tuple[str, str], ...]:
        """:meth:`hit_headers` from the whole seconds :meth:`CachePolicy.plain_hit` gives."""
        return (("age", str(age)), ("cache-status", self._hit_status(tier, ttl)))

    def stored_status(self, fwd: str, ttl: int) -> str:
        """Cache-Status of the response whose miss filled the cache: ``name; fwd=...; stored``."""
        return f"{self.name}; fwd={fwd}; stored; ttl={ttl}"

    def _hit_status(self, tier: str, ttl: int) -> str:
        prefix = self._hit_prefix.get(tier)
        if prefix is None:
            prefix = self._hit_prefix[tier] = f"{self.name}; hit; ttl="
        return f"{prefix}{ttl}; detail={tier}" if tier else f"{prefix}{ttl}"

    # ----------------------------------------------------------------- from a stored entry
    def from_entry(self, entry: CachedEntry, request: Any, *, now: float, tier: str,
                   fwd: str | None = None, fwd_status: int | None = None, stored: bool = False,
                   collapsed: bool = False, age: float | None = None,
                   detail: str | None = None) -> tuple[int, tuple[tuple[str, str], ...], bytes]:
        """Status, headers and body answering ``request`` from ``entry`` (``age``: its current
        age, when the caller has it; ``detail``: Cache-Status detail instead of the tier)."""
        if age is None:
            age = self.current_age(entry, now)
        ttl = int(entry.freshness_lifetime_seconds - age)
        if fwd is None and not collapsed:
            status_value = self._hit_status(tier, ttl)
        else:
            status_value = self.cache_status(tier=tier, fwd=fwd or "miss", fwd_status=fwd_status,
                                             stored=stored, ttl=ttl, collapsed=collapsed, detail=detail)
        extra = (("age", str(int(age))), ("cache-status", status_value))
        if request is None:
            return entry.status, entry.headers + extra, entry.body
        header = request.header
        head = request.method == "HEAD"
        if entry.status == 200 and request.special and any(
                header(name) is not None for name in _CONDITIONAL_OR_RANGE):
            return self._conditional_or_range(entry, request, extra, head)
        if entry.status == 206 and self.covers(entry, request):
            return self._from_piece(entry, request, extra)
        return entry.status, entry.headers + extra, b"" if head else entry.body

    # ----------------------------------------------------------------- stored pieces (206)
    @staticmethod
    def covers(entry: CachedEntry, request: Any) -> bool:
        """Whether the stored piece ``entry`` (a 206) can answer ``request``: a GET for one byte
        range wholly within it, whose If-Range (if any) holds (RFC 9111 §3.3)."""
        if request.method != "GET" or not request.special:
            return False
        fields = combine_fields(entry.headers)
        piece = parse_content_range(fields.get("content-range"))
        if piece is None:
            return False
        start, stop, length = piece
        selected = select_range(request.header("range"), request.header("if-range"),
                                etag=fields.get("etag"), last_modified=fields.get("last-modified"),
                                length=length)
        return isinstance(selected, tuple) and start <= selected[0] and selected[1] <= stop

    @staticmethod
    def _from_piece(entry: CachedEntry, request: Any,
                    extra: tuple[tuple[str, str], ...]) -> tuple[int, tuple[tuple[str, str], ...], bytes]:
        # Called when covers() holds. RFC 9110 §13.2.2: If-None-Match / If-Modified-Since are
        # evaluated before Range, on the representation the piece belongs to.
        header = request.header
        fields = combine_fields(entry.headers)
        etag, last_modified = fields.get("etag"), fields.get("last-modified")
        if evaluate_preconditions("GET", None, header("if-none-match"), header("if-modified-since"), None,
                                  etag=etag, last_modified=last_modified) == 304:
            return 304, not_modified_headers(entry.headers) + extra, b""
        piece = parse_content_range(fields.get("content-range"))
        selected = None if piece is None else select_range(
            header("range"), header("if-range"), etag=etag, last_modified=last_modified, length=piece[2])
        if piece is None or not isinstance(selected, tuple):
            return entry.status, entry.headers + extra, entry.body  # the piece as stored: still a 206
        start, _, length = piece
        first, stop = selected
        kept = tuple(item for item in entry.headers if item[0] not in ("content-length", "content-range"))
        return 206, kept + (("content-range", content_range(first, stop, length)),
                            ("content-length", str(stop - first))) + extra, entry.body[first - start:stop - start]

    def _conditional_or_range(self, entry: CachedEntry, request: Any,
                              extra: tuple[tuple[str, str], ...],
                              head: bool) -> tuple[int, tuple[tuple[str, str], ...], bytes]:
        header = request.header
        fields = combine_fields(entry.headers)
        etag, last_modified = fields.get("etag"), fields.get("last-modified")
        # RFC 9110 §13.2.2 via the shared evaluation; If-Match / If-Unmodified-Since never
        # reach here (they go to the origin).
        outcome = evaluate_preconditions(request.method, None, header("if-none-match"),
                                         header("if-modified-since"), None,
                                         etag=etag, last_modified=last_modified)
        if outcome == 304:
            # RFC 9110 §15.4.5: the 304 carries ETag, Cache-Control, Expires, Vary, Date...
            return 304, not_modified_headers(entry.headers) + extra, b""
        if request.method != "GET":
            return entry.status, entry.headers + extra, b"" if head else entry.body
        length = len(entry.body)
        selected = select_range(header("range"), header("if-range"), etag=etag,
                                last_modified=last_modified, length=length)
        if selected is None:
            return entry.status, entry.headers + extra, entry.body
        kept = tuple(item for item in entry.headers if item[0] not in ("content-length", "content-range"))
        if selected == UNSATISFIABLE:
            # RFC 9110 §15.5.17: "the server SHOULD generate a Content-Range header field
            # specifying the current length of the selected representation".
            return 416, kept + (("content-range", f"bytes */{length}"), ("content-length", "0")) + extra, b""
        start, stop = selected
        return 206, kept + (("content-range", content_range(start, stop, length)),
                            ("content-length", str(stop - start))) + extra, entry.body[start:stop]

    # ----------------------------------------------------------------- forwarded responses
    def forwarded(self, headers: list[tuple[str, str]], fwd: str, *, now: float,
                  request_time: float, stored: bool = False, ttl: int | None = None,
                  fields: dict[str, str] | None = None,
                  initial_age: float | None = None) -> tuple[tuple[str, str], ...]:
        """The origin's headers for the client: Surrogate-Control consumed, Age set to the
        corrected age, our Cache-Status appended.

        Date is not synthesised: the HTTP server adds one to every response (RFC 9110 §6.6.1),
        and a second Date field would contradict it.
        """
        if initial_age is None:
            initial_age = corrected_initial_age(fields if fields is not None else combine_fields(headers),
                                                request_time=request_time, response_time=now)
        age = initial_age
        consumed = self.consumed
        if (fields is not None and "surrogate-control" not in fields and "age" not in fields
                and (not consumed or consumed.isdisjoint(fields))):
            out = list(headers)  # nothing to drop: a copy in C
        else:
            dropped = self._dropped
            out = [(name, value) for name, value in headers if name.lower() not in dropped]
        out.append(("age", str(int(age))))
        if stored or ttl is not None:
            status = self.cache_status(fwd=fwd, stored=stored, ttl=ttl)
        else:  # the usual forward: one string per fwd value, built once
            status = self._forwarded_status.get(fwd) or self._forwarded_status.setdefault(
                fwd, self.cache_status(fwd=fwd))
        out.append(("cache-status", status))
        return tuple(out)

    def refusal(self, status: int, detail: str) -> tuple[int, tuple[tuple[str, str], ...], bytes]:
        """A response of the cache's own (504 for only-if-cached or a coalescing timeout)."""
        body = f"{status} {detail}\n".encode()
        return status, (("content-type", "text/plain; charset=utf-8"),
                        ("content-length", str(len(body))), ("cache-control", "no-store"),
                        ("cache-status", f"{self.name}; detail={detail}")), body

    # ----------------------------------------------------------------- entries
    def complete(self, plan: StorePlan, body: bytes, tags: tuple[tuple[str, int], ...],
                 route: str = "", *, finished_at: float | None = None,
                 db_seconds: float = 0.0) -> CachedEntry | None:
        """The entry for ``plan`` once its body is known (at ``finished_at``, on the clock of
        ``plan.request_time``); None if the body is truncated. The entry keeps what producing
        it cost: the origin's time from the request leaving to ``finished_at``, and the
        request's ``db_seconds``."""
        if plan.content_length is not None and plan.content_length != len(body):
            return None
        headers = list(plan.headers)
        status = plan.status
        if status == 206:
            joined = _join_pieces(headers, body, plan.combine_with)
            if joined is None:
                return None
            status, body = joined
        if (status == 200 and len(body) <= self.etag_max_body_bytes
                and not plan.stored_etag):
            # Same tag the CDN layer would compute, so a hit never re-hashes the body.
            headers.append(("etag", body_etag(body)))
        if status not in (204, 304):
            headers.append(("content-length", str(len(body))))
        end = plan.response_time if finished_at is None else finished_at
        origin_seconds = min(max(end - plan.request_time, 0.0), MAX_SECONDS)  # a clock step back: 0
        # By position, in the fields' order (see scalekit/records.py): one is built per stored miss.
        return CachedEntry(
            status, tuple(headers), body, plan.request_time, plan.response_time,
            plan.corrected_initial_age_seconds, plan.freshness_lifetime_seconds,
            plan.stale_while_revalidate_seconds, plan.stale_if_error_seconds,
            plan.requires_revalidation, plan.must_revalidate, tags, plan.vary, plan.secondary_key,
            False, "", route, origin_seconds, min(max(db_seconds, 0.0), MAX_SECONDS))

    @staticmethod
    def kept_past(index: CachedEntry, entry: CachedEntry) -> bool:
        return usable_until(index) >= usable_until(entry)

    @staticmethod
    def variant_index(entry: CachedEntry, variants_id: str) -> CachedEntry:
        """The index standing at a Vary'd URL's primary key; it lives as long as ``entry``."""
        return CachedEntry(
            status=0, headers=(), body=b"", request_time=entry.request_time,
            response_time=entry.response_time,
            corrected_initial_age_seconds=entry.corrected_initial_age_seconds,
            # Outlive the variants (so one write stores a variant), not forever: an index
            # pointing at expired variants only costs a vary-miss.
            freshness_lifetime_seconds=max(usable_until(entry) - entry.response_time, INDEX_MIN_SECONDS),
            vary=entry.vary, is_vary_index=True, variants_id=variants_id,
        )


def _strong_etag(headers: Any) -> str | None:
    for name, value in headers:
        if name == "etag":
            value = value.strip()
            return None if value.startswith("W/") else value
    return None


def _join_pieces(headers: list[tuple[str, str]], body: bytes,
                 stored: CachedEntry | None) -> tuple[int, bytes] | None:
    """A new 206's piece, joined to the ``stored`` one where RFC 9111 §3.4 allows: "if they all
    share the same strong validator". ``headers`` (the new response's, which RFC 9110
    §15.3.7.3 says replace the stored ones) get the Content-Range of the result, or none when
    the pieces make the whole representation: then it is a complete 200. None: the piece does
    not match its Content-Range (truncated)."""
    index = next(i for i, (name, _) in enumerate(headers) if name == "content-range")
    piece = parse_content_range(headers[index][1])
    if piece is None or piece[1] - piece[0] != len(body):
        return None
    start, stop, length = piece
    etag = _strong_etag(headers)
    if stored is not None and etag is not None and _strong_etag(stored.headers) == etag:
        other = parse_content_range(next((v for n, v in stored.headers if n == "content-range"), None))
        if other is not None and other[2] == length and other[0] <= stop and start <= other[1]:
            # Contiguous or overlapping: one piece (same validator, so the overlap is the same bytes).
            low, high = min(start, other[0]), max(stop, other[1])
            joined = bytearray(high - low)
            joined[other[0] - low:other[1] - low] = stored.body
            joined[start - low:stop - low] = body
            start, stop, body = low, high, bytes(joined)
    del headers[index]
    if start == 0 and stop == length:
        # RFC 9110 §15.3.7.3: "If the union consists of the entire range of the representation,
        # then the client MUST process the combined response as if it were a complete 200 (OK)
        # response, including a Content-Length header field that reflects the complete length."
        return 200, body
    headers.append(("content-range", content_range(start, stop, length)))
    return 206, body
