"""The wrap-based install: scalekit outside Django's WSGI or ASGI application.

In ``wsgi.py`` / ``asgi.py``::

    from django.core.wsgi import get_wsgi_application
    import scalekit_django
    application = scalekit_django.wrap(get_wsgi_application())

Settings come from ``settings.SCALEKIT``. Keep ``ScaleKitMiddleware`` in ``MIDDLEWARE``: it
names the route for metrics and installs the model and query tracking; seeing the pipeline
already running outside, it does nothing else.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings

import scalekit

from . import signals
from .checks import WRAPPED_WITH_SETTINGS, startup_checks
from .conf import MIDDLEWARE_PATHS, SETTINGS_NAME, scalekit_settings

__all__ = ["wrap"]

log = logging.getLogger("scalekit")


def wrap(application: Any, **overrides: Any) -> Any:
    """``scalekit.wrap(application)`` with ``settings.SCALEKIT``; WSGI or ASGI is detected."""
    if not MIDDLEWARE_PATHS.intersection(getattr(settings, "MIDDLEWARE", ())):
        log.warning("scalekit: add 'scalekit_django.middleware.ScaleKitMiddleware' to MIDDLEWARE; "
                    "without it every request is counted under the route 'unmatched'.")
    signals.install()
    WRAPPED_WITH_SETTINGS.set()
    source = f"settings.{SETTINGS_NAME}" + (" and wrap() arguments" if overrides else "")
    wrapped = scalekit.wrap(application, settings_source=source, **scalekit_settings(**overrides))
    wrapped.runtime.on_startup(startup_checks)  # when it starts serving, as the middleware does
    return wrapped
