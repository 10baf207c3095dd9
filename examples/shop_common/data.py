"""The shop's one table, its seed and its queries (SQLAlchemy Core: SQLite and Postgres alike).

The queries take the request's pooled connection (``scalekit_flask.db``, ``Depends(db)``,
``scalekit_django.get_db(request)``); the pool layer tags each response that read
``products`` with ``table:products``, and a committed ``set_price`` invalidates that tag, so
every cached page that showed the product is refreshed on its next request.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import (
    Column,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    func,
    select,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

# The builtin demo's body parsing, so that every shop accepts the same price changes.
from scalekit.demo import PRICE_HINT, price_from_body

__all__ = ["PRICE_HINT", "PRODUCTS", "get_product", "list_products", "prepare_database", "price_from_body",
           "product_json", "products", "set_price"]

metadata = MetaData()
products = Table(
    "products", metadata,
    Column("id", Integer, primary_key=True),
    Column("slug", String(80), nullable=False, unique=True),
    Column("name", String(200), nullable=False),
    Column("description", Text, nullable=False),
    Column("price_cents", Integer, nullable=False),
    Column("stock", Integer, nullable=False),
)

PRODUCTS: tuple[dict[str, Any], ...] = tuple(
    {"id": number, "slug": slug, "name": name, "description": description,
     "price_cents": price_cents, "stock": stock}
    for number, (slug, name, description, price_cents, stock) in enumerate([
        ("teapot", "Cast-iron teapot", "Keeps tea hot for an hour; enamel inside.", 4900, 12),
        ("kettle", "Stovetop kettle", "Whistles when the water boils.", 3500, 30),
        ("mug", "Stoneware mug", "Holds 350 ml; dishwasher safe.", 1200, 120),
        ("grinder", "Burr grinder", "Fifteen grind settings, hand-cranked.", 6500, 8),
        ("scale", "Kitchen scale", "0.1 g resolution up to 2 kg.", 2900, 40),
        ("dripper", "Ceramic dripper", "For paper filters, size 02.", 2200, 25),
        ("filters", "Paper filters", "100 filters, size 02, unbleached.", 600, 300),
        ("beans", "House blend beans", "500 g, roasted this week.", 1800, 60),
        ("tin", "Airtight tin", "Keeps 250 g of tea or coffee fresh.", 1500, 75),
        ("tray", "Serving tray", "Oak, 40 x 25 cm.", 4200, 10),
        ("cozy", "Tea cozy", "Hand-knitted wool.", 2400, 18),
        ("spoons", "Measuring spoons", "Set of four, stainless steel.", 900, 90),
    ], start=1)
)


def prepare_database(url: str) -> None:
    """Create the table and seed it on first start (idempotent; the file for SQLite).

    Several workers start at once: one may create or seed between another's check and its
    write ("table already exists", a duplicate key). That worker then simply checks again.
    """
    engine = create_engine(url)
    try:
        for attempt in range(10):
            try:
                metadata.create_all(engine)
                with engine.begin() as connection:
                    if connection.execute(select(func.count()).select_from(products)).scalar_one() == 0:
                        connection.execute(products.insert(), list(PRODUCTS))
                return
            except (OperationalError, IntegrityError, ProgrammingError):
                if attempt == 9:
                    raise
                time.sleep(0.1)
    finally:
        engine.dispose()


def list_products(connection: Connection) -> list[dict[str, Any]]:
    """Every product, by name (the catalogue page and ``GET /api/products``)."""
    rows = connection.execute(select(products).order_by(products.c.name))
    return [dict(row._mapping) for row in rows]


def get_product(connection: Connection, product_id: int) -> dict[str, Any] | None:
    """One product and, for its page, three others to look at; None if there is no such id."""
    row = connection.execute(select(products).where(products.c.id == product_id)).one_or_none()
    if row is None:
        return None
    product = dict(row._mapping)
    others = connection.execute(select(products.c.id, products.c.name)
                                .where(products.c.id != product_id).order_by(products.c.id).limit(3))
    product["others"] = [dict(other._mapping) for other in others]
    return product


def set_price(connection: Connection, product_id: int, price_cents: int) -> bool:
    """Change a price and commit; False if there is no such product.

    The commit is what invalidates: the pool's table tracking bumps ``table:products``.
    """
    changed = connection.execute(update(products).where(products.c.id == product_id)
                                 .values(price_cents=price_cents)).rowcount
    connection.commit()
    return bool(changed)


def product_json(product: dict[str, Any]) -> dict[str, Any]:
    """The API's view of a product (what ``GET /api/products/<id>`` answers)."""
    return {key: product[key] for key in ("id", "slug", "name", "description", "price_cents", "stock")}

