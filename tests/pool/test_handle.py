"""The lazy per-request handle: first use, one connection per request, given back at the end
whatever happened, session state reset, and errors when used where it cannot be."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import logging
import time
import weakref
from pathlib import Path
from typing import Any

import pytest

import scalekit
from scalekit.pool import RequestDatabaseError, db
from scalekit.pool.service import PoolService

from .apps import make_asgi_app, make_wsgi_app, wrap
from .helpers import ASGICall, WSGICall, pg_sessions, pg_url, sample, unique, wsgi_get


def service(app: Any) -> PoolService:
    return app.runtime.services["pool"]  # type: ignore[no-any-return]


def wait_until_returned(app: Any, timeout_seconds: float = 20.0) -> None:
    """Abandoned bodies are given back by the pool's worker thread: poll (generously)."""
    deadline = time.monotonic() + timeout_seconds
    while service(app).checked_out() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert service(app).wait_idle()
    assert service(app).checked_out() == 0


# --------------------------------------------------------------------------- lazy, one connection


def test_nothing_is_opened_until_the_app_uses_the_database(sqlite_table: tuple[str, str]) -> None:
    url, table = sqlite_table
    app = wrap(make_wsgi_app(table), url)
    call = wsgi_get(app, "/nodb")
    assert call.code == 200
    database = service(app).databases["default"]
    assert database._engine is None  # not even the engine exists yet


def test_default_database_is_a_sqlite_file_under_state_dir(tmp_path: Path) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        value = db().connection().exec_driver_sql("select 41 + 1").scalar_one()
        start_response("200 OK", [("content-type", "text/plain")])
        return [str(value).encode()]

    wrapped = scalekit.wrap(app, cache=False, cdn=False, state_dir=str(tmp_path / "state"))
    assert wsgi_get(wrapped, "/").chunks == [b"42"]
    assert (tmp_path / "state" / "scalekit.sqlite3").is_file()


def test_one_connection_serves_the_whole_request(sqlite_table: tuple[str, str]) -> None:
    url, _ = sqlite_table
    seen: list[Any] = []

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        handle = environ["scalekit.db"]
        assert not handle.checked_out
        seen.extend([handle.connection(), db().connection(), environ["scalekit.databases"]["default"].connection()])
        seen.append(handle.dbapi_connection())
        seen.append(handle.connection().connection.dbapi_connection)
        start_response("200 OK", [])

        def body() -> Any:
            seen.append(db().connection())  # later, from the body: still the same
            yield b"x"
        return body()

    wsgi_get(wrap(app, url), "/")
    assert seen[0] is seen[1] is seen[2] is seen[5]
    assert seen[3] is seen[4]
    import sqlite3
    assert isinstance(seen[3], sqlite3.Connection)


def test_db_outside_a_request_says_where_it_works(sqlite_table: tuple[str, str]) -> None:
    with pytest.raises(RequestDatabaseError, match="outside a request"):
        contextvars.Context().run(db)
    url, table = sqlite_table
    wsgi_get(wrap(make_wsgi_app(table), url), "/ok")
    with pytest.raises(RequestDatabaseError, match="outside a request"):
        db()  # this thread's last request has ended


def test_using_the_handle_after_the_response_ended_raises(sqlite_table: tuple[str, str]) -> None:
    url, _table = sqlite_table
    kept: list[Any] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        kept.append(db())
        db().connection().exec_driver_sql("select 1")
        start_response("200 OK", [])
        return [b"x"]

    wsgi_get(wrap(app, url), "/")
    with pytest.raises(RequestDatabaseError, match="already given back"):
        kept[0].connection()


@pytest.mark.parametrize("named", [False, True], ids=["default", "by name"])
def test_a_handle_the_request_never_used_cannot_check_out_after_the_response(
        sqlite_table: tuple[str, str], named: bool) -> None:
    """A request that touched no database ends with one flag, not a release per handle: a
    handle kept past the end still refuses to check out (it would leak the connection)."""
    url, _table = sqlite_table
    kept: list[Any] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        kept.append(environ["scalekit.databases"]["default"] if named else db())
        start_response("200 OK", [])
        return [b"x"]

    app_wrapped = wrap(app, url)
    wsgi_get(app_wrapped, "/")
    with pytest.raises(RequestDatabaseError, match="already given back"):
        kept[0].connection()
    assert not kept[0].checked_out


