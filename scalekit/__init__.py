"""scalekit: the layers a Python web app needs to scale, in two lines.

>>> import scalekit
>>> def app(environ, start_response):
...     start_response("200 OK", [("Content-Type", "text/plain")])
...     return [b"hello"]
>>> app = scalekit.wrap(app)
"""

from __future__ import annotations

import typing as _typing

# First: its fork hook must run before any other of ours that may ask a child for its id.
from . import forks as _forks  # noqa: F401
from .cache.invalidation import InvalidationResult
from .cache.invalidation import combine as _combine
from .config import Config, MetricsConfig, RedisConfig, load_config
from .context import RequestContext, current, set_route, tag
from .errors import (
    ConfigError,
    MissingExtraError,
    PoolError,
    PoolTimeoutError,
    ScalekitError,
    TierError,
    UnknownKeyError,
    WrapError,
)
from .pipeline import LAYER_ORDER, detect_kind, wrap
from .runtime import Runtime, live_runtimes

if _typing.TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = [
    "LAYER_ORDER",
    "Config",
    "ConfigError",
    "InvalidationResult",
    "MetricsConfig",
    "MissingExtraError",
    "PoolError",
    "PoolTimeoutError",
    "RedisConfig",
    "RequestContext",
    "Runtime",
    "ScalekitError",
    "TierError",
    "UnknownKeyError",
    "WrapError",
    "ainvalidate",
    "current",
    "detect_kind",
    "invalidate",
    "live_runtimes",
    "load_config",
    "set_route",
    "tag",
    "wrap",
]

__version__ = "0.1.0"


def invalidate(tags: Iterable[str], *, source: str = "api") -> InvalidationResult:
    """Invalidate every cached response tagged with any of ``tags``, in every wrapped app here
    and, when Redis is configured, across the fleet. ``invalidate(tags=["product:42"])``.

    Returns how far it reached (an :class:`InvalidationResult`; ignoring it is fine): with
    ``result.acknowledged`` every live instance had applied it when this returned, so a read
    anywhere sees the change. Otherwise ``result.reach`` / ``result.queued`` say where it is
    recorded, and the instances in ``result.unacknowledged`` catch up within
    ``cache.invalidation.max_staleness_seconds``.
    """
    tag_tuple = (tags,) if isinstance(tags, str) else tuple(tags)
    return _combine(runtime.invalidate(tag_tuple, source=source) for runtime in live_runtimes())


async def ainvalidate(tags: Iterable[str], *, source: str = "api") -> InvalidationResult:
    """Async :func:`invalidate`, for ASGI apps: never blocks the event loop on Redis."""
    tag_tuple = (tags,) if isinstance(tags, str) else tuple(tags)
    return _combine([await runtime.ainvalidate(tag_tuple, source=source)
                    for runtime in live_runtimes()])
