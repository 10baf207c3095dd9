"""Akamai EdgeGrid request signing (``EG1-HMAC-SHA256``), written from Akamai's client
authentication specification; pure: the timestamp and nonce are arguments.

The steps, as the specification gives them:

1. ``timestamp`` is UTC as ``yyyyMMddTHH:mm:ss+0000``; ``nonce`` a random unique string.
2. The unsigned header is ``EG1-HMAC-SHA256 client_token=..;access_token=..;timestamp=..;nonce=..;``.
3. The signing key is ``base64(HMAC-SHA256(key=client_secret, message=timestamp))``.
4. The data to sign joins with tabs: the method in upper case, the scheme and host in lower
   case, the path with its query, the signed headers (``name:value`` with the value's runs of
   whitespace folded to one space, tab-separated), the content hash
   (``base64(SHA-256(body))`` of a POST body, its first ``max_body`` bytes; empty otherwise),
   and the unsigned header.
5. The signature is ``base64(HMAC-SHA256(key=signing key, message=data))``, appended to the
   unsigned header as ``signature=...``.

>>> edgegrid_timestamp(0.0)
'19700101T00:00:00+0000'
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

__all__ = ["ALGORITHM", "DEFAULT_MAX_BODY_BYTES", "edgegrid_authorization", "edgegrid_timestamp"]

ALGORITHM = "EG1-HMAC-SHA256"
# The body size Akamai's API clients hash by default (larger bodies are hashed truncated);
# Fast Purge bodies are at most 50,000 bytes, so theirs are always hashed whole.
DEFAULT_MAX_BODY_BYTES = 131072


def edgegrid_timestamp(now: float) -> str:
    """``now`` (Unix time) in EdgeGrid's timestamp format."""
    return time.strftime("%Y%m%dT%H:%M:%S+0000", time.gmtime(now))


def _hmac_base64(key: str, message: str) -> str:
    digest = hmac.new(key.encode("utf-8"), message.encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def edgegrid_authorization(
    *,
    method: str,
    url: str,
    body: bytes,
    client_token: str,
    client_secret: str,
    access_token: str,
    timestamp: str,
    nonce: str,
    headers: Mapping[str, str] | None = None,
    headers_to_sign: Sequence[str] = (),
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> str:
    """The ``Authorization`` header value for one request (see the module docstring)."""
    parts = urlsplit(url)
    unsigned = (f"{ALGORITHM} client_token={client_token};access_token={access_token};"
                f"timestamp={timestamp};nonce={nonce};")
    relative = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    given = {name.lower(): value for name, value in (headers or {}).items()}
    signed_headers = "\t".join(
        f"{name.lower()}:{' '.join(given[name.lower()].split())}"
        for name in headers_to_sign if name.lower() in given)
    content_hash = ""
    if method.upper() == "POST" and body:
        content_hash = base64.b64encode(hashlib.sha256(body[:max_body_bytes]).digest()).decode("ascii")
    fields = [method.upper(), parts.scheme.lower(), parts.netloc.lower(), relative, signed_headers,
              content_hash, unsigned]
    data = "\t".join(fields)
    signing_key = _hmac_base64(client_secret, timestamp)
    return unsigned + "signature=" + _hmac_base64(signing_key, data)
