"""Structured response fields the cache reads (RFC 8941): Proxy-Status (RFC 9209).

Pure parsers over ``str | None`` that never raise; the structured-field grammar is left to
``http_sf`` (the reference implementation), because these fields' error handling differs from
Cache-Control's: a value that does not parse is ignored whole.

>>> proxy_status_error("edge; received-status=200, scalekit; error=connection_refused")
'connection_refused'
>>> proxy_status_error("scalekit; error=") is None
True
"""

from __future__ import annotations

from functools import lru_cache

import http_sf

__all__ = ["UNREACHABLE_ERRORS", "proxy_status_error"]

MEMO_SIZE = 256

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
