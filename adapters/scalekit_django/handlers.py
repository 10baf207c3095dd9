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

import functools
from typing import Any

import scalekit

from . import signals
from .checks import WRAPPED_WITH_SETTINGS, startup_checks
from .conf import SETTINGS_NAME, scalekit_settings

__all__ = ["wrap"]


def wrap(application: Any, **overrides: Any) -> Any:
    """``scalekit.wrap(application)`` with ``settings.SCALEKIT``; WSGI or ASGI is detected."""
    signals.install()
    WRAPPED_WITH_SETTINGS.set()
    source = f"settings.{SETTINGS_NAME}" + (" and wrap() arguments" if overrides else "")
    wrapped = scalekit.wrap(application, settings_source=source, **scalekit_settings(**overrides))
    # Said when it starts serving, as the middleware does, not in a process that only loads it.
    wrapped.runtime.on_startup(functools.partial(startup_checks, wrapped=True))
    return wrapped
