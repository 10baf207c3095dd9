"""View helpers: ``@cached(...)`` and the request's pooled connection.

>>> from django.http import JsonResponse
>>> @cached(ttl_seconds=60, tags=["product:{pk}"])
... def product(request, pk):
...     return JsonResponse({"pk": pk})

For class-based views: ``@method_decorator(cached(ttl_seconds=60), name="get")``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar, cast

from asgiref.sync import iscoroutinefunction
from sqlalchemy.engine import Connection

import scalekit.pool
from scalekit.cache.rules import view_rule
from scalekit.pool.handle import RequestDatabase

__all__ = ["aget_db", "cached", "get_db"]

View = TypeVar("View", bound=Callable[..., Any])
DATABASES_KEY = "scalekit.databases"


def get_db(request: Any = None, name: str = "default") -> Connection:
    """The request's pooled connection (scalekit's pool, not Django's ORM connection).

    Django's own queries keep using Django's connections; this is for SQL run through
    SQLAlchemy on the pool the other frameworks use. Checked out on first use, returned when
    the response has been sent. In ``async def`` views use :func:`aget_db`.
    """
    return _handle(request, name).connection()


async def aget_db(request: Any = None, name: str = "default") -> Connection:
    """:func:`get_db` for async views: a busy pool is waited for off the event loop."""
    return await _handle(request, name).aconnection()


def _handle(request: Any, name: str) -> RequestDatabase:
    if request is not None:
        scope = getattr(request, "scope", None)
        holder = scope if isinstance(scope, dict) else request.META
        handles: Mapping[str, RequestDatabase] | None = holder.get(DATABASES_KEY)
        if handles and name in handles:
            return handles[name]
    return scalekit.pool.db(name)


def cached(
    ttl_seconds: float = 300,
    *,
    tags: Iterable[str] = (),
    stale_while_revalidate_seconds: float = 0,
    stale_if_error_seconds: float = 0,
    public: bool = False,
) -> Callable[[View], View]:
    """The view's response may be stored by the shared cache for ``ttl_seconds``, with ``tags``.

    Tags may name the view's URL keyword arguments (``"product:{pk}"``). Sync and async views.
    ``public=True``: the answer may be stored even for a request with Cookie or Authorization (the
    page is the same for every user), as :func:`scalekit.cache_response` takes it.
    """
    apply = view_rule(ttl_seconds, tags, stale_while_revalidate_seconds, stale_if_error_seconds, public)

    def decorate(view: View) -> View:
        if iscoroutinefunction(view):
            @functools.wraps(view)
            async def async_cached_view(request: Any, *args: Any, **kwargs: Any) -> Any:
                apply(kwargs)
                return await view(request, *args, **kwargs)
            return cast(View, async_cached_view)

        @functools.wraps(view)
        def cached_view(request: Any, *args: Any, **kwargs: Any) -> Any:
            apply(kwargs)
            return view(request, *args, **kwargs)
        return cast(View, cached_view)

    return decorate

