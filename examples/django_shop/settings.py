"""Settings of the Django shop.

scalekit's configuration and the database are prepared once here (``prepare_shop``): the same
SQLite file (or ``SCALEKIT_POOL_DATABASES_DEFAULT_URL``) serves Django's ORM, which renders the
HTML pages, and scalekit's pool, which answers the JSON API.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import make_url

from examples.shop_common import TEMPLATES_DIR, prepare_shop

SHOP = prepare_shop()


def django_database(url: str) -> dict[str, Any]:
    """Django's DATABASES entry for a SQLAlchemy URL (SQLite file or Postgres)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": parsed.database}
    database = {"ENGINE": "django.db.backends.postgresql", "NAME": parsed.database,
                "USER": parsed.username or "", "PASSWORD": parsed.password or "",
                "HOST": parsed.host or "", "PORT": str(parsed.port or "")}
    if "options" in parsed.query:  # libpq options such as -csearch_path=shop
        database["OPTIONS"] = {"options": parsed.query["options"]}
    return database


SECRET_KEY = "example-shop-not-secret"  # an example: set your own from the environment
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "examples.django_shop.urls"
INSTALLED_APPS = ["examples.django_shop.shop"]
MIDDLEWARE = [
    "scalekit_django.middleware.ScaleKitMiddleware",  # route labels, model and query tracking
    "django.middleware.common.CommonMiddleware",
]
DATABASES = {"default": django_database(SHOP.database_url)}
TEMPLATES = [{
    "BACKEND": "django.template.backends.jinja2.Jinja2",
    "DIRS": [TEMPLATES_DIR],
    "OPTIONS": {"environment": "examples.django_shop.shop.jinja.environment"},
}]
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
USE_TZ = True
SCALEKIT = SHOP.settings
