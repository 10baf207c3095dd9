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


class TestShop(testing.ShopChecks):
    product_route = "/products/<int:product_id>"  # Flask's URL rule
