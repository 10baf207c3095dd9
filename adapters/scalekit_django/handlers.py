"""The wrap-based install: scalekit outside Django's WSGI or ASGI application.

In ``wsgi.py`` / ``asgi.py``::

    from django.core.wsgi import get_wsgi_application
    import scalekit_django
    application = scalekit_django.wrap(get_wsgi_application())

Settings come from ``settings.SCALEKIT``. Keep ``ScaleKitMiddleware`` in ``MIDDLEWARE``: it
names the route for metrics from the request's own resolver match (a per-request ``urlconf``
too) and gives a whole response's pooled connections back before it is sent; seeing the
pipeline already running outside, it does nothing else. Without it, the route is named by
resolving the request's path against ``ROOT_URLCONF`` once more, before Django runs.
"""

from __future__ import annotations

import functools
from typing import Any

from django.conf import settings
from django.core.handlers.wsgi import get_path_info
from django.urls import Resolver404, resolve

import scalekit
from scalekit.asgi import ASGIRoot
from scalekit.context import CONTEXT_KEY
from scalekit.pipeline import detect_kind
from scalekit.wsgi import WSGIRoot

from . import signals
from .checks import WRAPPED_WITH_SETTINGS, startup_checks
from .conf import MIDDLEWARE_PATHS, SETTINGS_NAME, route_of, scalekit_settings

__all__ = ["ASGIRouteNames", "WSGIRouteNames", "name_route", "wrap"]


def wrap(application: Any, **overrides: Any) -> Any:
    """``scalekit.wrap(application)`` with ``settings.SCALEKIT``; WSGI or ASGI is detected."""
    signals.install()
    WRAPPED_WITH_SETTINGS.set()
    kind = detect_kind(application)
    inner = application
    if not (isinstance(application, (WSGIRoot, ASGIRoot))  # wrap() says it is wrapped twice
            or MIDDLEWARE_PATHS.intersection(getattr(settings, "MIDDLEWARE", ()))):
        inner = WSGIRouteNames(application) if kind == "wsgi" else ASGIRouteNames(application)
    # settings.SCALEKIT and the arguments are two sources merged key by key: an argument
    # changes its own key alone, and a disagreement is said when the app starts serving.
    wrapped = scalekit.wrap(inner, kind=kind, settings_source="scalekit_django.wrap() arguments",
                            framework_settings=(f"settings.{SETTINGS_NAME}", scalekit_settings()), **overrides)
    # Said when it starts serving, as the middleware does, not in a process that only loads it.
    wrapped.runtime.on_startup(functools.partial(startup_checks, wrapped=True))
    return wrapped


def name_route(ctx: Any, path_info: str) -> None:
    """Set ``ctx.route`` to the resolver's full pattern for ``path_info`` (a 404 keeps
    ``unmatched``), as ``ScaleKitMiddleware`` would from the request's resolver match."""
    try:
        route = route_of(resolve(path_info))
    except Resolver404:
        return
    if route is not None:
        ctx.route = route


class WSGIRouteNames:
    """Innermost around a Django WSGI application whose ``MIDDLEWARE`` lacks scalekit's: names
    each request's route for metrics before Django runs."""

    def __init__(self, application: Any) -> None:
        self.application = application

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        ctx = environ.get(CONTEXT_KEY)
        if ctx is not None:
            name_route(ctx, get_path_info(environ))
        return self.application(environ, start_response)


class ASGIRouteNames:
    """:class:`WSGIRouteNames` for a Django ASGI application."""

    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        ctx = scope.get(CONTEXT_KEY)
        if ctx is not None and scope["type"] == "http":
            root_path = scope.get("root_path", "")
            path = scope["path"]
            name_route(ctx, path.removeprefix(root_path) if root_path else path)
        await self.application(scope, receive, send)
