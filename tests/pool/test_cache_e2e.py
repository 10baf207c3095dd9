"""End to end with the cache: a cached page that read ``products`` is served from the cache; an
UPDATE committed through one instance makes the next request a miss on every instance (tags
and generations through Redis); a rolled-back one does not; an UPDATE made with psql outside
the app does too once the change feed is installed."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner
from sqlalchemy import text

import scalekit
from scalekit.cache.rules import cache_response
from scalekit.pool import db
from scalekit.pool.commands import db_group
from tests.servers import wait_for_fleet_log

from .helpers import WSGICall, pg_url, unique

pytestmark = [pytest.mark.postgres, pytest.mark.redis]
REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(scope="module")
def redis_available() -> None:
    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=2).ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis on 127.0.0.1:6379 is not reachable: {exc}")


def shop(table: str, origin_calls: list[str]) -> Callable[..., Any]:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        path, connection = environ["PATH_INFO"], db().connection()
        origin_calls.append(path)
        if path == "/products":
            cache_response(300)  # no explicit tag: the table read is the tag
            rows = connection.execute(text(f"SELECT name, price FROM {table} ORDER BY id")).all()
            body = json.dumps([list(row) for row in rows]).encode()
        else:
            connection.execute(text(f"UPDATE {table} SET price = price + 1 WHERE name = 'a'"))
            if path == "/price-up":
                connection.commit()
            else:
                connection.rollback()
            body = b"done"
        start_response("200 OK", [("content-type", "application/json"),
                                  ("content-length", str(len(body)))])
        return [body]
    return app


class Instance:
    """One app instance of the fleet (its own runtime, L1 and pool), called in process."""

    def __init__(self, table: str, prefix: str, state_dir: Path, channel: str) -> None:
        self.origin_calls: list[str] = []
        self.app = scalekit.wrap(
            shop(table, self.origin_calls), cdn=False, state_dir=str(state_dir),
            redis={"url": REDIS_URL, "key_prefix": prefix},
            pool={"databases": {"default": {"url": pg_url(unique("sk_e2e"))}},
                  "change_feed": {"enabled": True, "channel": channel}})
        # As a server's first request would; then until the fleet's log is heard.
        self.app.runtime.startup()
        wait_for_fleet_log(self.app)

    def request(self, method: str, path: str) -> tuple[str, list[list[Any]] | bytes]:
        call = WSGICall(self.app, path, method).read().close()
        assert call.code == 200, call.status
        body = b"".join(call.chunks)
        return call.header("cache-status") or "", json.loads(body) if path == "/products" else body

    def get_products(self) -> tuple[bool, list[list[Any]]]:
        status, rows = self.request("GET", "/products")
        return "; hit" in status, rows  # type: ignore[return-value]

    def eventually_fresh(self, price: int) -> None:
        deadline = time.monotonic() + 20
        while True:
            _hit, rows = self.get_products()
            if rows[0] == ["a", price]:
                return
            assert time.monotonic() < deadline, f"still serving {rows} after 20 s"
            time.sleep(0.02)


@pytest.fixture
def fleet(redis_available: None, pg_table: str, tmp_path: Path) -> Iterator[tuple[Instance, Instance, str]]:
    prefix, channel = f"{unique('sk_e2e')}:", unique("sk_e2e_feed")
    first = Instance(pg_table, prefix, tmp_path / "one", channel)
    second = Instance(pg_table, prefix, tmp_path / "two", channel)
    yield first, second, channel
    for instance in (first, second):
        instance.app.runtime.close()
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(f"{prefix}*"):
        client.delete(key)


def test_committed_writes_invalidate_the_fleet_rolled_back_ones_do_not(
        fleet: tuple[Instance, Instance, str]) -> None:
    one, two, _ = fleet
    assert one.get_products() == (False, [["a", 1], ["b", 2], ["c", 3]])
    assert one.get_products() == (True, [["a", 1], ["b", 2], ["c", 3]])  # served from cache
    assert one.origin_calls == ["/products"]
    assert two.get_products()[1] == [["a", 1], ["b", 2], ["c", 3]]
    assert two.get_products()[0]  # the second instance caches it too

    one.request("POST", "/price-down-rolled-back")
    assert one.get_products() == (True, [["a", 1], ["b", 2], ["c", 3]])  # still a hit
    assert two.get_products()[0]

    one.request("POST", "/price-up")  # committed on instance one...
    assert one.get_products() == (False, [["a", 2], ["b", 2], ["c", 3]])  # ...next request misses
    two.eventually_fresh(2)  # ...and so does instance two (Redis pub/sub, milliseconds)


@pytest.mark.skipif(shutil.which("psql") is None, reason="psql is not installed")
def test_update_from_psql_invalidates_through_the_change_feed(
        fleet: tuple[Instance, Instance, str], pg_table: str) -> None:
    one, two, channel = fleet
    result = CliRunner().invoke(db_group, ["install-change-feed", "--url", pg_url("sk_e2e_cli"),
                                           "--table", pg_table, "--channel", channel])
    assert result.exit_code == 0, result.output
    try:
        for instance in (one, two):
            instance.get_products()
            listener = instance.app.runtime.services["pool"].change_feed
            deadline = time.monotonic() + 20
            while not listener.connected.is_set():
                assert time.monotonic() < deadline
                time.sleep(0.01)
        assert one.get_products()[0] and two.get_products()[0]
        subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-q", "-c",
                        f"UPDATE {pg_table} SET price = 40 WHERE name = 'a'"], check=True, timeout=30)
        one.eventually_fresh(40)
        two.eventually_fresh(40)
    finally:
        CliRunner().invoke(db_group, ["uninstall-change-feed", "--url", pg_url("sk_e2e_cli"),
                                      "--table", pg_table])


