"""Fixtures of the pool tests: Postgres availability, scratch tables, wrapped apps."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from .helpers import PG_DSN, TCPProxy, pg_execute, unique


@pytest.fixture(scope="session")
def postgres_available() -> None:
    try:
        psycopg2.connect(PG_DSN, connect_timeout=3).close()
    except psycopg2.OperationalError as exc:
        pytest.skip(f"PostgreSQL on 127.0.0.1:5432 is not reachable: {exc}")


@pytest.fixture
def pg_table(postgres_available: None) -> Iterator[str]:
    """A fresh ``(id serial, name text, price int)`` table with 3 rows; dropped afterwards."""
    name = unique("sk_pool_products")
    pg_execute(f"CREATE TABLE {name} (id serial PRIMARY KEY, name text, price int)")
    pg_execute(f"INSERT INTO {name} (name, price) VALUES ('a', 1), ('b', 2), ('c', 3)")
    yield name
    pg_execute(f"DROP TABLE IF EXISTS {name}")


@pytest.fixture
def fast_dir(tmp_path: Path) -> Iterator[Path]:
    """A scratch directory on tmpfs when there is one: SQLite's fsync per COMMIT costs ~10 ms
    on this disk, which would make the load tests measure the disk instead of the pool."""
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        directory = Path(tempfile.mkdtemp(prefix="sk-pool-", dir="/dev/shm"))
        yield directory
        shutil.rmtree(directory, ignore_errors=True)
    else:
        yield tmp_path


@pytest.fixture
def sqlite_url(fast_dir: Path) -> str:
    return f"sqlite:///{fast_dir}/pool.sqlite3"


@pytest.fixture
def proxy(postgres_available: None) -> Iterator[TCPProxy]:
    tcp_proxy = TCPProxy()
    yield tcp_proxy
    tcp_proxy.close()


@pytest.fixture
def sqlite_table(sqlite_url: str) -> tuple[str, str]:
    """(url, table) of a SQLite file with a products-like table of 3 rows."""
    from sqlalchemy import create_engine

    name = unique("products")
    engine = create_engine(sqlite_url)
    with engine.begin() as connection:
        connection.exec_driver_sql(f"CREATE TABLE {name} (id integer primary key, name text, price int)")
        connection.exec_driver_sql(f"INSERT INTO {name} (name, price) VALUES ('a', 1), ('b', 2), ('c', 3)")
    engine.dispose()
    return sqlite_url, name


@pytest.fixture(autouse=True)
def close_runtimes_made_by_the_test() -> Iterator[None]:
    """Close the runtimes a test wrapped, so their pools and test-only invalidators (which
    probe tables dropped at teardown) do not outlive it and answer scalekit.invalidate()."""
    from scalekit.runtime import live_runtimes

    before = set(map(id, live_runtimes()))
    yield
    for runtime in live_runtimes():
        if id(runtime) not in before:
            runtime.close()
