"""The shop's database preparation survives several workers starting at once."""

from __future__ import annotations

import multiprocessing
import sqlite3
from pathlib import Path

from examples.shop_common.data import PRODUCTS, prepare_database


def test_workers_starting_together_create_and_seed_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=prepare_database, args=(url,)) for _ in range(6)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert [worker.exitcode for worker in workers] == [0] * 6
    with sqlite3.connect(tmp_path / "shop.db") as connection:
        assert connection.execute("select count(*) from products").fetchone() == (len(PRODUCTS),)
