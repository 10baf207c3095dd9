"""The builtin demo: a small shop (plain WSGI, no framework) wrapped with every enabled layer.

It runs on embedded defaults, so it needs nothing installed or running: the products live in
the pool's default SQLite file under ``state_dir``, the cache uses memory and disk, metrics are
on. ``scalekit demo`` serves it; try, in another terminal::

    curl -i http://127.0.0.1:8000/products/1     # twice: Cache-Status says miss, then hit
    curl -i -X POST -d price_cents=999 http://127.0.0.1:8000/products/1/price
    curl -i http://127.0.0.1:8000/products/1     # the write invalidated table:products
    curl http://127.0.0.1:8000/metrics

Routes read through ``scalekit.pool.db()``, so their responses are tagged ``table:products``,
and a committed write invalidates them; ``cache_response`` marks the reads storable.
"""

from __future__ import annotations

import html
import json
import threading
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

import scalekit
from scalekit.cache.rules import cache_response
from scalekit.pool import db

__all__ = ["app", "shop"]

PRODUCTS = (
    (1, "Espresso beans, 1 kg", 2490, 12),
    (2, "Milk frother", 3900, 4),
    (3, "Ceramic cup", 1250, 40),
)
_SCHEMA_READY = threading.Event()
_SCHEMA_LOCK = threading.Lock()

StartResponse = Callable[..., Any]


def shop(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """The unwrapped WSGI app: an HTML index, a JSON API, and a price update."""
    method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "/")
    _ensure_schema()
    parts = [part for part in path.split("/") if part]
    if method in ("GET", "HEAD") and not parts:
        scalekit.set_route("/")
        return _index(start_response)
    if method in ("GET", "HEAD") and parts == ["products"]:
        scalekit.set_route("/products")
        cache_response(ttl_seconds=60)
        return _json(start_response, 200, [_as_dict(row) for row in _all_products()])
    if len(parts) >= 2 and parts[0] == "products" and parts[1].isdigit():
        product_id = int(parts[1])
        if method in ("GET", "HEAD") and len(parts) == 2:
            scalekit.set_route("/products/{id}")
            return _product(start_response, product_id)
        if method == "POST" and parts[2:] == ["price"]:
            scalekit.set_route("/products/{id}/price")
            return _set_price(environ, start_response, product_id)
    if path == "/health":
        return _text(start_response, 200, "ok\n")
    return _text(start_response, 404, f"no page at {path}\n")


def _ensure_schema() -> None:
    # Once per process, on the first request (the pool opens the SQLite file lazily).
    if _SCHEMA_READY.is_set():
        return
    with _SCHEMA_LOCK:
        if _SCHEMA_READY.is_set():
            return
        connection = db().connection()
        connection.exec_driver_sql(
            "CREATE TABLE IF NOT EXISTS products (id INTEGER PRIMARY KEY, name TEXT NOT NULL, "
            "price_cents INTEGER NOT NULL, stock INTEGER NOT NULL)")
        if connection.exec_driver_sql("SELECT count(*) FROM products").scalar() == 0:
            connection.exec_driver_sql(
                "INSERT INTO products (id, name, price_cents, stock) VALUES (?, ?, ?, ?)", list(PRODUCTS))
        connection.commit()
        _SCHEMA_READY.set()


def _all_products() -> list[tuple[Any, ...]]:
    rows = db().connection().exec_driver_sql(
        "SELECT id, name, price_cents, stock FROM products ORDER BY id").all()
    return [tuple(row) for row in rows]


def _as_dict(row: tuple[Any, ...]) -> dict[str, Any]:
    return {"id": row[0], "name": row[1], "price_cents": row[2], "stock": row[3]}


def _index(start_response: StartResponse) -> list[bytes]:
    cache_response(ttl_seconds=30)
    items = "".join(
        f'<li><a href="/products/{row[0]}">{html.escape(row[1])}</a> {row[2] / 100:.2f} EUR</li>'
        for row in _all_products())
    page = (
        "<!doctype html><html><head><meta charset=utf-8><title>scalekit demo shop</title></head>"
        "<body><h1>scalekit demo shop</h1>"
        "<p>Every response passes the metrics, CDN, cache and pool layers. Reload a product page "
        "and watch the <code>Cache-Status</code> header; POST a new price to "
        "<code>/products/ID/price</code> (form field <code>price_cents</code>) and the cached "
        "pages reading that table are invalidated. Metrics: <a href=/metrics>/metrics</a>.</p>"
        f"<ul>{items}</ul></body></html>")
    body = page.encode()
    start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"),
                              ("Content-Length", str(len(body)))])
    return [body]


def _product(start_response: StartResponse, product_id: int) -> list[bytes]:
    row = db().connection().exec_driver_sql(
        "SELECT id, name, price_cents, stock FROM products WHERE id = ?", (product_id,)).first()
    if row is None:
        return _text(start_response, 404, f"no product {product_id}\n")
    cache_response(ttl_seconds=60, tags=[f"product:{product_id}"])
    return _json(start_response, 200, _as_dict(tuple(row)))


def _set_price(environ: dict[str, Any], start_response: StartResponse, product_id: int) -> list[bytes]:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    form = parse_qs(environ["wsgi.input"].read(length).decode("utf-8", "replace"))
    price = form.get("price_cents", [""])[0]
    if not price.isdigit():
        return _text(start_response, 400, "send price_cents=<whole cents>\n")
    connection = db().connection()
    updated = connection.exec_driver_sql(
        "UPDATE products SET price_cents = ? WHERE id = ?", (int(price), product_id)).rowcount
    connection.commit()  # after commit, the pool invalidates table:products fleet-wide
    if not updated:
        return _text(start_response, 404, f"no product {product_id}\n")
    return _json(start_response, 200, {"id": product_id, "price_cents": int(price)})


def _json(start_response: StartResponse, status: int, value: Any) -> list[bytes]:
    body = (json.dumps(value, indent=1) + "\n").encode()
    start_response(f"{status} {'OK' if status == 200 else 'Error'}",
                   [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def _text(start_response: StartResponse, status: int, text: str) -> list[bytes]:
    body = text.encode()
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found"}.get(status, "Error")
    start_response(f"{status} {reason}", [("Content-Type", "text/plain; charset=utf-8"),
                                          ("Content-Length", str(len(body))),
                                          ("Cache-Control", "no-store")])
    return [body]


app = scalekit.wrap(shop)
