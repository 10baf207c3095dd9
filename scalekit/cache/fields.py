"""Structured response fields the cache reads (RFC 8941): Proxy-Status (RFC 9209) and
targeted cache control such as CDN-Cache-Control (RFC 9213).

Pure parsers over ``str | None`` that never raise; the structured-field grammar is left to
``http_sf`` (the reference implementation), because these fields' error handling differs from
Cache-Control's: a value that does not parse is ignored whole.

>>> proxy_status_error("edge; received-status=200, scalekit; error=connection_refused")
'connection_refused'
>>> proxy_status_error("scalekit; error=") is None
True
>>> parse_targeted('max-age=600, private="x-user"').max_age
600
>>> parse_targeted("max-age=600,,") is None      # invalid: the whole field is ignored
True
"""

from __future__ import annotations

import re
from functools import lru_cache

import http_sf

from ..headers import CacheControl, parse_cache_control

__all__ = ["UNREACHABLE_ERRORS", "parse_targeted", "proxy_status_error"]

MEMO_SIZE = 256
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")

# RFC 9209 §2.3 error types that say the next hop could not be reached or gave no usable
# response: for RFC 9111 §4.2.4 the cache is then "disconnected" from the origin.
UNREACHABLE_ERRORS = frozenset({
    "dns_timeout", "dns_error", "destination_not_found", "destination_unavailable",
    "destination_ip_unroutable", "connection_refused", "connection_terminated",
    "connection_timeout", "connection_read_timeout", "connection_write_timeout",
    "connection_limit_reached", "tls_protocol_error", "tls_certificate_error",
    "http_response_incomplete", "http_response_timeout", "http_protocol_error",
})


def proxy_status_error(value: str | None) -> str | None:
    """The ``error`` parameter of the last Proxy-Status member (the hop nearest to us), or None.

    RFC 9209 §2: the field is a List; "the last member represents the intermediary closest to
    the user agent", and ``error`` (§2.1.1) is a Token naming what went wrong there.
    """
    if not value:
        return None
    return _proxy_status_error(value)


@lru_cache(maxsize=MEMO_SIZE)
def _proxy_status_error(value: str) -> str | None:
    try:
        members = http_sf.parse(value.encode("latin-1"), tltype="list")
    except (http_sf.StructuredFieldError, UnicodeEncodeError, ValueError):
        return None
    if not isinstance(members, list) or not members:
        return None
    last = members[-1]
    if not isinstance(last, tuple) or len(last) != 2 or not isinstance(last[1], dict):
        return None
    error = last[1].get("error")
    return str(error) if isinstance(error, http_sf.Token) else None


# RFC 9213 §2.2: a cache that uses a targeted field "MUST implement the semantics of" max-age,
# must-revalidate, no-store, no-cache and private, and "SHOULD implement other cache directives
# ... that they support in the Cache-Control response header field": these are ours.
_TARGETED_FLAGS = frozenset({"public", "no-store", "must-revalidate", "proxy-revalidate",
                             "no-transform", "immutable", "must-understand"})
_TARGETED_DELTAS = frozenset({"max-age", "s-maxage", "stale-while-revalidate", "stale-if-error"})
_TARGETED_FIELD_LISTS = frozenset({"private", "no-cache"})


def parse_targeted(value: str | None) -> CacheControl | None:
    """The directives of a targeted field (RFC 9213 §2.1), or None when it must be ignored.

    "If a targeted field in a given response is empty, or a parsing error is encountered, that
    field MUST be ignored by the cache". Members are RFC 8941 Dictionary members; a directive
    whose value has the wrong type (a decimal max-age, a token for no-store) is not consumed
    ("Implementations SHOULD NOT consume values that violate these inferred constraints"),
    and "unrecognized extension directives are ignored".
    """
    if not value:
        return None
    return _parse_targeted(value)


@lru_cache(maxsize=MEMO_SIZE)
def _parse_targeted(value: str) -> CacheControl | None:
    try:
        members = http_sf.parse(value.encode("latin-1"), tltype="dictionary")
    except (http_sf.StructuredFieldError, UnicodeEncodeError, ValueError):
        return None
    if not isinstance(members, dict) or not members:
        return None
    parts: list[str] = []
    for name, member in members.items():
        item = member[0] if isinstance(member, tuple) else None  # an inner list is no directive
        if name in _TARGETED_DELTAS:
            if isinstance(item, int) and not isinstance(item, bool) and item >= 0:
                parts.append(f"{name}={item}")
        elif name in _TARGETED_FLAGS:
            if item is True:
                parts.append(name)
        elif name in _TARGETED_FIELD_LISTS:
            if item is True:
                parts.append(name)
            elif isinstance(item, str) and not isinstance(item, http_sf.Token):
                # Only field names are kept, so no quote or comma of the String can escape it.
                names = [field.strip() for field in item.split(",") if _TOKEN.match(field.strip())]
                parts.append(f'{name}="{", ".join(names)}"' if names else name)
    # Written back as Cache-Control syntax, so both fields mean the same through one parser.
    return parse_cache_control(", ".join(parts))
