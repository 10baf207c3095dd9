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


class TestShop(testing.ShopChecks):
    product_route = "/products/{product_id}"  # the route's path
