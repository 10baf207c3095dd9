"""I/O helpers of the cache layer's ASGI shell: request views over the scope, header encoding
cached per entry, whole responses sent (:mod:`.asgi_exchange` carries an origin call's)."""

from __future__ import annotations

from .. import asgi
from .decisions import SPECIAL_REQUEST_HEADERS, UNPLAIN_REQUEST_HEADERS, RequestView, Serve

__all__ = [
    "SPECIAL_HEADER_NAMES",
    "UNPLAIN_HEADER_NAMES",
    "HeaderEncoder",
    "ScopeHeaders",
    "discard_message",
    "encode_headers",
    "request_view",
    "send_served",
    "send_whole",
    "with_header",
]

SPECIAL_HEADER_NAMES = frozenset(name.encode("latin-1") for name in SPECIAL_REQUEST_HEADERS)
UNPLAIN_HEADER_NAMES = frozenset(name.encode("latin-1") for name in UNPLAIN_REQUEST_HEADERS)
_NAME_BYTES: dict[str, bytes] = {}


class ScopeHeaders:
    """Request headers by lower-case name over the scope's raw pairs (decoded on demand).

    ASGI header names are lower-case bytes; several lines with one name are joined with ", "
    (RFC 9110 §5.3).
    """

    __slots__ = ("raw",)

    def __init__(self, pairs: list[tuple[bytes, bytes]]) -> None:
        raw = dict(pairs)
        if len(raw) != len(pairs):  # repeated names: join them (rare)
            raw = {}
            for name, value in pairs:
                raw[name] = raw[name] + b", " + value if name in raw else value
        self.raw = raw

    def get(self, name: str) -> str | None:
        key = _NAME_BYTES.get(name)
        if key is None:
            key = name.encode("latin-1")
            if len(_NAME_BYTES) < 1024:
                _NAME_BYTES[name] = key
        value = self.raw.get(key)
        return None if value is None else value.decode("latin-1")


def request_view(scope: asgi.Scope) -> RequestView:
    """The policy's view of an ASGI request."""
    headers = ScopeHeaders(scope.get("headers") or [])
    host_bytes = headers.raw.get(b"host")
    if host_bytes is not None:
        host: str | None = host_bytes.decode("latin-1")
    elif scope.get("server"):
        server_host, server_port = scope["server"][:2]
        default_port = {"http": 80, "https": 443}.get(scope.get("scheme", "http"))
        host = f"{server_host}:{server_port}" if server_port and server_port != default_port else str(server_host)
    else:
        host = None
    return RequestView(scope.get("method", "GET"), scope.get("scheme", "http"), host,
                       scope.get("path", ""), scope.get("query_string", b"").decode("latin-1"),
                       headers.get, not SPECIAL_HEADER_NAMES.isdisjoint(headers.raw))


def encode_headers(headers: tuple[tuple[str, str], ...]) -> list[tuple[bytes, bytes]]:
    return [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers]


_ENCODED_LIMIT = 4096


class HeaderEncoder:
    """Stored header tuples encoded to ASGI bytes once per entry, not once per hit.

    Keyed by ``id()`` and holding the tuple itself, so an id is never reused while cached.
    Every hit gets a new list: outer middleware may append to ``message["headers"]``.
    """

    def __init__(self) -> None:
        self._encoded: dict[int, tuple[tuple[tuple[str, str], ...], list[tuple[bytes, bytes]]]] = {}

    def serve(self, decision: Serve) -> list[tuple[bytes, bytes]]:
        base = decision.base
        if not base:
            return encode_headers(decision.headers)
        cached = self._encoded.get(id(base))
        if cached is None or cached[0] is not base:
            if len(self._encoded) >= _ENCODED_LIMIT:
                self._encoded.clear()
            cached = self._encoded[id(base)] = (base, encode_headers(base))
        return cached[1] + encode_headers(decision.headers[len(base):])


async def send_whole(send: asgi.Send, status: int, headers: tuple[tuple[str, str], ...], body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": encode_headers(headers)})
    await send({"type": "http.response.body", "body": body})


async def send_served(send: asgi.Send, decision: Serve, encoder: HeaderEncoder) -> None:
    await send({"type": "http.response.start", "status": decision.status,
                "headers": encoder.serve(decision)})
    await send({"type": "http.response.body", "body": decision.body})


async def discard_message(message: asgi.Message) -> None:
    return None


def with_header(send: asgi.Send, header: tuple[str, str]) -> asgi.Send:
    """``send`` that adds ``header`` to the response the app starts."""
    encoded = (header[0].encode("latin-1"), header[1].encode("latin-1"))

    async def send_with_header(message: asgi.Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", ()), encoded]}
        await send(message)

    return send_with_header
