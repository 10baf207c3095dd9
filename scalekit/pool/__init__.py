"""Pooled database connections, lent to each request on first use.

>>> from scalekit.pool import db                                             # doctest: +SKIP
>>> def handler(environ, start_response):                                    # doctest: +SKIP
...     rows = db().connection().exec_driver_sql("select name from products").all()

Tables the request reads tag its response ``table:NAME``; tables written by a committed
transaction are invalidated after the commit. See :mod:`scalekit.pool.handle`.

``scalekit.config`` imports this package for :class:`PoolConfig`, so SQLAlchemy and sqlglot
are only imported when a name that needs them is first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .config import ChangeFeedConfig, DatabaseConfig, PoolConfig

if TYPE_CHECKING:
    from .errors import DatabaseUnavailableError, PoolShedError, RequestDatabaseError
    from .handle import RequestDatabase, RequestDatabases, db, release_at_response_start

__all__ = [
    "ChangeFeedConfig",
    "DatabaseConfig",
    "DatabaseUnavailableError",
    "PoolConfig",
    "PoolShedError",
    "RequestDatabase",
    "RequestDatabaseError",
    "RequestDatabases",
    "db",
    "release_at_response_start",
]

_LAZY = {
    "DatabaseUnavailableError": ".errors",
    "PoolShedError": ".errors",
    "RequestDatabaseError": ".errors",
    "RequestDatabase": ".handle",
    "RequestDatabases": ".handle",
    "db": ".handle",
    "release_at_response_start": ".handle",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'scalekit.pool' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value
