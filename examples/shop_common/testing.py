"""The checks every shop's own tests run, over whichever test client its framework has.

Each shop's ``tests/`` builds its app (isolated state directory and database) and a
:class:`ShopClient`, then calls these checks, so the three shops are held to one behaviour.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from scalekit.metrics import render_exposition

from .data import PRODUCTS

__all__ = ["POSTGRES_URL", "REDIS_URL", "Page", "ShopChecks", "ShopClient", "asgi_client",
           "check_a_price_change_without_a_price_is_refused", "check_api", "check_assets",
           "check_catalogue", "check_price_change", "check_price_change_by_form",
           "check_product_page_is_cached", "check_route_labels", "delete_redis_keys", "http_client",
           "isolate_state_dir", "postgres_schema", "redis_keys", "wait_for", "wsgi_client"]

FINGERPRINTED_CSS = re.compile(r'href="(/static/css/shop\.[0-9a-f]{12}\.css)"')
HIT = re.compile(r";\s*hit\b")


POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/0"


@contextlib.contextmanager
def postgres_schema(name: str) -> Iterator[str]:
    """A private schema in the shared Postgres test database, dropped afterwards; yields the
    database URL whose connections use it (``search_path``), so ``products`` is the shop's own."""
    import psycopg2

    schema = f"scalekit_example_{name}_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(POSTGRES_URL)
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            cursor.execute(f'CREATE SCHEMA "{schema}"')
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.close()


