"""Installing scalekit on a Starlette or FastAPI app: ``add_middleware`` or ``wrap``.

Both give the same pipeline; they differ in where it sits:

- ``app.add_middleware(ScaleKitMiddleware, **settings)`` puts it inside Starlette's own stack
  (after its ServerErrorMiddleware), so the object you serve is still your FastAPI app;
- ``app = scalekit_fastapi.wrap(app, **settings)`` puts it outside, so a cache hit never even
  enters Starlette: the faster form (about 4x per hit in process), since every request first
  runs the middleware Starlette and FastAPI put before any added one. ``scalekit.wrap(app)`` is the same minus the
  route labels (metrics then
  count every request under ``unmatched``; the adapter is what knows Starlette's routes).

>>> from fastapi import FastAPI
>>> app = FastAPI()
>>> app.add_middleware(ScaleKitMiddleware, cache={"enabled": False})
"""

from __future__ import annotations

from typing import Any

import scalekit
from scalekit import asgi

from .routes import RouteTemplates

__all__ = ["ScaleKitMiddleware", "wrap"]


def wrap(app: Any, **settings: Any) -> Any:
    """``scalekit.wrap(app)`` plus the route-template labels; returns an ASGI app.

    >>> from starlette.applications import Starlette
    >>> app = wrap(Starlette(), pool=False)
    """
    return scalekit.wrap(RouteTemplates(app), kind="asgi", **settings)


class ScaleKitMiddleware:
    """Starlette middleware class running the whole scalekit pipeline: ``app.add_middleware``.

    Starlette builds its middleware stack when the app first receives a message (lifespan
    start-up under a server), so the configuration is loaded then; ``runtime`` is the
    pipeline's :class:`scalekit.Runtime`.
    """

    # Tells `scalekit serve` that an app listing this middleware is already wrapped.
    scalekit_installed = True

    def __init__(self, app: asgi.ASGIApp, **settings: Any) -> None:
        self.app = app
        self.pipeline = wrap(app, **settings)
        self.runtime: scalekit.Runtime = self.pipeline.runtime

    async def __call__(self, scope: asgi.Scope, receive: asgi.Receive, send: asgi.Send) -> None:
        await self.pipeline(scope, receive, send)
