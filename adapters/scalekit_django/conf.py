"""scalekit's Django settings: ``SCALEKIT = {...}`` in settings.py, and the route label.

``SCALEKIT`` holds the same sections as ``scalekit.toml`` (``{"cache": {"enabled": False},
"pool": {"databases": {"default": {"url": "..."}}}}``); they rank like keyword arguments to
``scalekit.wrap``: above ``SCALEKIT_*`` env and the toml file.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from scalekit.context import CONTEXT_KEY, RequestContext, current

__all__ = ["MIDDLEWARE_PATHS", "context_of_request", "route_of", "scalekit_settings"]

SETTINGS_NAME = "SCALEKIT"
# Where settings.MIDDLEWARE may name the middleware (the module path and the package alias).
MIDDLEWARE_PATHS = frozenset({
    "scalekit_django.middleware.ScaleKitMiddleware",
    "scalekit_django.ScaleKitMiddleware",
})


def scalekit_settings() -> Mapping[str, Any]:
    """``settings.SCALEKIT``, checked to be a dict of scalekit settings (empty when unset)."""
    configured = getattr(settings, SETTINGS_NAME, None) or {}
    if not isinstance(configured, Mapping):
        raise ImproperlyConfigured(
            f"settings.{SETTINGS_NAME} is {configured!r}; expected a dict of scalekit settings "
            "such as {'cache': {'enabled': True}, 'pool': {'databases': {'default': {'url': ...}}}}.")
    return configured


def context_of_request(request: Any) -> RequestContext | None:
    """The scalekit context of a Django request: from its WSGI environ or ASGI scope, else the
    context variable (set by the pipeline root in this thread or task)."""
    scope = getattr(request, "scope", None)
    found = scope.get(CONTEXT_KEY) if isinstance(scope, dict) else request.META.get(CONTEXT_KEY)
    return found if found is not None else current()


def route_of(resolver_match: Any) -> str | None:
    """``/products/<int:pk>/`` for a resolved request: the full pattern, includes joined.

    Django keeps patterns without the leading slash (``products/<int:pk>/``); metrics labels
    start with one like every other framework's. ``re_path`` routes give their regex.
    """
    route: str | None = getattr(resolver_match, "route", None)
    if not route:
        return None
    return route if route.startswith("/") else "/" + route.removeprefix("^")
