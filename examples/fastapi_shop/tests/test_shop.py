"""The FastAPI shop, with Starlette's test client (lifespan included)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from examples.fastapi_shop.app import create_app
from examples.shop_common import testing
from examples.shop_common.testing import ShopClient


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[ShopClient]:
    client = testing.asgi_client(create_app(state_dir=str(tmp_path)))
    with client.client:  # runs lifespan: start-up and shutdown of the layers
        yield client


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


def test_metrics_count_the_product_page_under_its_route_template(shop: ShopClient) -> None:
    testing.check_route_labels(shop, "/products/{product_id}")
