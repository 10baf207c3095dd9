"""The pool layer's exceptions, under :class:`scalekit.errors.PoolError`.

    PoolError
    ├── PoolTimeoutError           no connection within pool_timeout_seconds   -> 503 + Retry-After
    │   └── PoolShedError          shed at once (max_waiting, or a full pool on the event loop) -> 503
    ├── DatabaseUnavailableError   the database refused or dropped the connection attempt -> 503
    └── RequestDatabaseError       db() used outside a request, or after its connection was given back

The first three carry ``status_hint = 503``, ``database`` and ``retry_after_seconds``; the layer
answers them with a short 503 even when a framework turned them into its own 500 page first.
"""

from __future__ import annotations

from ..errors import PoolError, PoolTimeoutError

__all__ = [
    "DatabaseUnavailableError",
    "PoolError",
    "PoolShedError",
    "PoolTimeoutError",
    "RequestDatabaseError",
]


class PoolShedError(PoolTimeoutError):
    """Answered 503 without waiting: too many requests already queue for this pool."""


class DatabaseUnavailableError(PoolError):
    """The database could not be reached when the request first needed a connection."""

    def __init__(self, message: str, *, database: str, retry_after_seconds: int = 1) -> None:
        super().__init__(message)
        self.database = database
        self.retry_after_seconds = retry_after_seconds
        self.status_hint = 503


class RequestDatabaseError(PoolError):
    """The request's database handle cannot be used here (no request, or already released)."""
