"""The values the cache policy decides with: the request view and the decisions (frozen).

Pure data and tiny helpers, shared by :mod:`~scalekit.cache.policy` (which decides) and the
WSGI/ASGI shells (which ``match`` on the decisions).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from ..records import record
from .entry import CachedEntry
from .keys import BODY_HEADERS, FORWARDED_HEADERS
from .storable import StorePlan

__all__ = [
    "CACHEABLE_METHODS",
    "SAFE_METHODS",
    "SPECIAL_REQUEST_HEADERS",
    "UNPLAIN_REQUEST_HEADERS",
    "Buffer",
    "Decision",
    "Forward",
    "Freshen",
    "Fwd",
    "PassThrough",
    "Refuse",
    "RequestView",
    "ResponseDecision",
    "Serve",
    "ServeStale",
    "has_validators",
    "merge_headers",
    "pass_outcome",
    "validators_of",
]

# RFC 9110 §9.2.1: the safe methods. §4.4 of RFC 9111 invalidates on every other method
# ("including methods whose safety is unknown").
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
CACHEABLE_METHODS = frozenset({"GET", "HEAD"})
Fwd = Literal["miss", "uri-miss", "vary-miss", "stale", "partial", "request", "method", "bypass"]
HeaderGetter = Callable[[str], "str | None"]


# Request headers that change what the cache does with a stored response. A request without
# any of them (most requests) skips every directive and conditional check on the hit path.
# The request-body and proxy headers are among them: such a request bypasses the cache or is
# keyed on them (keys.py), so the plain-hit path, which never reads them, pays nothing for them.
SPECIAL_REQUEST_HEADERS = ("cache-control", "pragma", "if-none-match", "if-modified-since",
                           "if-match", "if-unmodified-since", "range", "if-range", "upgrade",
                           *BODY_HEADERS, *FORWARDED_HEADERS)
# The special headers but the proxy ones: a plain hit may still carry proxy headers that only
# restate the request (every request behind nginx or an ingress does), never one of these.
UNPLAIN_REQUEST_HEADERS = tuple(name for name in SPECIAL_REQUEST_HEADERS
                                if name not in FORWARDED_HEADERS)


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


@record
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
    # What producing the served entry cost (origin and database seconds): a hit saved them.
    origin_seconds: float = 0.0
    db_seconds: float = 0.0
    # The entry's (tag, generation) pairs: a hit is tagged as its miss was, for the CDN layer's
    # surrogate keys (an edge refetching a page from a hit must still be purgeable by tag).
    tags: tuple[tuple[str, int], ...] = ()


@record
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
    # A stored 206 that could not answer the request (RFC 9211 fwd=partial): a new piece from
    # the origin may combine with it (RFC 9111 §3.4).
    partial: CachedEntry | None = None


@record
class Refuse:
    """Answer with a response of the cache's own (504 for ``only-if-cached``)."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


Decision = Serve | Forward | Refuse


# --------------------------------------------------------------------------- response decisions


@record
class PassThrough:
    """Send the origin's response on with these headers; ``delete_stored``: drop the entry."""

    headers: tuple[tuple[str, str], ...]
    delete_stored: bool = False


@record
class Buffer:
    """Read the body (up to max_body_bytes) and store it; over the limit, pass through."""

    plan: StorePlan
    pass_headers: tuple[tuple[str, str], ...]


@record
class Freshen:
    """The origin confirmed the stored entry (304, or a matching HEAD): store ``entry`` (None:
    delete it, it may no longer be stored) and answer from it."""

    entry: CachedEntry | None
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


@record
class ServeStale:
    """The origin failed; RFC 5861 stale-if-error allows the stored entry instead."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


ResponseDecision = PassThrough | Buffer | Freshen | ServeStale


def pass_outcome(forward: Forward, method: str) -> str:
    """The outcome label of an origin answer passed on unstored: ``bypass`` when the cache
    stepped aside before asking (a body, an unkeyed proxy header), else ``uncacheable``
    (a GET whose answer may not be stored) or ``miss`` (a HEAD)."""
    if forward.fwd == "bypass":
        return "bypass"
    return "uncacheable" if method == "GET" else "miss"


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

