"""The pool layer's place in the pipeline: lazy per-request database handles.

Innermost layer: a cache hit never reaches it, so a hit never touches the database. The
process-wide :class:`~scalekit.pool.service.PoolService` (engines, background worker, change
feed) is shared by the runtime's WSGI and ASGI shells.
"""

from __future__ import annotations

from typing import Any

from .. import asgi, wsgi
from .asgi_shell import ASGIPool
from .service import service_of
from .wsgi_shell import WSGIPool

__all__ = ["wrap_asgi", "wrap_wsgi"]


def wrap_wsgi(app: wsgi.WSGIApp, runtime: Any) -> wsgi.WSGIApp:
    """The pool layer around a WSGI app."""
    return WSGIPool(app, service_of(runtime))


def wrap_asgi(app: asgi.ASGIApp, runtime: Any) -> asgi.ASGIApp:
    """The pool layer around an ASGI app."""
    return ASGIPool(app, service_of(runtime))