def redis_keys(prefix: str) -> list[bytes]:
    """The keys the shop stored in Redis under ``prefix`` (its L2 entries and generations)."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        return list(client.scan_iter(match=f"{prefix}*"))
    finally:
        client.close()


def delete_redis_keys(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        for key in client.scan_iter(match=f"{prefix}*"):
            client.delete(key)
    finally:
        client.close()


def wait_for(check: Callable[[], bool], *, what: str, timeout_seconds: float = 10.0) -> None:
    """Poll ``check`` (another instance learns of an invalidation within milliseconds)."""
    deadline = time.monotonic() + timeout_seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_seconds} s waiting for {what}")
        time.sleep(0.02)


def isolate_state_dir() -> None:
    """Importing a shop builds it; keep what that writes out of the checkout."""
    os.environ.setdefault("SCALEKIT_STATE_DIR", tempfile.mkdtemp(prefix="scalekit-example-"))


@dataclass(frozen=True)
class Page:
    status: int
    headers: dict[str, str]
    text: str

    def json(self) -> Any:
        return json.loads(self.text)

    @property
    def is_hit(self) -> bool:
        return bool(HIT.search(self.headers.get("cache-status", "")))


class ShopClient:
    """``get``, ``post_json`` and ``post_form`` over a WSGI app (werkzeug's client) or an ASGI app
    (Starlette's)."""

    def __init__(self, client: Any, *, asgi: bool) -> None:
        self.client = client
        self.asgi = asgi

    def get(self, path: str) -> Page:
        return self._page(self.client.get(path) if self.asgi else self.client.get(path, buffered=True))

    def post_json(self, path: str, payload: Any) -> Page:
        if self.asgi:
            return self._page(self.client.post(path, json=payload))
        return self._page(self.client.post(path, json=payload, buffered=True))

    def post_form(self, path: str, fields: dict[str, str]) -> Page:
        """A POST as ``curl -d name=value`` sends it (application/x-www-form-urlencoded)."""
        if self.asgi:
            return self._page(self.client.post(path, data=fields))
        return self._page(self.client.post(path, data=fields, buffered=True))

    def _page(self, response: Any) -> Page:
        text = response.text if self.asgi else response.get_data(as_text=True)
        return Page(response.status_code, {k.lower(): v for k, v in response.headers.items()}, text)


def http_client(base_url: str) -> ShopClient:
    """A :class:`ShopClient` over real HTTP (a server started by the test)."""
    import httpx

    return ShopClient(httpx.Client(base_url=base_url, timeout=20), asgi=True)


def wsgi_client(app: Any) -> ShopClient:
    from werkzeug.test import Client

    return ShopClient(Client(app), asgi=False)


def asgi_client(app: Any) -> ShopClient:
    from starlette.testclient import TestClient

    return ShopClient(TestClient(app), asgi=True)


def check_catalogue(shop: ShopClient) -> None:
    page = shop.get("/")
    assert page.status == 200
    assert page.headers["content-type"].startswith("text/html")
    for product in PRODUCTS:
        assert product["name"] in page.text
    assert FINGERPRINTED_CSS.search(page.text), "the stylesheet URL carries its content hash"


def check_product_page_is_cached(shop: ShopClient) -> None:
    first, second = shop.get("/products/1"), shop.get("/products/1")
    assert first.status == second.status == 200
    assert PRODUCTS[0]["name"] in first.text
    assert not first.is_hit and second.is_hit
    assert second.text == first.text
    assert int(second.headers["age"]) >= 0
    assert shop.get("/products/999").status == 404


def check_api(shop: ShopClient) -> None:
    listed = shop.get("/api/products").json()
    assert sorted(item["slug"] for item in listed) == sorted(p["slug"] for p in PRODUCTS)
    one = shop.get("/api/products/3")
    assert one.json() == {key: PRODUCTS[2][key] for key in one.json()}
    assert shop.get("/api/products/3").is_hit


def check_price_change(shop: ShopClient) -> None:
    shop.get("/products/2")
    shop.get("/api/products/2")
    assert shop.get("/products/2").is_hit
    changed = shop.post_json("/api/products/2/price", {"price_cents": 4321})
    assert changed.status == 200 and changed.json() == {"id": 2, "price_cents": 4321}
    page, api = shop.get("/products/2"), shop.get("/api/products/2")
    assert not page.is_hit and 'data-cents="4321"' in page.text
    assert not api.is_hit and api.json()["price_cents"] == 4321
    assert shop.post_json("/api/products/999/price", {"price_cents": 1}).status == 404


def check_price_change_by_form(shop: ShopClient) -> None:
    shop.get("/products/5")
    assert shop.get("/products/5").is_hit
    changed = shop.post_form("/api/products/5/price", {"price_cents": "777"})
    assert changed.status == 200 and changed.json() == {"id": 5, "price_cents": 777}
    page = shop.get("/products/5")
    assert not page.is_hit and 'data-cents="777"' in page.text
    assert shop.post_form("/api/products/999/price", {"price_cents": "1"}).status == 404


def check_a_price_change_without_a_price_is_refused(shop: ShopClient) -> None:
    for refused in (shop.post_form("/api/products/5/price", {"price_cents": "lots"}),
                    shop.post_form("/api/products/5/price", {}),
                    shop.post_json("/api/products/5/price", {"price": 1}),
                    shop.post_json("/api/products/5/price", ["price_cents", 1])):
        assert refused.status == 400, refused
        assert "price_cents" in refused.text
    assert shop.get("/api/products/5").json()["price_cents"] == PRODUCTS[4]["price_cents"]


def check_assets(shop: ShopClient) -> None:
    match = FINGERPRINTED_CSS.search(shop.get("/").text)
    assert match is not None
    asset = shop.get(match.group(1))
    assert asset.status == 200
    assert "immutable" in asset.headers["cache-control"]
    assert "font-family" in asset.text


def check_route_labels(shop: ShopClient, product_route: str) -> None:
    shop.get("/products/4")
    body = render_exposition()
    text = (body[0] if isinstance(body, tuple) else body).decode()
    assert f'route="{product_route}"' in text
    assert 'route="/products/4"' not in text


class ShopChecks:
    """Every check as a test method: a shop's tests subclass it (``class TestShop(ShopChecks)``)
    and provide a ``shop`` fixture and its framework's ``product_route`` label."""

    product_route = ""

    def test_the_catalogue_lists_every_product_with_fingerprinted_assets(self, shop: ShopClient) -> None:
        check_catalogue(shop)

    def test_a_product_page_is_served_from_the_cache_the_second_time(self, shop: ShopClient) -> None:
        check_product_page_is_cached(shop)

    def test_the_json_api_reads_through_the_pool(self, shop: ShopClient) -> None:
        check_api(shop)

    def test_a_price_change_refreshes_the_cached_pages(self, shop: ShopClient) -> None:
        check_price_change(shop)

    def test_a_form_post_changes_the_price_as_curl_d_sends_it(self, shop: ShopClient) -> None:
        check_price_change_by_form(shop)

    def test_a_price_change_without_a_whole_number_price_is_a_400(self, shop: ShopClient) -> None:
        check_a_price_change_without_a_price_is_refused(shop)

    def test_fingerprinted_assets_are_served_immutable(self, shop: ShopClient) -> None:
        check_assets(shop)

    def test_metrics_count_the_product_page_under_its_route_template(self, shop: ShopClient) -> None:
        check_route_labels(shop, self.product_route)
