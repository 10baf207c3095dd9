"""Metrics, a layer like the others: Prometheus counters and histograms of every request.

- :mod:`.layer`: the WSGI and ASGI shells (outermost layer, so cache hits are measured too)
  and the protected ``/metrics`` endpoint;
- :mod:`.instruments`: every metric scalekit exports, declared once per process.

Every layer imports :mod:`.instruments` (the cache tiers while the config is still being
imported), so the layer's names are only imported when first used.

>>> from scalekit.metrics import render_exposition
>>> body, content_type = render_exposition()
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .layer import (
        ASGIMetrics,
        MetricsPolicy,
        WSGIMetrics,
        current_registry,
        render_exposition,
        wrap_asgi,
        wrap_wsgi,
    )

__all__ = [
    "ASGIMetrics",
    "MetricsPolicy",
    "WSGIMetrics",
    "current_registry",
    "render_exposition",
    "wrap_asgi",
    "wrap_wsgi",
]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'scalekit.metrics' has no attribute {name!r}")
    value = getattr(importlib.import_module(".layer", __name__), name)
    globals()[name] = value
    return value
