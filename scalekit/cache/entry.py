"""The stored response: one immutable value that every tier keeps and every decision reads.

Tiers store it under a string key; the codec (``scalekit.cache.codec``) turns it into bytes for
Redis and disk field by field, so a field added here with a default needs no codec change.
"""

from __future__ import annotations

from ..records import record

__all__ = ["CachedEntry"]


@record
class CachedEntry:
    """A response as the cache stored it, with what freshness and invalidation need.

    Times are seconds on the runtime's wall clock (``Runtime.clock``), so entries written by
    one instance are read correctly by another.
    """

    status: int
    # End-to-end headers as the origin sent them, lower-case names, in order; hop-by-hop
    # headers and those the cache consumes (Surrogate-Control, private="x") already removed.
    headers: tuple[tuple[str, str], ...]
    body: bytes
    # RFC 9111 §4.2.3: when the request left for the origin and when the response arrived.
    request_time: float
    response_time: float
    # RFC 9111 §4.2.3 corrected_initial_age: the Age the response already had when stored.
    corrected_initial_age_seconds: float
    freshness_lifetime_seconds: float
    stale_while_revalidate_seconds: float = 0.0
    stale_if_error_seconds: float = 0.0
    # Every hit must be revalidated with the origin (no-cache) / never served stale.
    requires_revalidation: bool = False
    must_revalidate: bool = False
    # (tag, generation) pairs stamped when the origin call started: a response that overlapped an invalidation is dead.
    tags: tuple[tuple[str, int], ...] = ()
    # Lower-case request header names listed by Vary, and the normalised values they had.
    vary: tuple[str, ...] = ()
    secondary_key: str = ""
    # A variant index (status 0, no body) stands at a Vary'd URL's primary key: it names the
    # Vary'd request headers, and its ``variants_id`` is part of every variant's key, so
    # deleting the index (RFC 9111 §4.4 invalidation) orphans every variant at once.
    is_vary_index: bool = False
    variants_id: str = ""
    # The route template the app named (metrics label), restored on a hit so hits are
    # counted under the same route as the misses that filled the cache.
    route: str = ""
    # What producing this response cost: the origin's time from the request leaving for it to
    # the body's end, and the database time of its statements. Every hit adds them to the
    # time-saved counters of its route.
    origin_seconds: float = 0.0
    db_seconds: float = 0.0

