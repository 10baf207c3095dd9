"""Start-up checks of a Django project that uses scalekit, each said once per process.

- Django's own page cache (``cache_page``, the cache middleware) in front of a real cache
  backend: Django stores a page before ``SessionMiddleware`` adds ``Vary: Cookie``, so one
  user's page can be served to another with no scalekit at all, and scalekit would then store
  and spread that copy. Use ``scalekit_django.cached(...)`` instead, or keep Django's cache
  backend a ``DummyCache``.
- ``settings.SCALEKIT`` set while the pipeline around the app was built without it (by
  ``scalekit.wrap(application)`` rather than ``scalekit_django.wrap``): the middleware then
  steps aside and those settings would silently not apply.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from django.conf import settings
from django.middleware.cache import CacheMiddleware, FetchFromCacheMiddleware, UpdateCacheMiddleware
from django.urls import URLPattern, URLResolver, get_resolver

from .conf import MIDDLEWARE_PATHS, SETTINGS_NAME

__all__ = [
    "WRAPPED_WITH_SETTINGS",
    "django_page_cache_warning",
    "settings_unused_warning",
    "startup_checks",
    "warn_settings_unused",
]

log = logging.getLogger("scalekit")

# Set once scalekit_django.wrap() has built a pipeline from settings.SCALEKIT in this process.
WRAPPED_WITH_SETTINGS = threading.Event()
_CACHE_MIDDLEWARE = {
    f"{cls.__module__}.{cls.__name__}"
    for cls in (CacheMiddleware, UpdateCacheMiddleware, FetchFromCacheMiddleware)
}
_DUMMY_BACKEND = "django.core.cache.backends.dummy.DummyCache"
_said: set[str] = set()
_lock = threading.Lock()


def startup_checks(*, wrapped: bool = False) -> None:
    """Say what the checks find, each once per process (the middleware calls this at its first
    request; ``wrap`` when the wrapped app starts serving, with ``wrapped=True``)."""
    _say(django_page_cache_warning())
    if wrapped and not MIDDLEWARE_PATHS.intersection(getattr(settings, "MIDDLEWARE", ())):
        _say("add 'scalekit_django.middleware.ScaleKitMiddleware' to MIDDLEWARE (first): without "
             "it, route labels are resolved once more against ROOT_URLCONF (a per-request urlconf "
             "is not seen), and a whole response's pooled connections are given back only after "
             "it has been sent.")


def _say(message: str | None) -> None:
    if message is None:
        return
    with _lock:
        if message in _said:
            return
        _said.add(message)
    log.warning("scalekit: %s", message)


def django_page_cache_warning() -> str | None:
    """The warning to give when Django's page cache runs with a cache backend that stores."""
    middleware = [path for path in getattr(settings, "MIDDLEWARE", ()) if path in _CACHE_MIDDLEWARE]
    middleware_alias = getattr(settings, "CACHE_MIDDLEWARE_ALIAS", "default")
    where = [f"{path} in MIDDLEWARE" for path in middleware if not _is_dummy(middleware_alias)]
    where += [f"cache_page on {name}" for name, alias in _cache_page_views() if not _is_dummy(alias)]
    if not where:
        return None
    return (f"Django's page cache is active ({'; '.join(where[:5])}) with a cache backend that stores. "
            "Django stores a page before SessionMiddleware adds 'Vary: Cookie', so one user's page "
            "can reach another, and scalekit would store and spread that copy. Use "
            "scalekit_django.cached(...) instead of cache_page and the cache middleware, or set "
            f"CACHES to {_DUMMY_BACKEND!r}.")


def settings_unused_warning() -> str | None:
    """The warning to give when the pipeline runs outside Django without ``settings.SCALEKIT``."""
    if WRAPPED_WITH_SETTINGS.is_set() or not getattr(settings, SETTINGS_NAME, None):
        return None
    return (f"settings.{SETTINGS_NAME} is not used: this Django app is wrapped by scalekit.wrap() "
            "outside Django, whose settings (arguments, SCALEKIT_* environment, scalekit.toml) "
            "apply instead, and the middleware steps aside. Wrap it with "
            f"scalekit_django.wrap(application) to use settings.{SETTINGS_NAME}.")


def warn_settings_unused() -> None:
    _say(settings_unused_warning())


def _is_dummy(alias: str) -> bool:
    caches = getattr(settings, "CACHES", {})
    return bool(caches.get(alias, {}).get("BACKEND", "") == _DUMMY_BACKEND)


def _cache_page_views() -> list[tuple[str, str]]:
    """``(view name, cache alias)`` of every URL pattern whose view is wrapped by cache_page."""
    try:
        patterns = list(_patterns(get_resolver().url_patterns))
    except Exception:  # noqa: BLE001  (a broken URLconf is Django's to report, on the first request)
        return []
    found = []
    for route, pattern in patterns:
        middleware = _cache_middleware_of(pattern.callback)
        if middleware is not None:
            name = getattr(pattern.callback, "__qualname__", repr(pattern.callback))
            found.append((f"{name} (/{route})", str(middleware.cache_alias)))
    return found


def _patterns(entries: Iterable[Any], prefix: str = "") -> Iterator[tuple[str, URLPattern]]:
    for entry in entries:
        if isinstance(entry, URLResolver):
            yield from _patterns(entry.url_patterns, prefix + str(entry.pattern))
        elif isinstance(entry, URLPattern):
            yield prefix + str(entry.pattern), entry


def _cache_middleware_of(view: Any) -> CacheMiddleware | None:
    """The CacheMiddleware a decorated view closes over, looking through ``functools.wraps``
    layers. ``cache_page`` builds its wrapper with ``decorator_from_middleware_with_args``: the
    wrapper, or the small functions it calls, hold the middleware instance in their closure."""
    for _ in range(16):
        if view is None or not inspect.isfunction(view):
            return None
        found = _closed_over_middleware(view, depth=2)
        if found is not None:
            return found
        view = getattr(view, "__wrapped__", None)
    return None


def _closed_over_middleware(function: Any, depth: int) -> CacheMiddleware | None:
    for value in inspect.getclosurevars(function).nonlocals.values():
        if isinstance(value, CacheMiddleware):
            return value
        if depth > 1 and inspect.isfunction(value) and not hasattr(value, "__wrapped__"):
            found = _closed_over_middleware(value, depth - 1)
            if found is not None:
                return found
    return None
