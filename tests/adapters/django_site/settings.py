"""Settings of the adapter tests' Django project.

The database file comes from ``ADAPTER_TESTS_DJANGO_DB`` (tests set it); Django's ORM and
scalekit's pool use the same SQLite file, so ORM writes and pool reads meet in one table.
How scalekit is installed (middleware only, or ``wrap()`` in ``wsgi.py``/``asgi.py``) is up to
the entry point; the middleware is listed either way.
"""

from __future__ import annotations

import os

DATABASE_PATH = os.environ.get("ADAPTER_TESTS_DJANGO_DB", "")

SECRET_KEY = "scalekit-adapter-tests-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "tests.adapters.django_site.urls"
INSTALLED_APPS = ["tests.adapters.django_site.catalog"]
MIDDLEWARE = ["scalekit_django.middleware.ScaleKitMiddleware"]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": DATABASE_PATH}}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
USE_TZ = True
# Its own Cache-Status name: the server tests see that these settings are the ones used.
SCALEKIT = {"pool": {"databases": {"default": {"url": f"sqlite:///{DATABASE_PATH}"}}},
            "cache": {"status_name": "django-site"}}