def test_handles_whose_context_nobody_holds_say_so(tmp_path: Path) -> None:
    """Handles see their request's context weakly (no reference cycle): code that builds them
    itself around a context it does not keep is told why they refuse, and a held context works."""
    from scalekit.context import RequestContext
    from scalekit.pool.config import DatabaseConfig
    from scalekit.pool.database import Database
    from scalekit.pool.handle import RequestDatabases

    databases = {"default": Database("default", DatabaseConfig(url=f"sqlite:///{tmp_path}/h.db"),
                                     state_dir=str(tmp_path))}
    orphaned = RequestDatabases(databases, RequestContext("GET", "/"), invalidate=lambda tags: None,
                                track_tables=False)
    with pytest.raises(RequestDatabaseError, match="nothing refers to its RequestContext"):
        orphaned.default.connection()
    ctx = RequestContext("GET", "/")
    held = RequestDatabases(databases, ctx, invalidate=lambda tags: None, track_tables=False)
    assert held.default.connection().exec_driver_sql("select 1").scalar() == 1
    held.finish()
    databases["default"].dispose()


def test_a_child_forked_while_a_handle_made_its_lock_checks_out(tmp_path: Path) -> None:
    """A handle makes its lock on first checkout under one process-wide lock; a child forked
    while another thread held that lock gets its own, and checks out instead of hanging."""
    import os
    import signal

    from scalekit.context import RequestContext
    from scalekit.pool import handle as handles
    from scalekit.pool.config import DatabaseConfig
    from scalekit.pool.database import Database

    with handles._GUARD_MAKING:  # as another thread would hold it, the instant the process forks
        child = os.fork()
        if child == 0:  # pragma: no cover - the child reports by its exit status alone
            status = 1
            try:
                signal.alarm(10)  # a hang is a failure, not a stuck suite
                databases = {"default": Database("default", DatabaseConfig(url=f"sqlite:///{tmp_path}/f.db"),
                                                 state_dir=str(tmp_path))}
                ctx = RequestContext("GET", "/")
                requests = handles.RequestDatabases(databases, ctx, lambda tags: None, False)
                if requests.default.connection().exec_driver_sql("select 1").scalar() == 1:
                    status = 0
                requests.finish()
            finally:
                os._exit(status)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0


# --------------------------------------------------------------------------- WSGI: given back


@pytest.mark.parametrize("ending", [
    pytest.param("read_all", id="response fully sent"),
    pytest.param("disconnect", id="client went away mid-stream (server closes early)"),
    pytest.param("abandon", id="body dropped without close()"),
])
@pytest.mark.parametrize("mode", ["ok", "stream", "stream_raise", "write", "open_txn", "raw", "rollback"])
def test_wsgi_connection_goes_back_whatever_happens(sqlite_table: tuple[str, str], mode: str,
                                                    ending: str) -> None:
    url, table = sqlite_table
    app = wrap(make_wsgi_app(table), url)
    call = WSGICall(app, f"/{mode}")
    if ending == "read_all":
        try:
            call.read()
        except RuntimeError:
            assert mode == "stream_raise"
        call.close()
    elif ending == "disconnect":
        call.read(1)
        # A stream still uses its connection; a list body gave it back when the app returned.
        assert service(app).checked_out() == (1 if mode.startswith("stream") else 0)
        call.close()
    else:
        call.read(1)
        del call
        gc.collect()
    wait_until_returned(app)


def test_wsgi_app_raising_gives_the_connection_back_at_once(sqlite_table: tuple[str, str]) -> None:
    url, table = sqlite_table
    app = wrap(make_wsgi_app(table), url)
    with pytest.raises(RuntimeError, match="the app failed"):
        WSGICall(app, "/raise")
    assert service(app).checked_out() == 0


