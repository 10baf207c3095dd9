"""scalekit: the layers a Python web app needs to scale, in two lines.

>>> import scalekit
>>> def app(environ, start_response):
...     start_response("200 OK", [("Content-Type", "text/plain")])
...     return [b"hello"]
>>> app = scalekit.wrap(app)
"""

from __future__ import annotations

import typing as _typing

from .config import Config, MetricsConfig, RedisConfig, load_config
from .context import RequestContext, current, set_route, tag
from .errors import (
    ConfigError,
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
    "MetricsConfig",
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


def invalidate(tags: Iterable[str], *, source: str = "api") -> None:
    """Invalidate every cached response tagged with any of ``tags``, in every wrapped app here
    and, when Redis is configured, across the fleet. ``invalidate(tags=["product:42"])``."""
    tag_tuple = (tags,) if isinstance(tags, str) else tuple(tags)
    for runtime in live_runtimes():
        runtime.invalidate(tag_tuple, source=source)


async def ainvalidate(tags: Iterable[str], *, source: str = "api") -> None:
    """Async :func:`invalidate`, for ASGI apps: never blocks the event loop on Redis."""
    tag_tuple = (tags,) if isinstance(tags, str) else tuple(tags)
    for runtime in live_runtimes():
        await runtime.ainvalidate(tag_tuple, source=source)
