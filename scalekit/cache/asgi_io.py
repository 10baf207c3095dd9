"""I/O helpers of the cache layer's ASGI shell: request views over the scope, header encoding
cached per entry, and :class:`Exchange`, which carries one origin call's response messages."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, assert_never

from .. import asgi
from ..context import CONTEXT_KEY, UNMATCHED_ROUTE
from .decisions import (
    SPECIAL_REQUEST_HEADERS,
    Buffer,
    Forward,
    Freshen,
    PassThrough,
    RequestView,
    Serve,
    ServeStale,
)
from .entry import CachedEntry
from .rules import rule_of

if TYPE_CHECKING:
    from .asgi import ASGICache

__all__ = [
    "SPECIAL_HEADER_NAMES",
    "Exchange",
    "HeaderEncoder",
    "ScopeHeaders",
    "discard_message",
    "encode_headers",
    "request_view",
    "restore_route",
    "route_of",
    "send_served",
    "send_whole",
    "with_header",
]

SPECIAL_HEADER_NAMES = frozenset(name.encode("latin-1") for name in SPECIAL_REQUEST_HEADERS)
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


def route_of(ctx: Any) -> str:
    return ctx.route if ctx is not None and ctx.route != UNMATCHED_ROUTE else ""


def restore_route(scope: asgi.Scope, route: str) -> None:
    ctx = scope.get(CONTEXT_KEY)
    if ctx is not None:
        ctx.route = route


async def send_served(send: asgi.Send, decision: Serve, encoder: HeaderEncoder) -> None:
    await send({"type": "http.response.start", "status": decision.status,
                "headers": encoder.serve(decision)})
    await send({"type": "http.response.body", "body": decision.body})


async def discard_message(message: asgi.Message) -> None:
    return None


class Exchange:
    """One origin call: holds the response start until the policy decides, then passes
    messages through, collects the body to store it, or swallows it (304, stale-if-error)."""

    __slots__ = ("background", "chunks", "ctx", "decision", "downstream", "entry_key", "forward",
                 "index", "key", "mode", "request_time", "shell", "since", "size", "start_message",
                 "started", "status", "uri_mark", "view")

    def __init__(self, shell: ASGICache, downstream: asgi.Send, view: RequestView, key: str,
                 forward: Forward, index: CachedEntry | None, entry_key: str, since: int,
                 ctx: Any, background: bool) -> None:
        self.shell = shell
        self.downstream = downstream
        self.view = view
        self.key = key
        self.forward = forward
        self.index = index
        self.entry_key = entry_key
        self.since = since
        self.uri_mark = shell.core.recent.mark()
        self.ctx = ctx
        self.background = background
        self.request_time = shell.clock()
        self.started = False
        self.mode = "start"
        self.status = 500
        self.decision: Any = None
        self.chunks: list[bytes] = []
        self.size = 0
        self.start_message: asgi.Message = {}

    def count(self, outcome: str) -> None:
        if not self.background:
            self.shell.core.count(outcome)

    async def send(self, message: asgi.Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            await self._start(message)
        elif kind == "http.response.body" and self.mode == "buffer":
            await self._collect(message)
        elif self.mode == "pass":
            await self.downstream(message)
        elif self.mode == "buffer":
            # Trailers or an extension message: not a plain body, so it is not stored.
            await self._flush_unstored(more_body=True)
            await self.downstream(message)
        # mode "discard" (answered from the stored entry) or "done": drop the message

    async def _start(self, message: asgi.Message) -> None:
        shell = self.shell
        self.status = status = message["status"]
        headers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in message.get("headers", ())]
        self.decision = decision = shell.policy.decide_response(
            self.view, self.forward, status, headers, now=shell.clock(),
            request_time=self.request_time, rule=rule_of(self.ctx))
        match decision:
            case PassThrough():
                if decision.delete_stored:
                    await shell.store.adelete(self.entry_key)
                self.count("uncacheable" if self.view.method == "GET" else "miss")
                self.mode = "pass"
                self.started = True
                await self.downstream({**message, "headers": encode_headers(decision.headers)})
            case Buffer():
                self.mode = "buffer"
                self.start_message = message
                if message.get("trailers"):
                    await self._flush_unstored(more_body=True)
            case Freshen() | ServeStale():
                self.mode = "discard"
            case _:
                assert_never(decision)

    async def _collect(self, message: asgi.Message) -> None:
        chunk = message.get("body", b"")
        if chunk:
            self.chunks.append(chunk)
            self.size += len(chunk)
        more = message.get("more_body", False)
        if self.size > self.shell.core.max_body_bytes:
            await self._flush_unstored(more_body=more)  # too large: stream the rest untouched
        elif not more:
            await self._store_and_answer()

    async def _flush_unstored(self, *, more_body: bool) -> None:
        self.count("uncacheable")
        self.mode = "pass"
        self.started = True
        await self.downstream({**self.start_message, "headers": encode_headers(self.decision.pass_headers)})
        await self.downstream({"type": "http.response.body", "body": b"".join(self.chunks),
                               "more_body": more_body})
        self.chunks = []

    async def _store_and_answer(self) -> None:
        shell, core, policy = self.shell, self.shell.core, self.shell.policy
        plan = self.decision.plan
        self.mode = "done"
        data = b"".join(self.chunks)
        stamp = await shell.generations.astamp(core.tags_for(self.ctx, plan, self.view, self.key), self.since)
        entry = None
        if stamp is not None and core.recent.allows(self.key, self.uri_mark):  # invariant 2
            entry = policy.responses.complete(plan, data, stamp, route_of(self.ctx))
        if entry is not None:
            await core.astore_entry(self.key, entry, self.index, self.uri_mark)
        self.count("miss")
        status, headers, body = policy.stored_miss_response(
            self.view, self.forward, self.status, entry, self.decision.pass_headers, data,
            now=shell.clock())
        self.started = True
        await send_whole(self.downstream, status, headers, body)

    async def finish(self) -> None:
        """After the app returned: answer from the stored entry if that was the decision."""
        decision = self.decision
        if self.mode == "buffer":
            await self._flush_unstored(more_body=False)  # the app ended without a final body
        elif isinstance(decision, Freshen):
            shell, core = self.shell, self.shell.core
            if decision.entry is not None:
                await core.astore_entry(self.key, decision.entry, self.index, self.uri_mark)
            else:
                await shell.store.adelete(self.entry_key)
            self.count("revalidated")
            await send_whole(self.downstream, decision.status, decision.headers, decision.body)
        elif isinstance(decision, ServeStale):
            self.count("stale")
            await send_whole(self.downstream, decision.status, decision.headers, decision.body)


def with_header(send: asgi.Send, header: tuple[str, str]) -> asgi.Send:
    """``send`` that adds ``header`` to the response the app starts."""
    encoded = (header[0].encode("latin-1"), header[1].encode("latin-1"))

    async def send_with_header(message: asgi.Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", ()), encoded]}
        await send(message)

    return send_with_header
