"""The Django shop on Postgres with Redis as its L2 cache, under gunicorn (Django's settings
are per process, so this configuration gets a process of its own)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from examples.shop_common import testing
from tests.servers import run_server

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.server]


def test_the_shop_runs_on_postgres_with_redis_as_l2(tmp_path: Path) -> None:
    prefix = f"scalekit-example-django-{uuid.uuid4().hex[:8]}:"
    with testing.postgres_schema("django") as database_url:
        env = {"DJANGO_SETTINGS_MODULE": "examples.django_shop.settings",
               "SCALEKIT_STATE_DIR": str(tmp_path), "SCALEKIT_POOL_DATABASES_DEFAULT_URL": database_url,
               "SCALEKIT_REDIS_URL": testing.REDIS_URL, "SCALEKIT_REDIS_KEY_PREFIX": prefix}
        try:
            with run_server("gunicorn", "examples.django_shop.app:app", env=env) as base_url:
                shop = testing.http_client(base_url)
                testing.check_catalogue(shop)
                testing.check_product_page_is_cached(shop)
                testing.check_price_change(shop)
                testing.check_api(shop)
                assert testing.redis_keys(prefix), "pages were stored in Redis (L2)"
        finally:
            testing.delete_redis_keys(prefix)
