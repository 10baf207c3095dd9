"""ASGI entry points: ``application`` (middleware only) and ``wrapped`` (scalekit_django.wrap)."""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.adapters.django_site.settings")

import scalekit_django
from django.core.asgi import get_asgi_application

application = get_asgi_application()
wrapped = scalekit_django.wrap(get_asgi_application())
