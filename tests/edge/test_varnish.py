"""Varnish for real (deploy/varnish/default.vcl, vmod_xkey) in front of a scalekit app under
gunicorn with Postgres and Redis: a committed UPDATE makes Varnish stop serving the old page
within 1 s (a deadline on correctness, polled), because the invalidation's purge reaches it
through the fleet's queue. The VCL's own promises are checked on the way: PURGE refused on the
traffic socket, tags hidden from clients, a URL purge drops that URL."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.servers import free_port, run_server

from .harness import REDIS_URL, redis_prefix
from .varnish import Varnish, running_varnish

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.server]

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture
def table() -> Iterator[str]:
    psycopg2 = pytest.importorskip("psycopg2")
    name = f"sk_edge_products_{uuid.uuid4().hex[:8]}"
    try:
        connection = psycopg2.connect("host=127.0.0.1 dbname=test user=postgres", connect_timeout=3)
    except psycopg2.OperationalError as error:
        pytest.skip(f"PostgreSQL on 127.0.0.1:5432 is not reachable: {error}")
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, name text, price int)")
        cursor.execute(f"INSERT INTO {name} VALUES (1, 'lamp', 10), (2, 'desk', 200)")
    try:
        yield name
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TABLE IF EXISTS {name}")
        connection.close()


@pytest.fixture
def change_feed(table: str) -> Iterator[str]:
    """A change feed on ``table`` (its triggers notify this channel), removed after the app and
    the edge have stopped."""
    import psycopg2

    from scalekit.pool.changefeed import install_statements

    channel = f"sk_edge_feed_{uuid.uuid4().hex[:8]}"
    with contextlib.closing(psycopg2.connect("host=127.0.0.1 dbname=test user=postgres",
                                             connect_timeout=3)) as connection:
        connection.autocommit = True
        with connection.cursor() as cursor:
            for statement in install_statements([table], channel=channel):
                cursor.execute(statement)
        try:
            yield channel
        finally:
            with connection.cursor() as cursor:
                cursor.execute(install_statements([table], channel=channel)[1])


Edge = Callable[..., tuple[Varnish, httpx.Client]]


@pytest.fixture
def edge() -> Iterator[Edge]:
    """Starts the app under gunicorn and the shipped Varnish in front of it; returns the edge and
    a client. Every page is shared for 300 s by a CDN rule. With ``table``, the app reads that
    table through the pool, emits xkey surrogate keys and purges Varnish through the fleet's
    queue in Redis (a key prefix of its own); without, it runs without Redis. ``settings`` are
    added to the app's environment. Everything stops when the test ends."""
    with contextlib.ExitStack() as stack:
        def start(*, table: str | None = None, settings: dict[str, str] | None = None) -> tuple[Varnish, httpx.Client]:
            purge_port = free_port()
            environment = {
                "SCALEKIT_ALLOWED_HOSTS": "127.0.0.1",
                "SCALEKIT_REDIS_URL": "",
                "SCALEKIT_CDN_RULES": json.dumps([{"path": "/**", "policy": {
                    "public": True, "shared_max_age_seconds": 300}}]),
            }
            if table is not None:
                environment.update({
                    "SK_EDGE_TABLE": table,
                    "SCALEKIT_REDIS_URL": REDIS_URL, "SCALEKIT_REDIS_KEY_PREFIX": stack.enter_context(redis_prefix()),
                    "SCALEKIT_POOL_DATABASES_DEFAULT_URL": PG_URL,
                    "SCALEKIT_CDN_SURROGATE_KEYS": "varnish",
                    "SCALEKIT_CDN_PURGE_TARGETS_EDGE_KIND": "varnish",
                    "SCALEKIT_CDN_PURGE_TARGETS_EDGE_URLS": f"http://127.0.0.1:{purge_port}",
                })
            environment.update(settings or {})
            app_url = stack.enter_context(run_server("gunicorn", "tests.edge.varnish_app:app", env=environment))
            app_port = int(app_url.rsplit(":", 1)[1])
            varnish = stack.enter_context(running_varnish(app_port, purge_port=purge_port))
            return varnish, stack.enter_context(httpx.Client(timeout=10))

        yield start


def _watch_price(client: httpx.Client, page: str, price: int) -> list[tuple[float, int, str]]:
    """(seconds since now, price, X-Cache-Status) of each read of ``page`` for up to 1 s, until
    it shows ``price``."""
    started = time.monotonic()
    seen: list[tuple[float, int, str]] = []
    while time.monotonic() < started + 1.0:
        shown, status = _price(client, page)
        seen.append((time.monotonic() - started, shown, status))
        if shown == price:
            break
        time.sleep(0.01)
    return seen


