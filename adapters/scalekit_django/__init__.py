"""scalekit for Django: one middleware line (or a wrap in wsgi.py / asgi.py), settings in SCALEKIT.

In settings.py::

    MIDDLEWARE = ["scalekit_django.middleware.ScaleKitMiddleware", ...]
    SCALEKIT = {"cache": {"enabled": True}}

Views use ``@cached(ttl_seconds=..., tags=...)``, ``tag(...)``, ``model_tags(instance)`` and
``get_db(request)`` (scalekit's pooled SQLAlchemy connection); saves and deletes invalidate
``model:app_label.Model[:pk]``, and Django's own queries tag responses ``table:NAME``.
"""

from __future__ import annotations

from scalekit import ainvalidate, invalidate, tag

from .handlers import wrap
from .middleware import ScaleKitMiddleware
from .signals import model_tag, model_tags
from .views import aget_db, cached, get_db

__all__ = [
    "ScaleKitMiddleware",
    "aget_db",
    "ainvalidate",
    "cached",
    "get_db",
    "invalidate",
    "model_tag",
    "model_tags",
    "tag",
    "wrap",
]
