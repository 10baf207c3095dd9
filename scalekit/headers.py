"""Pure header parsing and formatting for the cache and CDN layers (no I/O, no clock):
HTTP dates, field lists, Vary, cache tags, hop-by-hop fields; Cache-Control and
Surrogate-Control live in :mod:`scalekit.directives` (re-exported here).

Every parser takes ``str | None`` and returns a typed value; garbage from the network gives the
neutral value (``None``, empty, or the most conservative reading) and never raises.

>>> parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT")
784111777.0
>>> parse_http_date("0") is None      # RFC 9111 §5.3: invalid Expires means already expired
True
"""

from __future__ import annotations

import calendar
import re
from email.utils import formatdate
from functools import lru_cache

from .directives import (
    DELTA_SECONDS_MAX,
    MEMO_SIZE,
    TOKEN,
    CacheControl,
    SurrogateControl,
    format_cache_control,
    parse_age,
    parse_cache_control,
    parse_delta_seconds,
    parse_surrogate_control,
)

__all__ = [
    "DELTA_SECONDS_MAX",
    "HOP_BY_HOP",
    "CacheControl",
    "SurrogateControl",
    "format_cache_control",
    "format_http_date",
    "hop_by_hop_names",
    "parse_age",
    "parse_cache_control",
    "parse_delta_seconds",
    "parse_http_date",
    "parse_list",
    "parse_surrogate_control",
    "parse_tags",
    "parse_vary",
]

# RFC 9110 §7.6.1: Connection and the fields it names are hop-by-hop; these are the ones the
# RFCs name (Proxy-Connection and Keep-Alive are legacy but still seen).
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "te", "transfer-encoding", "upgrade",
    "trailer", "proxy-authenticate", "proxy-authorization",
})


# ---------------------------------------------------------------------------------- dates

# RFC 9110 §5.6.7: "A recipient that parses a timestamp value in an HTTP field MUST accept all
# three HTTP-date formats". We parse exactly those three grammars. werkzeug's parse_date and
# email.utils.parsedate_tz accept much more (numeric zones such as "+0500", missing seconds,
# two-digit years in IMF form, "GMT" optional), so they would read an invalid Expires as a real
# date, while RFC 9111 §5.3 says "A cache recipient MUST interpret invalid date formats,
# especially the value "0", as representing a time in the past (i.e., "already expired")".
_MONTHS = {m: i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), start=1)}
_MONTH = "(" + "|".join(_MONTHS) + ")"
_TIME = r"(\d{2}):(\d{2}):(\d{2})"
_IMF_FIXDATE = re.compile(rf"^(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), (\d{{2}}) {_MONTH} (\d{{4}}) {_TIME} GMT$")
_RFC850_DATE = re.compile(
    rf"^(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday), (\d{{2}})-{_MONTH}-(\d{{2}}) {_TIME} GMT$")
_ASCTIME_DATE = re.compile(rf"^(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) {_MONTH} ( \d|\d{{2}}) {_TIME} (\d{{4}})$")


def parse_http_date(value: str | None) -> float | None:
    """Seconds since the epoch for a strictly valid HTTP-date, else None (RFC 9110 §5.6.7).

    rfc850-date's two-digit years 70..99 are 19xx and 00..69 are 20xx (the POSIX pivot), so the
    function needs no clock.
    """
    if not value or len(value) > 40:
        return None
    return _parse_http_date(value)


@lru_cache(maxsize=MEMO_SIZE)
def _parse_http_date(value: str) -> float | None:
    value = value.strip()
    if (match := _IMF_FIXDATE.match(value)) is not None:
        day, month, year, hour, minute, second = match.groups()
    elif (match := _ASCTIME_DATE.match(value)) is not None:
        month, day, hour, minute, second, year = match.groups()
    elif (match := _RFC850_DATE.match(value)) is not None:
        day, month, short_year, hour, minute, second = match.groups()
        year = str(int(short_year) + (1900 if int(short_year) >= 70 else 2000))
    else:
        return None
    return _timestamp(int(year), _MONTHS[month], int(day), int(hour), int(minute), int(second))


def _timestamp(year: int, month: int, day: int, hour: int, minute: int, second: int) -> float | None:
    if year < 1 or hour > 23 or minute > 59 or second > 60:
        return None
    if not 1 <= day <= calendar.monthrange(year, month)[1]:
        return None
    # RFC 9110 §5.6.7 allows second 60 (leap second); the epoch count treats it as :59.
    return float(calendar.timegm((year, month, day, hour, minute, min(second, 59), 0, 0, 0)))


def format_http_date(timestamp: float) -> str:
    """IMF-fixdate for ``timestamp`` (RFC 9110 §5.6.7), e.g. ``Sun, 06 Nov 1994 08:49:37 GMT``."""
    return formatdate(int(timestamp), usegmt=True)


# ---------------------------------------------------------------------------------- lists


def parse_list(value: str | None) -> tuple[str, ...]:
    """A comma-separated list of tokens (Connection, Vary), lower-cased, de-duplicated, in order."""
    if not value:
        return ()
    seen: dict[str, None] = {}
    for item in value.split(","):
        name = item.strip().lower()
        if name and (name == "*" or TOKEN.match(name)):
            seen.setdefault(name, None)
    return tuple(seen)


@lru_cache(maxsize=MEMO_SIZE)
def parse_vary(value: str | None) -> tuple[str, ...]:
    """Vary's field names (RFC 9110 §12.5.5), lower-case; ``("*",)`` if any member is ``*``.

    RFC 9111 §4.1: "A stored response with a Vary header field value containing a member "*"
    always fails to match", so the star swallows the rest. Names are sorted so the same set in
    any order or case gives the same secondary key.
    """
    names = parse_list(value)
    if "*" in names:
        return ("*",)
    return tuple(sorted(names))


def hop_by_hop_names(connection: str | None) -> frozenset[str]:
    """The hop-by-hop field names of a message: the fixed ones and those Connection lists."""
    listed = parse_list(connection)
    return HOP_BY_HOP.union(listed) if listed else HOP_BY_HOP


def parse_tags(surrogate_key: str | None, cache_tag: str | None) -> tuple[str, ...]:
    """Cache tags from ``Surrogate-Key`` (space-separated) and ``Cache-Tag`` (comma-separated)."""
    if not surrogate_key and not cache_tag:
        return ()
    tags: dict[str, None] = {}
    for tag in (surrogate_key or "").split():
        tags.setdefault(tag, None)
    for tag in (cache_tag or "").split(","):
        tag = tag.strip()
        if tag:
            tags.setdefault(tag, None)
    return tuple(tags)
