"""The Flask shop on Postgres and Redis: two instances (a fleet of two) share the database, the
L2 cache and the invalidations."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from examples.flask_shop.app import create_app
from examples.shop_common import testing
from examples.shop_common.testing import ShopClient

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[tuple[ShopClient, ShopClient, str]]:
    prefix = f"scalekit-example-flask-{uuid.uuid4().hex[:8]}:"
    with testing.postgres_schema("flask") as database_url:
        settings: dict[str, Any] = {"pool": {"databases": {"default": {"url": database_url}}},
                                    "redis": {"url": testing.REDIS_URL, "key_prefix": prefix}}
        first = create_app(state_dir=str(tmp_path / "a"), **settings)
        second = create_app(state_dir=str(tmp_path / "b"), **settings)
        try:
            yield testing.wsgi_client(first), testing.wsgi_client(second), prefix
        finally:
            first.extensions["scalekit"].close()
            second.extensions["scalekit"].close()
            testing.delete_redis_keys(prefix)


def test_the_shop_runs_on_postgres_with_redis_as_l2(fleet: tuple[ShopClient, ShopClient, str]) -> None:
    first, _, prefix = fleet
    testing.check_catalogue(first)
    testing.check_product_page_is_cached(first)
    testing.check_price_change(first)
    assert testing.redis_keys(prefix), "pages were stored in Redis (L2)"


def test_a_price_change_on_one_instance_refreshes_the_other(fleet: tuple[ShopClient, ShopClient, str]) -> None:
    first, second, _ = fleet
    second.get("/products/5")
    assert second.get("/products/5").is_hit
    assert first.post_json("/api/products/5/price", {"price_cents": 777}).status == 200
    testing.wait_for(lambda: 'data-cents="777"' in second.get("/products/5").text,
                     what="the other instance to serve the new price")