def test_wsgi_release_at_response_start_frees_the_connection_for_the_stream(
        sqlite_table: tuple[str, str]) -> None:
    url, table = sqlite_table
    app = wrap(make_wsgi_app(table), url)
    call = WSGICall(app, "/release_early")
    assert service(app).checked_out() == 0  # start_response happened: already back
    assert call.read().close().chunks == [b"chunk 0\n", b"chunk 1\n", b"chunk 2\n"]


def test_an_open_transaction_is_rolled_back(sqlite_table: tuple[str, str]) -> None:
    url, table = sqlite_table
    app = wrap(make_wsgi_app(table), url)
    wsgi_get(app, "/open_txn")
    wsgi_get(app, "/write")
    from sqlalchemy import create_engine
    engine = create_engine(url)
    with engine.connect() as connection:
        assert connection.exec_driver_sql(f"select price from {table} where id = 2").scalar_one() == 3
    engine.dispose()


# --------------------------------------------------------------------------- ASGI: given back


async def _run_asgi(app: Any, path: str, **kwargs: Any) -> ASGICall:
    call = ASGICall(path, **kwargs)
    try:
        await call.run(app)
    except (RuntimeError, OSError):
        pass
    return call


@pytest.mark.parametrize("mode", ["ok", "raise", "stream", "stream_raise", "write", "open_txn", "raw"])
def test_asgi_connection_goes_back_after_the_app_returns_or_raises(
        sqlite_table: tuple[str, str], mode: str) -> None:
    url, table = sqlite_table
    app = wrap(make_asgi_app(table), url)
    call = asyncio.run(_run_asgi(app, f"/{mode}"))
    assert call.status == 200 or mode == "raise"
    assert service(app).checked_out() == 0


def test_asgi_client_disconnect_mid_stream(sqlite_table: tuple[str, str]) -> None:
    url, table = sqlite_table
    app = wrap(make_asgi_app(table), url)
    call = asyncio.run(_run_asgi(app, "/stream", disconnect_after=1))
    assert call.chunks == [b"chunk 0\n"]
    assert service(app).checked_out() == 0


def test_asgi_cancelled_request_gives_the_connection_back(sqlite_table: tuple[str, str]) -> None:
    url, table = sqlite_table
    app = wrap(make_asgi_app(table), url)

    async def scenario() -> None:
        call = ASGICall("/stream")
        task = asyncio.create_task(call.run(app))
        while not call.chunks:
            await asyncio.sleep(0)
        assert service(app).checked_out() == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert service(app).checked_out() == 0


def test_asgi_http_disconnect_releases_while_the_app_goes_on(sqlite_table: tuple[str, str]) -> None:
    url, _ = sqlite_table
    checked_out_after_disconnect: list[int] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        connection = await db().aconnection()
        connection.exec_driver_sql("select 1")
        await receive()  # the request body
        message = await receive()  # waits: the client goes away
        assert message["type"] == "http.disconnect"
        checked_out_after_disconnect.append(service(wrapped).checked_out())
        with pytest.raises(RequestDatabaseError):
            db().connection()

    wrapped = wrap(app, url)

    async def scenario() -> None:
        call = ASGICall("/")
        task = asyncio.create_task(call.run(wrapped))
        await asyncio.sleep(0.01)
        call.disconnected.set()
        await task

    asyncio.run(scenario())
    assert checked_out_after_disconnect == [0]


def test_asgi_release_at_response_start(sqlite_table: tuple[str, str]) -> None:
    url, _ = sqlite_table
    during_stream: list[int] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        (await db().aconnection()).exec_driver_sql("select 1")
        scalekit.pool.release_at_response_start()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        during_stream.append(service(wrapped).checked_out())
        await send({"type": "http.response.body", "body": b"event: tick\n\n"})

    wrapped = wrap(app, url)
    asyncio.run(_run_asgi(wrapped, "/"))
    assert during_stream == [0]


