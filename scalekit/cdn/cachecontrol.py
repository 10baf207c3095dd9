"""Reading Cache-Control style fields the way a shared cache must, on top of werkzeug.

werkzeug's ``ResponseCacheControl`` is the value type and formatter. Parsing goes through
``parse_list_header`` here rather than ``parse_cache_control_header`` for two RFC 9111
reasons werkzeug does not follow: "Cache directives are case-insensitive" (§5.2), so
``PRIVATE`` and ``Max-Age=5`` must count; and a directive given twice with different values
(``max-age=5, max-age=700``) may not take the last one (§4.2.1: "either the first occurrence
should be used or the response should be considered stale"); the smaller value is kept, which is
never less safe than either rule.

>>> directives = parse_cache_control("Public, MAX-AGE=60, max-age=5")
>>> directives.public, directives.max_age
(True, 5)
>>> is_shared_storable(parse_cache_control('private="set-cookie"'))
True
"""

from __future__ import annotations

from collections.abc import Iterable

from werkzeug.datastructures import ResponseCacheControl
from werkzeug.http import parse_list_header, unquote_header_value

__all__ = [
    "TARGETED_FIELDS",
    "is_shared_storable",
    "joined_field",
    "parse_cache_control",
    "shared_max_age",
]

# Fields a CDN reads instead of Cache-Control when present: RFC 9213 CDN-Cache-Control, and
# Surrogate-Control (Edge Architecture Specification 1.0), honoured by Fastly, Akamai, Varnish.
TARGETED_FIELDS = ("cdn-cache-control", "surrogate-control")

_SECONDS_DIRECTIVES = frozenset({"max-age", "s-maxage", "stale-while-revalidate", "stale-if-error"})


def parse_cache_control(value: str | None) -> ResponseCacheControl:
    """The directives of a Cache-Control (or CDN-Cache-Control) value; garbage gives empty."""
    directives: dict[str, str | None] = {}
    if not value:
        return ResponseCacheControl(directives)
    for item in parse_list_header(value):
        name, equals, argument = item.partition("=")
        name = name.strip().lower()
        if not name:
            continue
        parsed = unquote_header_value(argument.strip()) if equals else None
        if name in _SECONDS_DIRECTIVES and name in directives:
            parsed = _smaller(directives[name], parsed)
        directives[name] = parsed
    return ResponseCacheControl(directives)


def _smaller(first: str | None, second: str | None) -> str | None:
    try:
        return str(min(int(first or ""), int(second or "")))
    except ValueError:
        return "0"  # an unreadable duplicate: §4.2.1 "considered stale"


def joined_field(headers: Iterable[tuple[str, str]], name: str) -> str | None:
    """All lines of field ``name`` (lower-case) joined with ", " (RFC 9110 §5.3), or None."""
    values = [value for key, value in headers if key == name]
    if not values:
        return None
    return values[0] if len(values) == 1 else ", ".join(values)


def is_shared_storable(directives: ResponseCacheControl) -> bool:
    """False when the directives forbid every shared cache to store the response.

    RFC 9111 §5.2.2.5 ``no-store``; §5.2.2.7 unqualified ``private``. A qualified
    ``private="field"`` still lets a shared cache store the response without those fields, so
    it counts as storable.
    """
    if directives.no_store:
        return False
    return directives.private is not True


def shared_max_age(directives: ResponseCacheControl) -> int | None:
    """The freshness a shared cache reads: ``s-maxage`` over ``max-age`` (RFC 9111 §4.2.1)."""
    value = directives.s_maxage if directives.s_maxage is not None else directives.max_age
    return None if value is None else max(0, int(value))
