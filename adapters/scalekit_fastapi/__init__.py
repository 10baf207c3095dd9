"""scalekit for FastAPI and Starlette: two lines, and the request's pooled connection as a dependency.

>>> from fastapi import FastAPI
>>> from scalekit_fastapi import ScaleKitMiddleware
>>> app = FastAPI()
>>> app.add_middleware(ScaleKitMiddleware)      # or: app = scalekit_fastapi.wrap(app)

Endpoints then take ``connection: DB`` (or ``Depends(db)``), use ``@cached(...)`` or
``Depends(cache_for(...))``, ``tag(...)`` and ``await ainvalidate(...)``; the metrics route
label is the matched route's template, mounts and router prefixes included.
"""

from __future__ import annotations

from scalekit import ainvalidate, invalidate, tag

from .dependencies import DB, cache_for, cached, database, db
from .middleware import ScaleKitMiddleware, wrap
from .routes import RouteTemplates, route_template

__all__ = [
    "DB",
    "RouteTemplates",
    "ScaleKitMiddleware",
    "ainvalidate",
    "cache_for",
    "cached",
    "database",
    "db",
    "invalidate",
    "route_template",
    "tag",
    "wrap",
]
