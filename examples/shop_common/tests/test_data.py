"""The shop's database preparation survives several workers starting at once; a price change
reads its price from a form or JSON body."""

from __future__ import annotations

import multiprocessing
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from examples.shop_common.data import PRODUCTS, prepare_database, price_from_body

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"


def test_workers_starting_together_create_and_seed_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=prepare_database, args=(url,)) for _ in range(6)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert [worker.exitcode for worker in workers] == [0] * 6
    with closing(sqlite3.connect(tmp_path / "shop.db")) as connection:
        assert connection.execute("select count(*) from products").fetchone() == (len(PRODUCTS),)


@pytest.mark.parametrize(("content_type", "body", "price"), [
    pytest.param(FORM, b"price_cents=999", 999, id="a form, as curl -d sends it"),
    pytest.param(None, b"price_cents=999", 999, id="a form without a content type"),
    pytest.param(JSON, b'{"price_cents": 999}', 999, id="JSON"),
    pytest.param("application/json; charset=utf-8", b'{"price_cents": "999"}', 999, id="JSON, a string"),
    pytest.param(FORM, b"price_cents=lots", None, id="not a number"),
    pytest.param(FORM, b"price_cents=-5", None, id="negative"),
    pytest.param(FORM, b"", None, id="no field"),
    pytest.param(JSON, b'{"price_cents": 9.5}', None, id="JSON, not whole"),
    pytest.param(JSON, b'{"price_cents": true}', None, id="JSON, a boolean"),
    pytest.param(JSON, b'{"price_cents": -5}', None, id="JSON, negative"),
    pytest.param(JSON, b"[1]", None, id="JSON, not an object"),
    pytest.param(JSON, b"{", None, id="JSON, malformed"),
    pytest.param(JSON, b"\xff", None, id="not UTF-8"),
])
def test_a_price_comes_from_a_form_or_json(content_type: str | None, body: bytes, price: int | None) -> None:
    assert price_from_body(content_type, body) == price
