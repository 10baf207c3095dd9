"""Slow readers never hold pooled connections for a body that was fully produced.

A response whose body exists whole when the app is done with it (a WSGI list, a Flask or
Django non-streaming response, an ASGI response once its last body message is sent) gives its
connections back before the server transfers it; a stream keeps them to its end unless the app
called ``release_at_response_start()``. Shown in-process at the moment each message leaves the
layer, and under gunicorn and uvicorn with real clients that read a few bytes and stop: with a
pool of two, two such clients never keep a third from being answered, and nothing leaks.
"""

from __future__ import annotations

import asyncio
import contextvars
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, closing
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from scalekit.pool import RequestDatabaseError, db, release_at_response_start

from ..servers import run_server
from .apps import make_wsgi_app, wrap
from .helpers import ASGICall, WSGICall, pg_sessions, pg_url, unique


def checked_out(app: Any) -> int:
    return int(app.runtime.services["pool"].checked_out())


# --------------------------------------------------------------------------- WSGI, in-process


def test_wsgi_list_body_gives_the_connection_back_before_the_transfer(
        sqlite_table: tuple[str, str]) -> None:
    url, table = sqlite_table
    app = wrap(make_wsgi_app(table), url)
    call = WSGICall(app, "/ok")  # the app returned a list: nothing of the body is sent yet
    assert checked_out(app) == 0
    assert call.read().close().chunks == [b"ok"]


def test_wsgi_stream_keeps_the_connection_until_close(sqlite_table: tuple[str, str]) -> None:
    url, table = sqlite_table
    app = wrap(make_wsgi_app(table), url)
    call = WSGICall(app, "/stream").read(2)  # the body uses the connection between chunks
    assert checked_out(app) == 1
    call.read().close()
    assert checked_out(app) == 0


def test_wsgi_release_at_response_start_waits_for_the_app_to_return(sqlite_url: str) -> None:
    # Code between start_response and the app's return (Flask's teardown) may still use the
    # database; the body the server then iterates may not.
    during_body: list[int] = []

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        release_at_response_start()
        start_response("200 OK", [])
        db().connection().exec_driver_sql("SELECT 1")

        def body() -> Iterator[bytes]:
            during_body.append(checked_out(wrapped))
            yield b"tick"
            with pytest.raises(RequestDatabaseError, match="already given back"):
                db().connection()
        return body()

    wrapped = wrap(app, sqlite_url)
    assert WSGICall(wrapped, "/").read().close().chunks == [b"tick"]
    assert during_body == [0]


# --------------------------------------------------------------------------- ASGI, in-process


class WatchingCall(ASGICall):
    """An ASGI call that records, for each message it receives, the connections checked out."""

    def __init__(self, path: str, app: Any) -> None:
        super().__init__(path)
        self.app = app
        self.seen: list[tuple[str, bool, int]] = []

    async def send(self, message: dict[str, Any]) -> None:
        self.seen.append((message["type"].rpartition(".")[2], bool(message.get("more_body")),
                          checked_out(self.app)))
        await super().send(message)


def test_asgi_last_body_message_gives_the_connection_back_before_it_is_sent(
        sqlite_url: str) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        (await db().aconnection()).exec_driver_sql("SELECT 1")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"a", "more_body": True})
        await send({"type": "http.response.body", "body": b"b"})

    wrapped = wrap(app, sqlite_url)
    call = asyncio.run(WatchingCall("/", wrapped).run(wrapped))
    assert call.seen == [("start", False, 1), ("body", True, 1), ("body", False, 0)]
    assert call.chunks == [b"a", b"b"]


# --------------------------------------------------------------------------- frameworks


def test_flask_non_streaming_response_goes_back_before_the_transfer(sqlite_url: str) -> None:
    from flask import Flask, Response, stream_with_context
    from scalekit_flask import ScaleKit
    from scalekit_flask import db as flask_db

    app = Flask("sk_pool_release")

    @app.get("/page")
    def page() -> str:
        flask_db.execute(text("SELECT 1"))
        return "page"

    @app.get("/stream")
    def stream() -> Response:
        flask_db.execute(text("SELECT 1"))

        def rows() -> Iterator[str]:
            yield "a"
            flask_db.execute(text("SELECT 1"))
            yield "b"
        return Response(stream_with_context(rows()))

    extension = ScaleKit(app, cache=False, cdn=False,
                         pool={"databases": {"default": {"url": sqlite_url}}})
    page_call = WSGICall(app, "/page")
    assert page_call.status == "200 OK" and checked_out(extension) == 0
    assert page_call.read().close().chunks == [b"page"]
    stream_call = WSGICall(app, "/stream").read(1)
    assert checked_out(extension) == 1  # a stream keeps its connection
    assert stream_call.read().close().chunks == [b"a", b"b"]
    assert checked_out(extension) == 0
    extension.close()


