"""The few questions the CDN layer asks of Cache-Control style fields.

Parsing and formatting are the shared ones of :mod:`scalekit.headers` (case-insensitive
directives, duplicates and invalid delta-seconds read as stale, per RFC 9111 §4.2.1), so the
cache layer and this layer never disagree about what a header says.

>>> directives = parse_cache_control("Public, MAX-AGE=60")
>>> directives.public, directives.max_age
(True, 60)
>>> is_shared_storable(parse_cache_control('private="set-cookie"'))
True
"""

from __future__ import annotations

from collections.abc import Iterable

from ..headers import CacheControl, format_cache_control, parse_cache_control

__all__ = [
    "TARGETED_FIELDS",
    "CacheControl",
    "format_cache_control",
    "is_shared_storable",
    "joined_field",
    "parse_cache_control",
    "shared_max_age",
]

# Fields a CDN reads instead of Cache-Control when present: RFC 9213 CDN-Cache-Control, and
# Surrogate-Control (Edge Architecture Specification 1.0), honoured by Fastly, Akamai, Varnish.
TARGETED_FIELDS = ("cdn-cache-control", "surrogate-control")


def joined_field(headers: Iterable[tuple[str, str]], name: str) -> str | None:
    """All lines of field ``name`` (lower-case) joined with ", " (RFC 9110 §5.3), or None."""
    values = [value for key, value in headers if key == name]
    if not values:
        return None
    return values[0] if len(values) == 1 else ", ".join(values)


def is_shared_storable(directives: CacheControl) -> bool:
    """False when the directives forbid every shared cache to store the response.

    RFC 9111 §5.2.2.5 ``no-store``; §5.2.2.7 unqualified ``private``. A qualified
    ``private="field"`` still lets a shared cache store the response without those fields, so
    it counts as storable.
    """
    return not (directives.no_store or directives.private)


def shared_max_age(directives: CacheControl) -> int | None:
    """The freshness a shared cache reads: ``s-maxage`` over ``max-age`` (RFC 9111 §4.2.1)."""
    return directives.s_maxage if directives.s_maxage is not None else directives.max_age
