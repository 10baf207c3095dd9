"""The ASGI driver: the pipeline root and the small I/O helpers every ASGI layer shell uses.

Pure ASGI 3 middleware only. A request/response wrapper in the style of Starlette's
``BaseHTTPMiddleware`` would run the app in another task, so context variables set by the app
(the request's pooled connection, its tags) would not flow back, and streaming would buffer.
Non-HTTP scopes go straight to the app: websockets are untouched, and lifespan reaches the
app with the runtime's start-up and shutdown hooks run around it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator, MutableMapping
from typing import Any

from .calls import direct
from .context import CONTEXT_KEY, RequestContext, activate, deactivate
from .messages import Response

__all__ = [
    "DONE",
    "ASGIApp",
    "ASGIRoot",
    "EarlyFirst",
    "EarlyPath",
    "Message",
    "Receive",
    "Scope",
    "Send",
    "context_of",
    "header_value",
    "send_response",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
# A layer's answer to a request without a request context (the cache's plain hits): both
# response messages, or None for the full path.
EarlyPath = Callable[[Scope], tuple[Message, Message] | None]


class _Done:
    """An awaitable with nothing left to do.

    A layer's ``send`` that only looks at a message is a plain function returning the next
    ``send``'s own awaitable (one coroutine per message instead of one per layer per message:
    bench/cache_miss.py); it returns this for a message it drops."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield  # a generator: awaiting it finishes at once


DONE: Awaitable[None] = _Done()


class EarlyFirst:
    """``__call__`` of a layer around the cache's early path (``serve_early``, None: no cache
    inside): a plain hit is answered from it; every other request goes to ``handle``, the layer
    without it. Used wherever the layer is not under a root that asks the early path itself."""

    serve_early: EarlyPath | None
    handle: ASGIApp

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.serve_early is not None and scope["type"] == "http":
            early = self.serve_early(scope)
            if early is not None:
                await send(early[0])
                await send(early[1])
                return
        await self.handle(scope, receive, send)


class ASGIRoot:
    """Outermost ASGI callable returned by :func:`scalekit.wrap`: creates the request context."""

    def __init__(self, app: ASGIApp, chain: ASGIApp, runtime: Any) -> None:
        self.app = app  # the user's app, unwrapped
        self.runtime = runtime
        self._started = False  # a plain attribute: checked on every request
        # An outermost layer that can answer without a request context (the cache's plain
        # hits) is asked first; what it leaves goes to the rest of it, then inward.
        self.serve_early: EarlyPath | None = getattr(chain, "serve_early", None)
        self.chain: ASGIApp = getattr(chain, "handle", chain) if self.serve_early is not None else direct(chain)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            if not self._started:
                # Servers (and test clients) that skip lifespan still get the layers started.
                await self.runtime.astartup()
                self._started = True
            if self.serve_early is not None:
                early = self.serve_early(scope)
                if early is not None:
                    await send(early[0])
                    await send(early[1])
                    return
            ctx = RequestContext(scope["method"], scope["path"])
            scope[CONTEXT_KEY] = ctx
            # Servers run each request in its own task, so this value is private to it; reset
            # anyway so direct calls in one task do not see the previous request's context.
            token = activate(ctx)
            try:
                await self.chain(scope, receive, send)
            finally:
                deactivate(token)
        elif kind == "lifespan":
            await self._lifespan(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Forward lifespan to the app, running the runtime's hooks around the app's own.

        Start-up hooks run before the app sees ``lifespan.startup`` (its handlers may use the
        layers); shutdown hooks after the app has finished its own shutdown. An app that does
        not speak lifespan (raises or returns before reading a message) is answered here.
        """
        runtime = self.runtime
        app_received = False

        async def receive_with_hooks() -> Message:
            nonlocal app_received
            app_received = True
            message = await receive()
            if message["type"] == "lifespan.startup":
                await runtime.astartup()
            return message

        async def send_with_hooks(message: Message) -> None:
            if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                await runtime.ashutdown()
            await send(message)

        try:
            await self.app(scope, receive_with_hooks, send_with_hooks)
        except Exception:
            if app_received:
                raise
        if not app_received:
            await self._own_lifespan(receive, send)

    async def _own_lifespan(self, receive: Receive, send: Send) -> None:
        runtime = self.runtime
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await runtime.astartup()
                except Exception as exc:  # noqa: BLE001  (reported to the server, which exits)
                    await send({"type": "lifespan.startup.failed", "message": repr(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await runtime.ashutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def __repr__(self) -> str:
        return f"<scalekit ASGI wrapper around {self.app!r}>"


def context_of(scope: Scope) -> RequestContext:
    """The request's context, creating one if a layer is used without the root (tests, adapters)."""
    ctx: RequestContext | None = scope.get(CONTEXT_KEY)
    if ctx is None:
        ctx = RequestContext(scope.get("method", "GET"), scope.get("path", ""))
        scope[CONTEXT_KEY] = ctx
        activate(ctx)
    return ctx


async def send_response(send: Send, response: Response, *, head: bool = False) -> None:
    """Send a layer's whole :class:`Response` through ASGI (no body for HEAD)."""
    await send({
        "type": "http.response.start",
        "status": response.status,
        "headers": [(name.encode("latin-1"), value.encode("latin-1")) for name, value in response.headers],
    })
    await send({"type": "http.response.body", "body": b"" if head else response.body})


def header_value(scope: Scope, name: bytes) -> str | None:
    """The first value of request header ``name`` (lower-case bytes), or None."""
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None