# --------------------------------------------------------------------------- Postgres specifics


@pytest.mark.postgres
def test_session_state_is_reset_between_requests(pg_table: str) -> None:
    name = unique("sk_reset")
    shown: list[str] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        connection = db().connection()
        if environ["PATH_INFO"] == "/set":
            connection.exec_driver_sql("SET statement_timeout = 4321")
            connection.exec_driver_sql("PREPARE sk_plan AS SELECT 1")
            connection.commit()
        else:
            shown.append(connection.exec_driver_sql("SHOW statement_timeout").scalar_one())
            shown.append(str(connection.exec_driver_sql(
                "SELECT count(*) FROM pg_prepared_statements").scalar_one()))
            shown.append(connection.exec_driver_sql("SELECT current_setting('application_name')").scalar_one())
        start_response("200 OK", [])
        return [b"ok"]

    wrapped = wrap(app, pg_url(name), pool_size=1, max_overflow=0)
    wsgi_get(wrapped, "/set")
    wsgi_get(wrapped, "/show")
    assert shown == ["0", "0", name]  # same single connection, SET and PREPARE gone, name kept

    leaky = wrap(app, pg_url(name), pool_size=1, max_overflow=0, reset_statement="")
    wsgi_get(leaky, "/set")
    wsgi_get(leaky, "/show")
    assert shown[3:5] == ["4321ms", "1"]  # without the reset, state leaks: why the reset exists
    service(wrapped).close()
    service(leaky).close()


@pytest.mark.postgres
def test_no_transaction_is_left_open_in_postgres(pg_table: str) -> None:
    name = unique("sk_open_txn")
    app = wrap(make_wsgi_app(pg_table), pg_url(name))
    for mode in ("open_txn", "raise", "stream_raise", "ok"):
        call = None
        try:
            call = WSGICall(app, f"/{mode}")
            call.read()
        except RuntimeError:
            pass
        if call is not None:
            call.close()
    assert service(app).wait_idle()  # the background resets have run
    assert service(app).checked_out() == 0
    assert pg_sessions(name).get("idle in transaction", 0) == 0
    assert pg_execute_price(pg_table) == 2  # the open_txn UPDATE was rolled back
    service(app).close()


def pg_execute_price(table: str) -> int:
    from .helpers import pg_execute
    return int(pg_execute(f"SELECT price FROM {table} WHERE id = 2")[0][0])


# --------------------------------------------------------------------------- leak guard


def test_leak_warning_names_route_and_checkout_site(sqlite_table: tuple[str, str],
                                                    caplog: pytest.LogCaptureFixture) -> None:
    url, _table = sqlite_table
    now = [1000.0]

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        scalekit.set_route("/reports/{id}")
        connection = db().connection()  # the checkout site the warning must name
        start_response("200 OK", [])

        def body() -> Any:
            yield b"slow report"
            connection.exec_driver_sql("select 1")
        return body()

    wrapped = wrap(app, url, leak_warning_seconds=30)
    wrapped.runtime.monotonic = lambda: now[0]
    before = sample("scalekit_pool_leak_warnings_total", {"database": "default"})
    call = WSGICall(wrapped, "/reports/7")
    call.read(1)
    now[0] += 29
    assert service(wrapped).check_leaks() == []
    now[0] += 2
    with caplog.at_level(logging.WARNING, logger="scalekit.pool"):
        leaked = service(wrapped).check_leaks()
        assert service(wrapped).check_leaks() == []  # warned once per checkout
    assert len(leaked) == 1
    message = caplog.records[-1].getMessage()
    assert "'/reports/{id}'" in message and "31.0 s" in message
    assert f"{__file__}:" in message and "in app()" in message
    assert sample("scalekit_pool_leak_warnings_total", {"database": "default"}) == before + 1
    call.read().close()
    assert service(wrapped).checked_out() == 0


