"""The Django shop, wrapped, under WSGI (werkzeug's client) and ASGI (Starlette's client).

Django's settings are configured once per process: by this shop's settings module when its
tests run first, otherwise they are laid over the existing configuration. Either way the shop
gets a fresh scalekit state directory per test and a re-seeded products table.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import django
import pytest
from django.conf import settings
from django.db import connections
from django.test.utils import override_settings

from examples.shop_common import testing
from examples.shop_common.data import prepare_database
from examples.shop_common.startup import prepare_shop
from examples.shop_common.testing import ShopClient

SETTINGS_MODULE = "examples.django_shop.settings"


def configure_django() -> dict[str, Any]:
    """Set Django up once per process; return the settings to lay over a foreign configuration."""
    if not settings.configured:
        os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS_MODULE
        try:
            django.setup()
        finally:
            del os.environ["DJANGO_SETTINGS_MODULE"]  # servers started later choose their own
    if getattr(settings, "SETTINGS_MODULE", None) == SETTINGS_MODULE:
        return {}
    from examples.django_shop import settings as shop_settings

    return {name: getattr(shop_settings, name)
            for name in ("ROOT_URLCONF", "INSTALLED_APPS", "MIDDLEWARE", "TEMPLATES")}


@pytest.fixture(params=["wsgi", "asgi"])
def shop(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ShopClient]:
    overlay = configure_django()
    database = connections["default"].settings_dict["NAME"]
    url = f"sqlite:///{database}"
    with connections["default"].cursor() as cursor:  # a fresh seed for every test
        cursor.execute("DROP TABLE IF EXISTS products")
    prepare_database(url)
    setup = prepare_shop(state_dir=str(tmp_path), pool={"databases": {"default": {"url": url}}})
    with override_settings(**overlay, SCALEKIT=setup.settings):
        import scalekit_django

        if request.param == "wsgi":
            from django.core.wsgi import get_wsgi_application
            app = scalekit_django.wrap(get_wsgi_application())
            yield testing.wsgi_client(app)
        else:
            from django.core.asgi import get_asgi_application
            app = scalekit_django.wrap(get_asgi_application())
            yield testing.asgi_client(app)
        app.runtime.close()


class TestShop(testing.ShopChecks):
    product_route = "/products/<int:product_id>"  # the resolver's pattern
