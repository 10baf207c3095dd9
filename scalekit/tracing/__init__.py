"""OpenTelemetry traces of what scalekit does for a request (the ``otel`` extra).

With ``tracing.enabled``: :mod:`scalekit.tracing.layer` (outermost) opens a server span per
request following the HTTP semantic conventions, unless the app's own instrumentation around
scalekit already has one current; inside it, :mod:`scalekit.tracing.spans` records the cache
lookup (tier, outcome), the store, tag invalidations and the pool checkout (database semantic
conventions). Every span joins the current one, so an instrumentation inside the app (Flask's,
Django's) nests under the request span, and one around scalekit holds scalekit's spans.

Off (the default), nothing of OpenTelemetry is imported and no layer or wrapper is built: the
request path is the same objects as without this package. This module imports nothing.
"""

from __future__ import annotations

__all__: list[str] = []
