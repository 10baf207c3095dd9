"""The pool layer's place in the pipeline (pass-through until the layer is built)."""

from __future__ import annotations

from typing import Any

from .. import asgi, wsgi

__all__ = ["wrap_asgi", "wrap_wsgi"]


def wrap_wsgi(app: wsgi.WSGIApp, runtime: Any) -> wsgi.WSGIApp:
    """The pool layer around a WSGI app."""
    return app


def wrap_asgi(app: asgi.ASGIApp, runtime: Any) -> asgi.ASGIApp:
    """The pool layer around an ASGI app."""
    return app