@pytest.fixture(params=["wrap-wsgi", "wrap-asgi"])
def django_site(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    from ..adapters.django_support import configure_django, open_site
    from ..adapters.support import seed_items

    database_path, overlay = configure_django(str(tmp_path / "items.sqlite3"))
    url = f"sqlite:///{database_path}"
    seed_items(url)
    settings = {**overlay, "SCALEKIT": {"state_dir": str(tmp_path / "state"), "cache": {"enabled": False},
                                        "pool": {"databases": {"default": {"url": url}}}}}
    yield from open_site(request.param, settings)  # no cache layer: it could read bodies whole


def test_django_non_streaming_response_goes_back_before_the_transfer(django_site: Any) -> None:
    if django_site.mode == "wrap-asgi":
        page_call = asyncio.run(WatchingCall("/items/1/", django_site).run(django_site.wrapped))
        assert page_call.seen[0] == ("start", False, 0)  # back before the first body byte
        stream_call = asyncio.run(WatchingCall("/stream/", django_site).run(django_site.wrapped))
        assert stream_call.seen[:2] == [("start", False, 1), ("body", True, 1)]
        assert checked_out(django_site) == 0
        return
    page = WSGICall(django_site.wrapped, "/items/1/")
    assert page.code == 200 and checked_out(django_site) == 0
    page.read().close()
    stream = WSGICall(django_site.wrapped, "/stream/")
    assert checked_out(django_site) == 1  # StreamingHttpResponse: held until the body ends
    stream.read().close()
    assert checked_out(django_site) == 0


# --------------------------------------------------------------------------- real servers


def slow_reader(base_url: str, path: str) -> socket.socket:
    """A client that asks for ``path``, reads the first few bytes, and then reads no more.

    Its receive buffer is made tiny first, so the server's writes block (or, under asyncio,
    its transport pauses) long before the body is through.
    """
    host, port = base_url.removeprefix("http://").split(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(30)
    sock.connect((host, int(port)))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    first = sock.recv(12)  # the response has started: the app has run
    assert first.startswith(b"HTTP/1.1 200"), first
    return sock


def assert_slow_readers_leave_room(base_url: str, path: str, application_name: str) -> None:
    with ExitStack() as stack:
        for _ in range(2):  # as many as the pool has connections
            stack.enter_context(closing(slow_reader(base_url, path)))
        answer = httpx.get(f"{base_url}/small", timeout=30)
        assert (answer.status_code, answer.text) == (200, "small")
    # The slow readers went away mid-body: whatever they held is back, nothing left open.
    deadline = time.monotonic() + 20
    while httpx.get(f"{base_url}/checked_out", timeout=10).text != "0" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert httpx.get(f"{base_url}/checked_out", timeout=10).text == "0"
    sessions = pg_sessions(application_name)
    assert not {"idle in transaction", "idle in transaction (aborted)"} & set(sessions), sessions


SERVERS = [
    pytest.param("gunicorn", "tests.pool.slow_app:wsgi_app", ["--threads", "4"], id="gunicorn"),
    pytest.param("uvicorn", "tests.pool.slow_app:asgi_app", [], id="uvicorn"),
]


@pytest.mark.server
@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.parametrize(("server", "target", "extra_args"), SERVERS)
def test_slow_readers_do_not_starve_the_pool(postgres_available: None, server: Any, target: str,
                                             extra_args: list[str]) -> None:
    application_name = unique("sk_slow_readers")
    env = {"SK_POOL_URL": pg_url(application_name)}
    with run_server(server, target, env=env, extra_args=extra_args) as base_url:
        assert_slow_readers_leave_room(base_url, "/big", application_name)  # fully produced
        assert_slow_readers_leave_room(base_url, "/stream", application_name)  # released at start


def test_release_at_response_start_outside_a_request_says_so(sqlite_url: str) -> None:
    with pytest.raises(RequestDatabaseError, match="release_at_response_start"):
        contextvars.Context().run(release_at_response_start)
    wrapped = wrap(lambda environ, start_response: start_response("200 OK", []) and [], sqlite_url)
    WSGICall(wrapped, "/").close()
    with pytest.raises(RequestDatabaseError, match="release_at_response_start"):
        release_at_response_start()  # this thread's last request has ended


@pytest.mark.postgres
def test_a_connection_kept_past_its_early_release_never_runs_another_statement(
        postgres_available: None) -> None:
    # The body holds on to the Connection object after its early release, while the connection
    # waits for (a slow) reset and then goes to the next request: a statement on the old object
    # must fail, never run on a connection that is being reset or serves someone else.
    failures: list[str] = []

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        connection = db().connection()
        pid = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
        release_at_response_start()
        start_response("200 OK", [])

        def body() -> Iterator[bytes]:
            yield str(pid).encode()
            for _ in range(2):  # while its reset runs, then once it is back in the pool
                try:
                    connection.exec_driver_sql("SELECT 1")
                except Exception as exc:  # noqa: BLE001 - any refusal will do, a statement will not
                    failures.append(type(exc).__name__)
                wrapped.runtime.services["pool"].wait_idle()
        return body()

    wrapped = wrap(app, pg_url(unique("sk_kept")), pool_size=1, max_overflow=0,
                   reset_statement="SELECT pg_sleep(0.2)")
    first = WSGICall(wrapped, "/").read().close()
    assert len(failures) == 2, failures
    second = WSGICall(wrapped, "/").read(1)
    assert second.chunks == first.chunks  # the same (only) connection, reset and lent again
    second.read().close()
