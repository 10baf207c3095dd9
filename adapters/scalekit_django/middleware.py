"""``ScaleKitMiddleware`` for ``settings.MIDDLEWARE``: sync and async capable.

Two ways to install scalekit in Django, one middleware for both:

- middleware only: put ``"scalekit_django.middleware.ScaleKitMiddleware"`` first in
  ``MIDDLEWARE``; it runs the whole pipeline (configured by ``settings.SCALEKIT``) around the
  rest of Django;
- wrapped: ``application = scalekit_django.wrap(get_wsgi_application())`` (or the ASGI one) runs
  the pipeline outside Django, so a cache hit never builds an ``HttpRequest``; the middleware
  then sees the pipeline's context already there and only adds what Django knows.

Either way the middleware names the route (the resolver's full pattern) for metrics, and
installs the model-signal invalidation and query table tracking (``signals.install``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponseBase

import scalekit
import scalekit.pool
from scalekit.context import CONTEXT_KEY

from . import checks, signals
from .bridge import RestOfDjango, run_asgi, run_wsgi
from .conf import SETTINGS_NAME, context_of_request, route_of, scalekit_settings

__all__ = ["ScaleKitMiddleware"]

DATABASES_KEY = "scalekit.databases"  # in the environ / scope when the pool layer is on


class ScaleKitMiddleware:
    """Runs the scalekit pipeline inside Django unless ``wrap()`` already runs it outside."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)
        signals.install()
        self._pipeline: Any = None  # built on the first request that needs it (middleware-only)
        # Start-up checks run at the first request, not here: a process that only loads the
        # app (`scalekit serve` choosing a server, a management command) serves nothing.
        self._checked = False

    def pipeline(self) -> Any:
        """The pipeline around the rest of Django, of the kind this middleware runs in."""
        if self._pipeline is None:
            kind: Literal["wsgi", "asgi"] = "asgi" if self.is_async else "wsgi"
            self._pipeline = scalekit.wrap(RestOfDjango(), kind=kind,
                                           framework_settings=(f"settings.{SETTINGS_NAME}", scalekit_settings()))
        return self._pipeline

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self.__acall__(request)
        if not self._checked:
            self._check(request)
        if _wrapped_outside(request):
            return _release_whole_body_early(request, self.get_response(request))
        return run_wsgi(self.pipeline(), request, self.get_response)

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        if not self._checked:
            self._check(request)
        if _wrapped_outside(request):
            response: HttpResponseBase = await self.get_response(request)
            return _release_whole_body_early(request, response)
        return await run_asgi(self.pipeline(), request, self.get_response)

    def _check(self, request: HttpRequest) -> None:
        self._checked = True
        checks.startup_checks()
        if _wrapped_outside(request):
            checks.warn_settings_unused()

    def process_view(self, request: HttpRequest, view_func: Any, view_args: Any, view_kwargs: Any) -> None:
        """Name the route once the resolver has matched: ``/products/<int:pk>/``."""
        ctx = context_of_request(request)
        route = route_of(request.resolver_match)
        if ctx is not None and route is not None:
            ctx.route = route


def _release_whole_body_early(request: HttpRequest, response: Any) -> Any:
    """A non-streaming response is whole: the pipeline outside gives the request's pooled
    connections back before the server sends it, so a slow client never holds one."""
    scope = getattr(request, "scope", None)
    environ = scope if isinstance(scope, dict) else request.META
    if not getattr(response, "streaming", True) and DATABASES_KEY in environ:
        scalekit.pool.release_at_response_start()
    return response


def _wrapped_outside(request: HttpRequest) -> bool:
    scope = getattr(request, "scope", None)
    if isinstance(scope, dict):
        return CONTEXT_KEY in scope
    return CONTEXT_KEY in request.META

