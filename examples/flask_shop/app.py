"""The example shop on Flask, installed with ``ScaleKit(app)``.

Run it (SQLite and in-process caches by default; Postgres and Redis when their URLs are set)::

    scalekit serve examples.flask_shop.app:app
    SCALEKIT_POOL_DATABASES_DEFAULT_URL=postgresql://postgres@127.0.0.1/test \\
    SCALEKIT_REDIS_URL=redis://127.0.0.1:6379/0 scalekit serve examples.flask_shop.app:app

Pages: ``/`` and ``/products/<id>`` (HTML), ``/api/products`` and ``/api/products/<id>``
(JSON), ``POST /api/products/<id>/price`` (a form field or JSON ``price_cents``), fingerprinted assets
under ``/static/``, and ``/metrics``.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, abort, jsonify, render_template, request
from scalekit_flask import ScaleKit, cached, db, invalidate

from examples.shop_common import (
    PRICE_HINT,
    TEMPLATES_DIR,
    get_product,
    list_products,
    prepare_shop,
    price_from_body,
    product_json,
    set_price,
)

__all__ = ["app", "create_app"]


def create_app(**overrides: Any) -> Flask:
    """The shop; ``overrides`` are scalekit settings (tests pass a state_dir, a database URL)."""
    shop = prepare_shop(**overrides)
    # static_folder=None: the CDN layer serves the fingerprinted assets, Flask need not.
    app = Flask(__name__, template_folder=TEMPLATES_DIR, static_folder=None)
    app.jinja_env.globals.update(asset_url=shop.asset_url, framework="Flask")

    @app.get("/")
    @cached(ttl_seconds=60, tags=["products"])
    def product_list() -> str:
        return render_template("product_list.html", products=list_products(db))

    @app.get("/products/<int:product_id>")
    @cached(ttl_seconds=300, tags=["product:{product_id}"])
    def product_page(product_id: int) -> str:
        product = get_product(db, product_id)
        if product is None:
            abort(404)
        return render_template("product_detail.html", product=product)

    @app.get("/api/products")
    @cached(ttl_seconds=60, tags=["products"])
    def api_products() -> Any:
        return jsonify([product_json(product) for product in list_products(db)])

    @app.get("/api/products/<int:product_id>")
    @cached(ttl_seconds=300, tags=["product:{product_id}"])
    def api_product(product_id: int) -> Any:
        product = get_product(db, product_id)
        if product is None:
            abort(404)
        return jsonify(product_json(product))

    @app.post("/api/products/<int:product_id>/price")
    def change_price(product_id: int) -> Any:
        price_cents = price_from_body(request.content_type, request.get_data())  # a form or JSON
        if price_cents is None:
            abort(400, PRICE_HINT)
        if not set_price(db, product_id, price_cents):  # the commit invalidates table:products
            abort(404)
        invalidate([f"product:{product_id}", "products"])  # and by tag, explicitly
        return jsonify(id=product_id, price_cents=price_cents)

    ScaleKit(app, **shop.settings)
    return app


app = create_app()
