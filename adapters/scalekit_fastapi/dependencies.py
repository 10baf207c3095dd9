"""FastAPI dependencies and decorators: the request's pooled connection, and cache rules.

>>> from fastapi import FastAPI
>>> from sqlalchemy import text
>>> app = FastAPI()
>>> @app.get("/products/{product_id}")
... @cached(ttl_seconds=60, tags=["product:{product_id}"])
... def product(product_id: int, connection: DB) -> dict:
...     row = connection.execute(text("select name from products where id = :id"),
...                              {"id": product_id}).one()
...     return {"name": row.name}
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Annotated, Any, TypeVar, cast

from fastapi import Depends
from sqlalchemy.engine import Connection
from starlette.requests import Request

import scalekit.pool
from scalekit.cache.rules import view_rule

__all__ = ["DB", "cache_for", "cached", "database", "db"]

Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])
DEFAULT_DATABASE_KEY = "scalekit.db"
DATABASES_KEY = "scalekit.databases"


def db(request: Request) -> Connection:
    """Dependency: the request's pooled connection to the default database.

    A plain ``def``, so FastAPI runs it in its thread pool: checking a connection out may wait
    for the pool (up to ``pool_timeout``) and must not block the event loop. The pool layer
    gives the connection back once the response body is complete (a stream's at its end), so
    background tasks open their own: ``scalekit.pool.db().engine.connect()``.
    """
    handle = request.scope.get(DEFAULT_DATABASE_KEY)
    if handle is None:
        handle = scalekit.pool.db()  # raises the pool's own error outside a wrapped request
    return cast(Connection, handle.connection())


# ``def view(connection: DB)``: the annotated form of ``Depends(db)``.
DB = Annotated[Connection, Depends(db)]


def database(name: str) -> Callable[[Request], Connection]:
    """Dependency factory for a named database: ``Depends(database("analytics"))``."""

    def named_database(request: Request) -> Connection:
        handles: Mapping[str, Any] | None = request.scope.get(DATABASES_KEY)
        handle = handles.get(name) if handles else None
        if handle is None:
            handle = scalekit.pool.db(name)
        return cast(Connection, handle.connection())

    named_database.__name__ = f"database_{name}"
    return named_database


def cached(
    ttl_seconds: float = 300,
    *,
    tags: Iterable[str] = (),
    stale_while_revalidate_seconds: float = 0,
    stale_if_error_seconds: float = 0,
    public: bool = False,
) -> Callable[[Endpoint], Endpoint]:
    """Decorator: the endpoint's response may be stored by the shared cache for ``ttl_seconds``.

    Put it under ``@app.get(...)``. Tags may name the endpoint's parameters
    (``tags=["product:{product_id}"]``). Works on ``async def`` and ``def`` endpoints; FastAPI
    still sees the endpoint's own signature. ``public=True``: the answer may be stored even for a request with Cookie
    or Authorization (the
    page is the same for every user), as :func:`scalekit.cache_response` takes it.
    """
    apply = view_rule(ttl_seconds, tags, stale_while_revalidate_seconds, stale_if_error_seconds, public)

    def decorate(endpoint: Endpoint) -> Endpoint:
        if inspect.iscoroutinefunction(endpoint):
            @functools.wraps(endpoint)
            async def async_cached_endpoint(*args: Any, **kwargs: Any) -> Any:
                apply(kwargs)
                return await endpoint(*args, **kwargs)
            return cast(Endpoint, async_cached_endpoint)

        @functools.wraps(endpoint)
        def cached_endpoint(*args: Any, **kwargs: Any) -> Any:
            apply(kwargs)
            return endpoint(*args, **kwargs)
        return cast(Endpoint, cached_endpoint)

    return decorate


def cache_for(
    ttl_seconds: float = 300,
    *,
    tags: Iterable[str] = (),
    stale_while_revalidate_seconds: float = 0,
    stale_if_error_seconds: float = 0,
    public: bool = False,
) -> Callable[[Request], Awaitable[None]]:
    """Dependency form of :func:`cached`, for a route or a whole router:
    ``APIRouter(dependencies=[Depends(cache_for(60, tags=["catalog"]))])``.

    Tags may name path parameters (``"product:{product_id}"``).
    """
    apply = view_rule(ttl_seconds, tags, stale_while_revalidate_seconds, stale_if_error_seconds, public)

    async def cache_rule(request: Request) -> None:
        apply(request.path_params)

    return cache_rule

