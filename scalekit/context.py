"""The per-request context: how layers talk to each other and to the app.

The pipeline root creates one :class:`RequestContext` per HTTP request, stores it in the WSGI
environ / ASGI scope under :data:`CONTEXT_KEY` and in a context variable, so the app can call
:func:`tag` or :func:`set_route` without a handle. Layers read and write it; nothing else of a
layer's state is shared.

>>> ctx = RequestContext("GET", "/products/42")
>>> token = activate(ctx)
>>> tag("product:42"); set_route("/products/{id}")
>>> sorted(ctx.tags), ctx.route
(['product:42'], '/products/{id}')
"""

from __future__ import annotations

import contextvars
from typing import Any

__all__ = [
    "CONTEXT_KEY",
    "UNMATCHED_ROUTE",
    "RequestContext",
    "activate",
    "current",
    "deactivate",
    "set_route",
    "tag",
    "wait_budget",
]

CONTEXT_KEY = "scalekit.context"
# The route label until an adapter names the matched template: raw paths would give every
# distinct URL its own Prometheus series.
UNMATCHED_ROUTE = "unmatched"

_current: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar(
    "scalekit_request_context", default=None
)


class RequestContext:
    """What the layers of one request share: route template, tags, tables, timings, state."""

    __slots__ = (
        "__weakref__",
        "db_seconds",
        "method",
        "path",
        "route",
        "state",
        "tables_read",
        "tables_written",
        "tags",
        "waited_seconds",
    )

    def __init__(self, method: str, path: str) -> None:
        self.method = method
        self.path = path
        self.route = UNMATCHED_ROUTE
        self.tags: set[str] = set()
        self.tables_read: set[str] = set()
        self.tables_written: set[str] = set()
        # Time the request's statements took on its pooled connections (the pool adds to it).
        self.db_seconds = 0.0
        # Per-layer scratch space, keyed by layer name ("cache", "pool", ...).
        self.state: dict[str, Any] = {}
        # Time already spent waiting inside scalekit (a coalesced miss waiting for another
        # request's answer); later waits take it off their own timeout (see wait_budget).
        self.waited_seconds = 0.0

    def __repr__(self) -> str:
        return f"RequestContext({self.method} {self.path} route={self.route!r} tags={sorted(self.tags)})"


def activate(ctx: RequestContext) -> contextvars.Token[RequestContext | None]:
    """Make ``ctx`` the current request's context in this thread or task."""
    return _current.set(ctx)


def deactivate(token: contextvars.Token[RequestContext | None]) -> None:
    """Undo :func:`activate` (the ASGI root does this when the request's task is done)."""
    _current.reset(token)


def current() -> RequestContext | None:
    """The context of the request being handled here, or None outside a wrapped request."""
    return _current.get()


def wait_budget(timeout_seconds: float) -> float:
    """What is left of ``timeout_seconds`` for a wait of the current request.

    The time the request already waited inside scalekit (``waited_seconds``: a coalesced miss
    released after waiting for another request) is taken off, so one request's waits never add
    up to more than the longest timeout: a request that waited a second for a coalesced answer
    that did not come waits at most ``pool_timeout_seconds - 1`` for a pooled connection.

    >>> ctx = RequestContext("GET", "/"); token = activate(ctx)
    >>> ctx.waited_seconds = 0.25
    >>> wait_budget(1.0)
    0.75
    >>> deactivate(token)
    """
    ctx = _current.get()
    if ctx is None or not ctx.waited_seconds:
        return timeout_seconds
    return max(0.0, timeout_seconds - ctx.waited_seconds)


def tag(*tags: str) -> None:
    """Tag the current response for cache invalidation, e.g. ``tag("product:42")``.

    Outside a wrapped request this does nothing, so library code may call it unconditionally.
    """
    ctx = _current.get()
    if ctx is not None:
        for value in tags:
            if not isinstance(value, str) or not value:
                raise ValueError(f"cache tags are non-empty strings; got {value!r}")
        ctx.tags.update(tags)


def set_route(template: str) -> None:
    """Name the route template that matched (``/products/{id}``), used as the metrics label."""
    ctx = _current.get()
    if ctx is not None:
        ctx.route = template
