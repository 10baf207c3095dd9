"""The Flask shop, through Flask's WSGI app with werkzeug's test client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from examples.flask_shop.app import create_app
from examples.shop_common import testing
from examples.shop_common.testing import ShopClient


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[ShopClient]:
    app = create_app(state_dir=str(tmp_path))  # a fresh SQLite file, seeded on first start
    yield testing.wsgi_client(app)
    app.extensions["scalekit"].close()


def test_the_catalogue_lists_every_product_with_fingerprinted_assets(shop: ShopClient) -> None:
    testing.check_catalogue(shop)


def test_a_product_page_is_served_from_the_cache_the_second_time(shop: ShopClient) -> None:
    testing.check_product_page_is_cached(shop)


def test_the_json_api_reads_through_the_pool(shop: ShopClient) -> None:
    testing.check_api(shop)


def test_a_price_change_refreshes_the_cached_pages(shop: ShopClient) -> None:
    testing.check_price_change(shop)


def test_fingerprinted_assets_are_served_immutable(shop: ShopClient) -> None:
    testing.check_assets(shop)


def test_metrics_count_the_product_page_under_its_url_rule(shop: ShopClient) -> None:
    testing.check_route_labels(shop, "/products/<int:product_id>")
