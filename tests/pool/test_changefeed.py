"""The change feed: writes made outside the app (psql) invalidate table:NAME in the app, only
once committed, and the listener reconnects after its connection is cut, invalidating every
tracked table because notifications may have been missed meanwhile."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner

import scalekit
from scalekit.pool.changefeed import install_statements, quote_table
from scalekit.pool.commands import db_group

from .helpers import pg_execute, pg_url, unique, wsgi_get

pytestmark = pytest.mark.postgres


@pytest.mark.parametrize(("name", "quoted"), [
    pytest.param("products", '"products"', id="plain"),
    pytest.param("Products", '"products"', id="unquoted folds like Postgres"),
    pytest.param('"Products"', '"Products"', id="quoted kept"),
    pytest.param("shop.products", '"shop"."products"', id="schema-qualified"),
])
def test_table_names_are_quoted_as_postgres_reads_them(name: str, quoted: str) -> None:
    assert quote_table(name) == quoted


def test_install_statements_are_idempotent_statement_triggers() -> None:
    function, drop, create = install_statements(["products"], channel="feed")
    assert function.startswith("CREATE OR REPLACE FUNCTION scalekit_notify_table_change()")
    assert drop == 'DROP TRIGGER IF EXISTS scalekit_change_feed ON "products"'
    assert "AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE" in create
    assert "FOR EACH STATEMENT" in create and "('feed')" in create


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[tuple[str, ...], str]] = []

    def __call__(self, tags: tuple[str, ...], source: str) -> None:
        self.calls.append((tags, source))

    def wait_for(self, tag: str, source: str = "change_feed", timeout_seconds: float = 20) -> None:
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            if any(tag in tags and s == source for tags, s in self.calls):
                return
            time.sleep(0.01)
        raise AssertionError(f"{tag} was not invalidated by {source}; calls: {self.calls}")


def psql(sql: str) -> None:
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-v",
                    "ON_ERROR_STOP=1", "-q", "-c", sql], check=True, capture_output=True, timeout=30)


@pytest.fixture
def feed_tables(postgres_available: None) -> Iterator[tuple[str, str, str]]:
    """Two tables with the change feed installed through the CLI, on a private channel."""
    first, second, channel = unique("sk_feed_a"), unique("sk_feed_b"), unique("sk_channel")
    for table in (first, second):
        pg_execute(f"CREATE TABLE {table} (id int PRIMARY KEY, price int)")
        pg_execute(f"INSERT INTO {table} VALUES (1, 1)")
    result = CliRunner().invoke(db_group, ["install-change-feed", "--url", pg_url("sk_cli"),
                                           "--table", first, "--table", second, "--channel", channel])
    assert result.exit_code == 0, result.output
    assert "change feed installed" in result.output
    yield first, second, channel
    result = CliRunner().invoke(db_group, ["uninstall-change-feed", "--url", pg_url("sk_cli"),
                                           "--table", first, "--table", second])
    assert result.exit_code == 0, result.output
    for table in (first, second):
        pg_execute(f"DROP TABLE {table}")


def hello(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [])
    return [b"hello"]


def feed_app(url: str, channel: str) -> Any:
    app = scalekit.wrap(hello, cache=False, cdn=False, pool={
        "databases": {"default": {"url": url}},
        "change_feed": {"enabled": True, "channel": channel, "reconnect_seconds": 0.05}})
    recorder = Recorder()
    app.runtime.add_invalidator(recorder)
    return app, recorder


def wait_connected(app: Any, connections: int = 1) -> Any:
    wsgi_get(app, "/")  # the first request starts the runtime, hence the listener
    listener = app.runtime.services["pool"].change_feed
    deadline = time.monotonic() + 20
    while not (listener.connected.is_set() and listener.connections >= connections):
        assert time.monotonic() < deadline, "the change feed never connected"
        time.sleep(0.01)
    return listener


@pytest.mark.skipif(shutil.which("psql") is None, reason="psql is not installed")
def test_writes_from_psql_invalidate_once_committed(feed_tables: tuple[str, str, str]) -> None:
    first, second, channel = feed_tables
    app, recorder = feed_app(pg_url(unique("sk_feed_app")), channel)
    wait_connected(app)
    try:
        psql(f"BEGIN; UPDATE {first} SET price = 99; ROLLBACK;")  # never committed
        psql(f"UPDATE {second} SET price = 2")
        recorder.wait_for(f"table:{second}")
        # NOTIFYs arrive in commit order: had the rolled-back write notified, it would be here.
        assert not any(f"table:{first}" in tags for tags, _ in recorder.calls)
        psql(f"UPDATE {first} SET price = 3")
        recorder.wait_for(f"table:{first}")
        psql(f"TRUNCATE {second}")
        recorder.wait_for(f"table:{second}")
    finally:
        app.runtime.close()
    assert not app.runtime.services["pool"].change_feed._thread.is_alive()


def test_listener_reconnects_and_invalidates_every_tracked_table(
        proxy: Any, feed_tables: tuple[str, str, str]) -> None:
    first, second, channel = feed_tables
    app, recorder = feed_app(pg_url(unique("sk_feed_proxy"), port=proxy.port), channel)
    listener = wait_connected(app)
    try:
        assert recorder.calls == []  # the first connection has nothing to catch up on
        proxy.drop_all()  # the database restarts under the listener
        recorder.wait_for(f"table:{first}")
        recorder.wait_for(f"table:{second}")
        wait_connected(app, connections=2)
        pg_execute(f"UPDATE {first} SET price = 5")  # and it keeps listening afterwards
        calls = len(recorder.calls)
        deadline = time.monotonic() + 20
        while len(recorder.calls) == calls and time.monotonic() < deadline:
            time.sleep(0.01)
        assert recorder.calls[-1] == ((f"table:{first}",), "change_feed")
    finally:
        app.runtime.close()
    assert listener.connections == 2


def test_status_command_reports_databases(postgres_available: None) -> None:
    result = CliRunner().invoke(db_group, ["status", "--workers", "2"],
                                env={"SCALEKIT_POOL_DATABASES_DEFAULT_URL": pg_url("sk_status")})
    assert result.exit_code == 0, result.output
    assert "ok   database default: postgresql+psycopg2://postgres@127.0.0.1:5432/test" in result.output
    assert "pool_size=5 max_overflow=10" in result.output
