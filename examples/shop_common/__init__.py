"""What the three example shops share: the products table and its seed, the queries, the
Jinja2 templates, the static assets and the start-up that prepares them.

Each framework's ``app.py`` is then only its own routing and glue, so the three read alike.
"""

from __future__ import annotations

from .data import (
    PRICE_HINT,
    PRODUCTS,
    get_product,
    list_products,
    prepare_database,
    price_from_body,
    product_json,
    set_price,
)
from .startup import STATIC_DIR, TEMPLATES_DIR, ShopSetup, prepare_shop

__all__ = [
    "PRICE_HINT",
    "PRODUCTS",
    "STATIC_DIR",
    "TEMPLATES_DIR",
    "ShopSetup",
    "get_product",
    "list_products",
    "prepare_database",
    "prepare_shop",
    "price_from_body",
    "product_json",
    "set_price",
]
