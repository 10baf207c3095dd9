"""The builtin demo: a small shop (plain WSGI, no framework) wrapped with every enabled layer.

It runs on embedded defaults, so it needs nothing installed or running: the products live in
the pool's default SQLite file under ``state_dir``, the cache uses memory and disk, metrics are
on. ``scalekit demo`` serves it. Its routes are those of the example shops (``scalekit demo
--framework flask`` and the others), so the README's walkthrough works on each::

    curl -si http://127.0.0.1:8000/products/1     # twice: Cache-Status says miss, then hit
    curl -s -d price_cents=999 http://127.0.0.1:8000/api/products/1/price    # or JSON
    curl -si http://127.0.0.1:8000/products/1     # the write invalidated table:products
    curl http://127.0.0.1:8000/metrics

Routes read through ``scalekit.pool.db()``, so their responses are tagged ``table:products``,
and a committed write invalidates them; ``cache_response`` marks the reads storable.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

from sqlalchemy import URL, create_engine

import scalekit
from scalekit.cache.rules import cache_response
from scalekit.pool import db
from scalekit.pool.engines import engine_url

__all__ = ["PRICE_HINT", "app", "create_app", "price_from_body", "shop"]

PRODUCTS = (
    (1, "Espresso beans, 1 kg", 2490, 12),
    (2, "Milk frother", 3900, 4),
    (3, "Ceramic cup", 1250, 40),
)
app: Any  # the wrapped shop that `scalekit demo` serves, created on first access (__getattr__)
PRICE_HINT = "send price_cents as a whole number, as a form field (-d price_cents=999) or in JSON"

StartResponse = Callable[..., Any]


def shop(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """The unwrapped WSGI app: HTML pages, a JSON API, and a price update."""
    method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "/")
    reading = method in ("GET", "HEAD")
    parts = [part for part in path.split("/") if part]
    api = parts[:1] == ["api"]
    rest = parts[1:] if api else parts
    if reading and not parts:
        scalekit.set_route("/")
        return _index(start_response)
    if rest[:1] != ["products"]:
        return _text(start_response, 200, "ok\n") if path == "/health" else _not_found(start_response, path)
    if reading and rest == ["products"] and api:
        scalekit.set_route("/api/products")
        cache_response(ttl_seconds=60)
        return _json(start_response, 200, [_as_dict(row) for row in _all_products()])
    product_id = int(rest[1]) if len(rest) >= 2 and rest[1].isdigit() else None
    if product_id is None:
        return _not_found(start_response, path)
    if reading and len(rest) == 2:
        scalekit.set_route("/api/products/{id}" if api else "/products/{id}")
        return _product(start_response, product_id, as_json=api)
    if method == "POST" and api and rest[2:] == ["price"]:
        scalekit.set_route("/api/products/{id}/price")
        return _set_price(environ, start_response, product_id)
    return _not_found(start_response, path)


def create_app(**settings: Any) -> Any:
    """The shop wrapped with ``settings`` (as for :func:`scalekit.wrap`), its table created and
    seeded in the pool's default database if it is not there yet."""
    wrapped = scalekit.wrap(shop, **settings)
    config = wrapped.runtime.config
    _prepare_database(engine_url(config.pool.databases["default"], config.state_dir))
    return wrapped


def _prepare_database(url: URL) -> None:
    # At start-up, with an engine of its own: a request that wrote the seed would invalidate
    # table:products while reading it, and so could not be stored (the first miss of the README).
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql(
                "CREATE TABLE IF NOT EXISTS products (id INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                "price_cents INTEGER NOT NULL, stock INTEGER NOT NULL)")
            if connection.exec_driver_sql("SELECT count(*) FROM products").scalar() == 0:
                connection.exec_driver_sql(
                    "INSERT INTO products (id, name, price_cents, stock) VALUES (?, ?, ?, ?)", list(PRODUCTS))
    finally:
        engine.dispose()


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
    return _html(start_response, "scalekit demo shop", (
        "<p>Every response passes the metrics, CDN, cache and pool layers. Reload a product page "
        "and watch the <code>Cache-Status</code> header; POST a new price to "
        "<code>/api/products/ID/price</code> (form field or JSON <code>price_cents</code>) and the "
        "cached pages reading that table are invalidated. JSON: <a href=/api/products>"
        "/api/products</a>. Metrics: <a href=/metrics>/metrics</a>.</p>"
        f"<ul>{items}</ul>"))


