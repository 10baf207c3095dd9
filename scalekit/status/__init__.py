"""The live status page at ``/_scalekit/`` and ``scalekit top``: what the cache saves, its hit
ratios, invalidation lag, pools and tiers, read from the same registry as ``/metrics``.

>>> from prometheus_client import CollectorRegistry
>>> page = StatusPage("/_scalekit/", CollectorRegistry().collect)
>>> page.respond("/_scalekit/").status
200
"""

from __future__ import annotations

from .endpoint import StatusPage

__all__ = ["StatusPage"]