def _price(client: httpx.Client, url: str) -> tuple[int, str]:
    response = client.get(url)
    assert response.status_code == 200, response.text
    assert "xkey" not in response.headers  # the tags are for Varnish only
    return json.loads(response.text)["price"], response.headers["x-cache-status"]


def test_a_committed_update_stops_varnish_serving_the_old_page_within_a_second(table: str, edge: Edge) -> None:
    varnish, client = edge(table=table)
    page = f"{varnish.url}/products/1"
    assert _price(client, page) == (10, "MISS")
    assert _price(client, page) == (10, "HIT")
    assert _price(client, f"{varnish.url}/products/2") == (200, "MISS")

    refused = client.request("PURGE", page, headers={"xkey-purge": f"table:{table}"})
    assert refused.status_code == 403  # purges only on the purge socket
    assert _price(client, page) == (10, "HIT")

    assert client.post(f"{page}?price=11").status_code == 200  # passed to the app
    seen = _watch_price(client, page, 11)
    assert seen and seen[-1][1] == 11, f"Varnish still served the old page 1 s after the commit: {seen[-3:]}"
    # The other product carried the same table tag: purged too, fresh from the app.
    assert _price(client, f"{varnish.url}/products/2") == (200, "MISS")
    assert _price(client, page) == (11, "HIT")

    # No tag on a note: a POST to its URL purges that URL (RFC 9111 §4.4).
    note = f"{varnish.url}/notes/7"
    assert client.post(note, content="first").status_code == 200
    assert [client.get(note).headers["x-cache-status"] for _ in range(2)] == ["MISS", "HIT"]
    assert client.post(note, content="second").status_code == 200
    posted = time.monotonic()
    while client.get(note).json()["note"] != "second" and time.monotonic() < posted + 1.0:
        time.sleep(0.01)
    assert client.get(note).json() == {"note": "second"}


def test_a_write_outside_the_app_stops_varnish_serving_the_old_page_within_a_second(
        table: str, change_feed: str, edge: Edge) -> None:
    # The change feed is an invalidation source like the others: a write from psql, a cron job
    # or another service (no request of this app involved) reaches the edge through the queue.
    import psycopg2

    varnish, client = edge(table=table, settings={"SCALEKIT_POOL_CHANGE_FEED_ENABLED": "true",
                                                  "SCALEKIT_POOL_CHANGE_FEED_CHANNEL": change_feed})
    writer = psycopg2.connect("host=127.0.0.1 dbname=test user=postgres", connect_timeout=3)
    writer.autocommit = True
    with contextlib.closing(writer):
        # The listener connects after the worker's first request; until it does, a
        # NOTIFY is lost. Write to the other product until its page changes at the edge.
        other = f"{varnish.url}/products/2"
        assert _price(client, other) == (200, "MISS")
        deadline = time.monotonic() + 20
        while _price(client, other)[0] != 201:
            assert time.monotonic() < deadline, "the app's change feed never purged the edge"
            with writer.cursor() as cursor:
                cursor.execute(f"UPDATE {table} SET price = 201 WHERE id = 2")
            time.sleep(0.2)
        page = f"{varnish.url}/products/1"
        assert _price(client, page) == (10, "MISS")
        assert _price(client, page) == (10, "HIT")
        with writer.cursor() as cursor:
            cursor.execute(f"UPDATE {table} SET price = 12 WHERE id = 1")
        seen = _watch_price(client, page, 12)
        assert seen and seen[-1][1] == 12, \
            f"Varnish still served the old page 1 s after a write outside the app: {seen[-3:]}"
        assert _price(client, page) == (12, "HIT")


def test_a_users_page_is_never_shared_at_the_edge_and_analytics_cookies_keep_nothing_out(edge: Edge) -> None:
    # A CDN rule shares every page for 300 s. The shipped VCL hashes requests whose cookies are
    # not session cookies; the app's answer to one carrying "remember=alice" must leave private.
    varnish, client = edge()
    page = f"{varnish.url}/whoami"
    alice = client.get(page, headers={"Cookie": "_ga=GA1.2.3.4; remember=alice; _gid=GA1.2.5"})
    assert alice.json() == {"cookies": "remember=alice"}  # analytics cookies dropped at the edge
    assert "private" in alice.headers["cache-control"]
    anonymous = [client.get(page) for _ in range(2)]
    assert [response.json() for response in anonymous] == [{"cookies": ""}] * 2
    assert [response.headers["x-cache-status"] for response in anonymous] == ["MISS", "HIT"]
    tracked = client.get(page, headers={"Cookie": "_ga=GA1.2.3.4; _fbp=fb.1"})
    assert (tracked.json(), tracked.headers["x-cache-status"]) == ({"cookies": ""}, "HIT")