def _product(start_response: StartResponse, product_id: int, *, as_json: bool) -> list[bytes]:
    row = db().connection().exec_driver_sql(
        "SELECT id, name, price_cents, stock FROM products WHERE id = ?", (product_id,)).first()
    if row is None:
        return _text(start_response, 404, f"no product {product_id}\n")
    cache_response(ttl_seconds=60, tags=[f"product:{product_id}"])
    product = _as_dict(tuple(row))
    if as_json:
        return _json(start_response, 200, product)
    return _html(start_response, product["name"], (
        f'<p class="price" data-cents="{product["price_cents"]}">{product["price_cents"] / 100:.2f} EUR</p>'
        f'<p class="stock">{product["stock"]} in stock</p><p><a href="/">all products</a></p>'))


def _set_price(environ: dict[str, Any], start_response: StartResponse, product_id: int) -> list[bytes]:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    price = price_from_body(environ.get("CONTENT_TYPE"), environ["wsgi.input"].read(length))
    if price is None:
        return _text(start_response, 400, PRICE_HINT + "\n")
    connection = db().connection()
    updated = connection.exec_driver_sql(
        "UPDATE products SET price_cents = ? WHERE id = ?", (price, product_id)).rowcount
    connection.commit()  # after commit, the pool invalidates table:products fleet-wide
    if not updated:
        return _text(start_response, 404, f"no product {product_id}\n")
    return _json(start_response, 200, {"id": product_id, "price_cents": price})


def price_from_body(content_type: str | None, body: bytes) -> int | None:
    """``price_cents`` from a price change's body, a form (``curl -d price_cents=999``) or JSON
    (``{"price_cents": 999}``); None unless it is a whole number >= 0 (the shops answer 400).

    The example shops use it too, so every shop accepts the same bodies.

    >>> price_from_body("application/x-www-form-urlencoded", b"price_cents=999")
    999
    >>> price_from_body("application/json", b'{"price_cents": "lots"}') is None
    True
    """
    text = body.decode("utf-8", "replace")
    if (content_type or "").split(";")[0].strip().lower() == "application/json":
        try:
            payload = json.loads(text)
        except ValueError:
            return None
        value = payload.get("price_cents") if isinstance(payload, dict) else None
    else:
        fields = parse_qs(text).get("price_cents")
        value = fields[0] if fields else None
    if isinstance(value, int) and not isinstance(value, bool):
        return value if value >= 0 else None
    return int(value) if isinstance(value, str) and value.strip().isdigit() else None


def _html(start_response: StartResponse, title: str, content: str) -> list[bytes]:
    page = (f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(title)}</title></head>"
            f"<body><h1>{html.escape(title)}</h1>{content}</body></html>")
    body = page.encode()
    start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"),
                              ("Content-Length", str(len(body)))])
    return [body]


def _json(start_response: StartResponse, status: int, value: Any) -> list[bytes]:
    body = (json.dumps(value, indent=1) + "\n").encode()
    start_response(f"{status} {'OK' if status == 200 else 'Error'}",
                   [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def _not_found(start_response: StartResponse, path: str) -> list[bytes]:
    return _text(start_response, 404, f"no page at {path}\n")


def _text(start_response: StartResponse, status: int, text: str) -> list[bytes]:
    body = text.encode()
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found"}.get(status, "Error")
    start_response(f"{status} {reason}", [("Content-Type", "text/plain; charset=utf-8"),
                                          ("Content-Length", str(len(body))),
                                          ("Cache-Control", "no-store")])
    return [body]


def __getattr__(name: str) -> Any:
    # `scalekit.demo:app` is wrapped on first access, not at import, so that the example shops
    # can import price_from_body without creating a second app (and its start-up warnings).
    if name == "app":
        wrapped = globals()["app"] = create_app()
        return wrapped
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
