"""Flask-side helpers: the request's pooled connection, and per-view cache rules.

>>> from flask import Flask
>>> from sqlalchemy import text
>>> app = Flask(__name__)
>>> @app.get("/products/<int:product_id>")
... @cached(ttl_seconds=60, tags=["product:{product_id}"])
... def product(product_id: int) -> str:
...     return str(db.execute(text("select name from products where id = :id"),
...                           {"id": product_id}).scalar_one())
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, cast

from sqlalchemy.engine import Connection
from werkzeug.local import LocalProxy

import scalekit.pool
from scalekit.cache.rules import view_rule

__all__ = ["cached", "db", "get_db"]

View = TypeVar("View", bound=Callable[..., Any])


def get_db(name: str = "default") -> Connection:
    """The current request's pooled connection to database ``name``, checked out on first use.

    The pool layer returns it when the response has been sent (or at teardown after an error).
    """
    return scalekit.pool.db(name).connection()


# ``from scalekit_flask import db`` then ``db.execute(...)`` inside a view, like Flask's ``g``.
db: Connection = cast(Connection, LocalProxy(get_db, unbound_message=(
    "scalekit_flask.db was used outside a request handled through ScaleKit(app); use it inside "
    "a view (or a test client request), or call scalekit.pool.db().connection() yourself.")))


def cached(
    ttl_seconds: float = 300,
    *,
    tags: Iterable[str] = (),
    stale_while_revalidate_seconds: float = 0,
    stale_if_error_seconds: float = 0,
    public: bool = False,
) -> Callable[[View], View]:
    """Make a view's response storable by the shared cache for ``ttl_seconds``, with ``tags``.

    Tags may name the view's URL arguments: ``tags=["product:{product_id}"]``. The cache layer
    decides the rest (private responses, cookies, methods other than GET/HEAD are never stored).
    ``public=True``: the answer may be stored even for a request with Cookie or Authorization (the
    page is the same for every user), as :func:`scalekit.cache_response` takes it.
    """
    apply = view_rule(ttl_seconds, tags, stale_while_revalidate_seconds, stale_if_error_seconds, public)

    def decorate(view: View) -> View:
        if inspect.iscoroutinefunction(view):
            @functools.wraps(view)
            async def async_cached_view(*args: Any, **kwargs: Any) -> Any:
                apply(kwargs)
                return await view(*args, **kwargs)
            return cast(View, async_cached_view)

        @functools.wraps(view)
        def cached_view(*args: Any, **kwargs: Any) -> Any:
            apply(kwargs)
            return view(*args, **kwargs)
        return cast(View, cached_view)

    return decorate