def test_plain_bodies_of_requests_without_a_connection_pass_through(sqlite_url: str) -> None:
    from scalekit.config import load_config
    from scalekit.pool.layer import wrap_wsgi
    from scalekit.runtime import Runtime

    class FileWrapper:
        def __init__(self, data: bytes) -> None:
            self.data = data

        def __iter__(self) -> Any:
            yield self.data

    body = [b"static"]

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [])
        return body if environ["PATH_INFO"] == "/list" else environ["wsgi.file_wrapper"](b"file")

    runtime = Runtime(load_config({"pool": {"databases": {"default": {"url": sqlite_url}}}}, environ={}))
    layer = wrap_wsgi(app, runtime)
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/list", "wsgi.file_wrapper": FileWrapper}
    assert layer(environ, lambda status, headers, exc_info=None: None) is body  # keeps its len()
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/file", "wsgi.file_wrapper": FileWrapper}
    assert isinstance(layer(environ, lambda status, headers, exc_info=None: None), FileWrapper)
    runtime.close()


def test_several_databases_each_lazy_each_given_back(fast_dir: Path) -> None:
    import sqlalchemy as sa

    urls = {name: f"sqlite:///{fast_dir}/{name}.db" for name in ("default", "reports")}
    for name, url in urls.items():
        engine = sa.create_engine(url)
        with engine.begin() as connection:
            connection.exec_driver_sql(f"CREATE TABLE {name}_rows (id integer primary key)")
        engine.dispose()

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        databases = environ["scalekit.databases"]
        assert set(databases) == {"default", "reports"}
        db("reports").connection().exec_driver_sql("SELECT * FROM reports_rows").all()
        assert not databases["default"].checked_out  # never used: never checked out
        start_response("200 OK", [])
        ctx = scalekit.current()
        assert ctx is not None
        return [",".join(sorted(ctx.tags)).encode()]

    wrapped = scalekit.wrap(app, cache=False, cdn=False, pool={"databases": {
        name: {"url": url} for name, url in urls.items()}})
    assert wsgi_get(wrapped, "/").chunks == [b"table:reports_rows"]
    assert service(wrapped).checked_out() == 0
    with pytest.raises(RequestDatabaseError, match="no database named 'nope'"):
        wsgi_get(scalekit.wrap(lambda e, s: [db("nope")], cache=False, cdn=False,
                               pool={"databases": {"default": {"url": urls["default"]}}}), "/")


# --------------------------------------------------------------------------- no garbage cycles


@pytest.mark.parametrize("uses_database", [False, True], ids=["untouched", "used"])
@pytest.mark.parametrize("interface", ["wsgi", "asgi"])
def test_a_request_leaves_no_reference_cycle(sqlite_table: tuple[str, str], interface: str,
                                             uses_database: bool) -> None:
    """A request's context, handles and RequestDatabases are freed when its last reference goes,
    with the cyclic garbage collector off: nothing of it waits for the collector's next run."""
    url, table = sqlite_table
    seen: list[weakref.ref[Any]] = []

    def remember() -> None:
        ctx = scalekit.current()
        assert ctx is not None
        seen.append(weakref.ref(ctx))
        if uses_database:
            db().connection().exec_driver_sql(f"select count(*) from {table}").scalar_one()

    def wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if not seen:
            remember()
        start_response("200 OK", [("content-type", "text/plain")])
        return [b"ok"]

    async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if not seen:
            remember()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    app = wrap(wsgi_app if interface == "wsgi" else asgi_app, url)
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)  # what a collection finds is kept in gc.garbage, for a look
    try:
        for _ in range(2):  # the second request replaces the first's context in this thread
            if interface == "wsgi":
                assert wsgi_get(app, "/").code == 200
            else:
                assert asyncio.run(_run_asgi(app, "/")).status == 200
        assert len(seen) == 1
        assert seen[0]() is None  # freed by reference counting alone
        gc.collect()
        kinds = {type(thing).__name__ for thing in gc.garbage}
        assert not kinds & {"RequestContext", "RequestDatabases", "RequestDatabase"}
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert service(app).checked_out() == 0
