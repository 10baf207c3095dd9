"""Cache-Control (RFC 9111 §5.2) and Surrogate-Control (W3C Edge Architecture) directives:
parsed into frozen values and formatted back, pure (no I/O, no clock).

Every parser takes ``str | None`` and never raises: garbage from the network gives the neutral
value or the most conservative reading. ``parse_cache_control(format_cache_control(d)) == d``.

werkzeug.http does the tokenising (``parse_list_header`` handles quoted strings with commas);
the directive semantics are ours because werkzeug's ``ResponseCacheControl`` maps an invalid
``max-age`` to None ("absent") where RFC 9111 §4.2.1 wants "stale", and keeps qualified
``no-cache="x"`` as a raw string.

>>> directives = parse_cache_control('public, max-age=60, no-cache="set-cookie"')
>>> directives.max_age, directives.public, directives.no_cache_fields
(60, True, ('set-cookie',))
>>> format_cache_control(directives)
'public, no-cache="set-cookie", max-age=60'
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from werkzeug.http import parse_list_header

__all__ = [
    "DELTA_SECONDS_MAX",
    "MEMO_MAX_CHARS",
    "MEMO_SIZE",
    "TOKEN",
    "CacheControl",
    "SurrogateControl",
    "format_cache_control",
    "parse_age",
    "parse_cache_control",
    "parse_delta_seconds",
    "parse_surrogate_control",
]

# RFC 9111 §1.2.2: "If a cache receives a delta-seconds value greater than the greatest integer
# it can represent ... the cache MUST consider the value to be 2147483648 (2^31)".
DELTA_SECONDS_MAX = 2**31

# Parsed values are immutable, so parsers memoise them; bounded in entries and, since values
# come from clients, in bytes: longer values are parsed each time, never remembered.
MEMO_SIZE = 2048
MEMO_MAX_CHARS = 256
TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


@dataclass(frozen=True, slots=True)
class CacheControl:
    """Cache-Control directives (RFC 9111 §5.2), request and response alike.

    Delta-seconds are ints capped at :data:`DELTA_SECONDS_MAX`; ``max_stale`` without a value
    ("any staleness") is :data:`DELTA_SECONDS_MAX`. Qualified ``no-cache="a, b"`` and
    ``private="a"`` keep their lower-case field names, sorted. Unknown directives are kept in
    ``extensions`` (lower-case name, unquoted value) so formatting loses nothing.
    """

    public: bool = False
    private: bool = False
    private_fields: tuple[str, ...] = ()
    no_cache: bool = False
    no_cache_fields: tuple[str, ...] = ()
    no_store: bool = False
    max_age: int | None = None
    s_maxage: int | None = None
    must_revalidate: bool = False
    proxy_revalidate: bool = False
    no_transform: bool = False
    immutable: bool = False
    must_understand: bool = False
    stale_while_revalidate: int | None = None
    stale_if_error: int | None = None
    max_stale: int | None = None
    min_fresh: int | None = None
    only_if_cached: bool = False
    extensions: tuple[tuple[str, str | None], ...] = ()


EMPTY_CACHE_CONTROL = CacheControl()

_FLAGS = {
    "public": "public", "no-store": "no_store", "must-revalidate": "must_revalidate",
    "proxy-revalidate": "proxy_revalidate", "no-transform": "no_transform",
    "immutable": "immutable", "must-understand": "must_understand",
    "only-if-cached": "only_if_cached",
}
_DELTAS = {
    "max-age": "max_age", "s-maxage": "s_maxage", "stale-while-revalidate": "stale_while_revalidate",
    "stale-if-error": "stale_if_error", "max-stale": "max_stale", "min-fresh": "min_fresh",
}
# RFC 9111 §4.2.1: "Caches are encouraged to consider responses that have invalid freshness
# information (e.g., a max-age directive with non-integer content) to be stale", and for
# duplicates "either the first occurrence should be used or the response should be considered
# stale": these directives read as 0 (stale) when invalid or given twice with different values.
_STALE_WHEN_INVALID = frozenset({"max_age", "s_maxage"})
_FIELDS_DIRECTIVES = {"no-cache": ("no_cache", "no_cache_fields"), "private": ("private", "private_fields")}
_FORMAT_ORDER = ("public", "private", "no-cache", "no-store", "max-age", "s-maxage",
                 "must-revalidate", "proxy-revalidate", "no-transform", "immutable",
                 "must-understand", "stale-while-revalidate", "stale-if-error", "max-stale",
                 "min-fresh", "only-if-cached")


def _split_directive(item: str) -> tuple[str, str | None]:
    name, eq, value = item.partition("=")
    if not eq:
        return name.strip().lower(), None
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = re.sub(r"\\(.)", r"\1", value[1:-1])
    return name.strip().lower(), value


def parse_delta_seconds(value: str | None) -> int | None:
    """A delta-seconds value (RFC 9111 §1.2.2), capped at 2^31; None when absent or invalid."""
    if value is None:
        return None
    value = value.strip()
    if not (value.isascii() and value.isdigit()):
        return None
    return min(int(value), DELTA_SECONDS_MAX)


def parse_age(value: str | None) -> int | None:
    """Age in seconds (RFC 9111 §5.1); None when absent or invalid.

    "a cache encountering a message with a list-based Age field value SHOULD use the first
    member of the field value, discarding subsequent ones", and "If the field value (after
    discarding additional members, as per above) is invalid ... a cache SHOULD ignore the
    field". Repeated lines arrive joined with ", ", so they are a list too.
    """
    if value is None:
        return None
    return parse_delta_seconds(value.partition(",")[0])


def _field_names(value: str) -> tuple[str, ...]:
    names = {name.strip().lower() for name in value.split(",")}
    return tuple(sorted(name for name in names if name and TOKEN.match(name)))


def parse_cache_control(value: str | None) -> CacheControl:
    """Parse a Cache-Control field value (several lines joined by commas); never raises.

    Results are memoised (bounded LRU): an app sends the same few values over and over, and
    the result is immutable.
    """
    if not value:
        return EMPTY_CACHE_CONTROL
    if len(value) > MEMO_MAX_CHARS:
        return _read_cache_control(value)
    return _parse_cache_control(value)


def _list_items(value: str) -> list[str]:
    """The members of a comma-separated list; werkzeug's parser when quoted strings need it
    (it reads a character at a time: about 1.5 ms for an 8 KiB value, where split takes µs)."""
    if '"' in value and _quotes_balance(value):
        return parse_list_header(value)
    # No quotes, or a quote left open (a malformed field): werkzeug would read the rest of the
    # field as one quoted string and hide a no-store after it; each comma ends a member instead.
    return [item for item in map(str.strip, value.split(",")) if item]


def _quotes_balance(value: str) -> bool:
    """Whether every quoted string in ``value`` is closed (a backslash escapes one character)."""
    inside = escaped = False
    for char in value:
        if escaped:
            escaped = False
        elif char == "\\" and inside:
            escaped = True
        elif char == '"':
            inside = not inside
    return not inside


def _read_cache_control(value: str) -> CacheControl:
    found: dict[str, object] = {}
    extensions: list[tuple[str, str | None]] = []
    for item in _list_items(value):
        name, argument = _split_directive(item)
        if not name:
            continue
        if name in _FLAGS:
            found[_FLAGS[name]] = True
        elif name in _DELTAS:
            _parse_delta_directive(found, _DELTAS[name], argument)
        elif name in _FIELDS_DIRECTIVES:
            flag, fields_name = _FIELDS_DIRECTIVES[name]
            fields = _field_names(argument) if argument is not None else ()
            if fields:
                merged = set(found.get(fields_name, ())) | set(fields)  # type: ignore[call-overload]
                found[fields_name] = tuple(sorted(merged))
            else:
                found[flag] = True  # unqualified, or qualified with nothing usable: the whole response
        elif TOKEN.match(name):
            extensions.append((name, argument))
    if extensions:
        found["extensions"] = tuple(extensions)
    return CacheControl(**found)  # type: ignore[arg-type]


_parse_cache_control = lru_cache(maxsize=MEMO_SIZE)(_read_cache_control)


def _parse_delta_directive(found: dict[str, object], field_name: str, argument: str | None) -> None:
    if field_name == "max_stale" and argument is None:
        # RFC 9111 §5.2.1.2: "If no value is assigned to max-stale, then the client will accept
        # a stale response of any age."
        seconds: int | None = DELTA_SECONDS_MAX
    else:
        seconds = parse_delta_seconds(argument)
    if seconds is None:
        if field_name in _STALE_WHEN_INVALID:
            found[field_name] = 0
        return
    previous = found.get(field_name)
    if previous is None:
        found[field_name] = seconds
    elif previous != seconds and field_name in _STALE_WHEN_INVALID:
        found[field_name] = 0
    elif previous != seconds:
        # Conflicting request directives: keep the most restrictive (RFC 9111 §4.2.1 "the most
        # restrictive directive should be honored").
        found[field_name] = max(previous, seconds) if field_name == "min_fresh" else min(previous, seconds)  # type: ignore[call-overload]


def _quote(value: str) -> str:
    if value and TOKEN.match(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_cache_control(directives: CacheControl) -> str:
    """The canonical field value for ``directives`` (the inverse of :func:`parse_cache_control`)."""
    parts: list[str] = []
    for name in _FORMAT_ORDER:
        if name in _FLAGS:
            if getattr(directives, _FLAGS[name]):
                parts.append(name)
        elif name in _DELTAS:
            seconds = getattr(directives, _DELTAS[name])
            if seconds is None:
                continue
            if name == "max-stale" and seconds >= DELTA_SECONDS_MAX:
                parts.append(name)
            else:
                parts.append(f"{name}={min(seconds, DELTA_SECONDS_MAX)}")
        else:
            flag, fields_name = _FIELDS_DIRECTIVES[name]
            if getattr(directives, flag):
                parts.append(name)
            fields = getattr(directives, fields_name)
            if fields:
                parts.append(f'{name}="{", ".join(fields)}"')
    for name, argument in directives.extensions:
        parts.append(name if argument is None else f"{name}={_quote(argument)}")
    return ", ".join(parts)


@dataclass(frozen=True, slots=True)
class SurrogateControl:
    """The directives of Surrogate-Control (W3C Edge Architecture 1.0) this cache acts on."""

    max_age: int | None = None
    stale_seconds: int | None = None
    no_store: bool = False


def parse_surrogate_control(value: str | None) -> SurrogateControl:
    """Parse Surrogate-Control; directives targeted at a named device (``;name``) are skipped.

    ``max-age=60+30`` means 60 s fresh then 30 s stale (Edge Architecture §2.2). Never raises.
    """
    if not value:
        return _NO_SURROGATE_CONTROL
    if len(value) > MEMO_MAX_CHARS:
        return _read_surrogate_control(value)
    return _parse_surrogate_control(value)


def _read_surrogate_control(value: str) -> SurrogateControl:
    max_age: int | None = None
    stale: int | None = None
    no_store = False
    for item in _list_items(value):
        if ";" in item:
            continue  # targeted at another surrogate
        name, argument = _split_directive(item)
        if name == "no-store":
            no_store = True
        elif name == "max-age" and max_age is None:
            fresh_text, _, stale_text = (argument or "").partition("+")
            # Invalid freshness is stale (RFC 9111 §4.2.1 reasoning applies to surrogates too).
            max_age = parse_delta_seconds(fresh_text)
            max_age = 0 if max_age is None else max_age
            stale = parse_delta_seconds(stale_text) if stale_text else None
    return SurrogateControl(max_age=max_age, stale_seconds=stale, no_store=no_store)


_parse_surrogate_control = lru_cache(maxsize=MEMO_SIZE)(_read_surrogate_control)


_NO_SURROGATE_CONTROL = SurrogateControl()


