"""The FastAPI shop on Postgres with Redis as its L2 cache."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from examples.fastapi_shop.app import create_app
from examples.shop_common import testing

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def test_the_shop_runs_on_postgres_with_redis_as_l2(tmp_path: Path) -> None:
    prefix = f"scalekit-example-fastapi-{uuid.uuid4().hex[:8]}:"
    with testing.postgres_schema("fastapi") as database_url:
        app = create_app(state_dir=str(tmp_path), pool={"databases": {"default": {"url": database_url}}},
                         redis={"url": testing.REDIS_URL, "key_prefix": prefix})
        shop = testing.asgi_client(app)
        try:
            with shop.client:
                testing.check_catalogue(shop)
                testing.check_product_page_is_cached(shop)
                testing.check_price_change(shop)
                assert testing.redis_keys(prefix), "pages were stored in Redis (L2)"
        finally:
            testing.delete_redis_keys(prefix)
