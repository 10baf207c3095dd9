"""The example shop on FastAPI, installed with ``app.add_middleware(ScaleKitMiddleware)``.

Run it (SQLite and in-process caches by default; Postgres and Redis when their URLs are set)::

    scalekit serve examples.fastapi_shop.app:app
    SCALEKIT_POOL_DATABASES_DEFAULT_URL=postgresql://postgres@127.0.0.1/test \\
    SCALEKIT_REDIS_URL=redis://127.0.0.1:6379/0 scalekit serve examples.fastapi_shop.app:app

Pages: ``/`` and ``/products/{product_id}`` (HTML), ``/api/products`` and
``/api/products/{product_id}`` (JSON), ``POST /api/products/{product_id}/price``
(a form field or JSON ``price_cents``), fingerprinted assets under ``/static/``, and ``/metrics``.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from scalekit_fastapi import DB, ScaleKitMiddleware, ainvalidate, cached

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


def create_app(**overrides: Any) -> FastAPI:
    """The shop; ``overrides`` are scalekit settings (tests pass a state_dir, a database URL)."""
    shop = prepare_shop(**overrides)
    app = FastAPI(title="Kettle & Co.")
    templates = Jinja2Templates(directory=TEMPLATES_DIR)
    templates.env.globals.update(asset_url=shop.asset_url, framework="FastAPI")

    # Plain `def` endpoints: the pooled connection is synchronous, FastAPI runs them in its
    # thread pool; the cache decorators work the same on `async def` ones.
    @app.get("/", response_class=HTMLResponse)
    @cached(ttl_seconds=60, tags=["products"])
    def product_list(request: Request, connection: DB) -> Any:
        return templates.TemplateResponse(request, "product_list.html",
                                          {"products": list_products(connection)})

    @app.get("/products/{product_id}", response_class=HTMLResponse)
    @cached(ttl_seconds=300, tags=["product:{product_id}"])
    def product_page(request: Request, product_id: int, connection: DB) -> Any:
        product = get_product(connection, product_id)
        if product is None:
            raise HTTPException(404, "no such product")
        return templates.TemplateResponse(request, "product_detail.html", {"product": product})

    @app.get("/api/products")
    @cached(ttl_seconds=60, tags=["products"])
    def api_products(connection: DB) -> list[dict[str, Any]]:
        return [product_json(product) for product in list_products(connection)]

    @app.get("/api/products/{product_id}")
    @cached(ttl_seconds=300, tags=["product:{product_id}"])
    def api_product(product_id: int, connection: DB) -> dict[str, Any]:
        product = get_product(connection, product_id)
        if product is None:
            raise HTTPException(404, "no such product")
        return product_json(product)

    # The body is read by hand so that a form (`curl -d price_cents=999`) and JSON both work
    # without python-multipart, which FastAPI's Form() would need.
    @app.post("/api/products/{product_id}/price")
    async def change_price(product_id: int, request: Request, connection: DB) -> dict[str, int]:
        price_cents = price_from_body(request.headers.get("content-type"), await request.body())
        if price_cents is None:
            raise HTTPException(400, PRICE_HINT)
        if not set_price(connection, product_id, price_cents):  # commit: table:products
            raise HTTPException(404, "no such product")
        await ainvalidate([f"product:{product_id}", "products"])  # and by tag, explicitly
        return {"id": product_id, "price_cents": price_cents}

    app.add_middleware(ScaleKitMiddleware, **shop.settings)
    return app


app = create_app()
