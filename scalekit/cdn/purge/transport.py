"""Sending one :class:`~.calls.Call` over HTTP (stdlib ``http.client``), nothing else.

A new connection per call: purges are rare next to requests, and a fresh connection never
trips over one the vendor closed while idle. The certificate of an ``https`` API is verified
against the system's trust store. Headers (which carry the credentials) are never logged and
never part of an exception raised here.
"""

from __future__ import annotations

import http.client
import ssl
from urllib.parse import urlsplit

from .calls import Call, Reply

__all__ = ["MAX_REPLY_BYTES", "TRANSPORT_ERRORS", "send"]

# A purge reply is a short JSON document; more is not read.
MAX_REPLY_BYTES = 65536
TRANSPORT_ERRORS = (OSError, http.client.HTTPException)

_TLS = ssl.create_default_context()


def send(call: Call, *, timeout_seconds: float) -> Reply:
    """Send ``call`` and return the reply; raises one of :data:`TRANSPORT_ERRORS` when no
    reply came (refused, reset, timed out, TLS failure)."""
    parts = urlsplit(call.url)
    https = parts.scheme == "https"
    port = parts.port or (443 if https else 80)
    connection: http.client.HTTPConnection
    if https:
        connection = http.client.HTTPSConnection(parts.hostname or "", port,
                                                 timeout=timeout_seconds, context=_TLS)
    else:
        connection = http.client.HTTPConnection(call.connect_to or parts.hostname or "", port,
                                                timeout=timeout_seconds)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        connection.putrequest(call.method, target, skip_host=True, skip_accept_encoding=True)
        names = {name.lower() for name, _ in call.headers}
        if "host" not in names:
            connection.putheader("Host", parts.netloc)
        for name, value in call.headers:
            connection.putheader(name, value)
        if call.body or call.method in ("POST", "PUT"):
            connection.putheader("Content-Length", str(len(call.body)))
        connection.endheaders(call.body or None)
        response = connection.getresponse()
        body = response.read(MAX_REPLY_BYTES)
        headers = {name.lower(): value for name, value in response.getheaders()}
        return Reply(status=response.status, headers=headers, body=body)
    finally:
        connection.close()
