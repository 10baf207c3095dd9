"""The example shop on Django, installed by wrapping the WSGI / ASGI application.

Run it (SQLite and in-process caches by default; Postgres and Redis when their URLs are set)::

    scalekit serve examples.django_shop.app:app          # WSGI (gunicorn)
    scalekit serve examples.django_shop.app:asgi_app     # ASGI (uvicorn)

``settings.MIDDLEWARE`` lists ``ScaleKitMiddleware`` too: alone it would run the whole
pipeline inside Django; next to ``wrap()`` it only names routes and tracks Django's queries.
"""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.django_shop.settings")

import scalekit_django
from django.core.asgi import get_asgi_application
from django.core.wsgi import get_wsgi_application

__all__ = ["app", "asgi_app"]

app = scalekit_django.wrap(get_wsgi_application())
asgi_app = scalekit_django.wrap(get_asgi_application())
