"""The builtin demo shop (``scalekit demo``) answers the routes of the example shops: the
README's walkthrough (GET miss, GET hit, a form or JSON price change, the new price shown)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from werkzeug.test import Client

from scalekit import demo

HIT = "; hit"


@pytest.fixture
def client(tmp_path: Path) -> Iterator[Client]:
    app = demo.create_app(state_dir=str(tmp_path))
    yield Client(app)
    app.runtime.close()


def test_a_product_page_misses_then_hits_and_a_form_post_changes_its_price(client: Client) -> None:
    first, second = client.get("/products/1"), client.get("/products/1")
    assert first.status_code == second.status_code == 200
    assert "fwd=uri-miss; stored" in first.headers["Cache-Status"] and HIT in second.headers["Cache-Status"]
    assert 'data-cents="2490"' in first.get_data(as_text=True)
    changed = client.post("/api/products/1/price", data={"price_cents": "999"})  # as curl -d sends it
    assert changed.status_code == 200 and changed.get_json() == {"id": 1, "price_cents": 999}
    after = client.get("/products/1")
    assert HIT not in after.headers["Cache-Status"] and 'data-cents="999"' in after.get_data(as_text=True)
    assert client.get("/api/products/1").get_json()["price_cents"] == 999


def test_the_json_api_and_a_json_price_change(client: Client) -> None:
    listed = client.get("/api/products").get_json()
    assert [product["id"] for product in listed] == [1, 2, 3]
    assert HIT in client.get("/api/products").headers["Cache-Status"]
    assert client.post("/api/products/2/price", json={"price_cents": 1234}).status_code == 200
    assert client.get("/api/products/2").get_json()["price_cents"] == 1234
    assert client.get("/api/products").get_json()[1]["price_cents"] == 1234  # invalidated too


@pytest.mark.parametrize(("method", "path", "body", "status"), [
    pytest.param("POST", "/api/products/1/price", {"price_cents": "lots"}, 400, id="not a number"),
    pytest.param("POST", "/api/products/1/price", {}, 400, id="no price"),
    pytest.param("POST", "/api/products/9/price", {"price_cents": "1"}, 404, id="no such product"),
    pytest.param("GET", "/products/9", None, 404, id="no such page"),
    pytest.param("GET", "/api/products/x", None, 404, id="not an id"),
    pytest.param("POST", "/products/1/price", {"price_cents": "1"}, 404, id="the API's path only"),
    pytest.param("GET", "/nowhere", None, 404, id="unknown path"),
])
def test_wrong_requests_are_told_what_was_wrong(client: Client, method: str, path: str,
                                                body: dict[str, str] | None, status: int) -> None:
    response = client.open(path, method=method, data=body)
    assert response.status_code == status
    if status == 400:
        assert "price_cents" in response.get_data(as_text=True)
    assert client.get("/api/products/1").get_json()["price_cents"] == 2490


def test_importing_the_module_wraps_nothing_until_app_is_asked_for() -> None:
    # The example shops import price_from_body from here; `scalekit.demo:app` is what is served.
    code = ("import scalekit, scalekit.demo as demo; before = len(scalekit.live_runtimes()); "
            "app = demo.app; assert demo.app is app; print(before, len(scalekit.live_runtimes()))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["0", "1"]
