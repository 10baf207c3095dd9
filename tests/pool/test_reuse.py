"""Connections kept between requests (scalekit.pool.reuse): a request gets the SQLAlchemy
Connection the previous one gave back only when it is as a fresh one would be. Each rule that
makes the layer close or invalidate instead is shown here by what the NEXT request would
otherwise see; every test runs on a one-connection pool, so the next request gets the same
connection unless a rule discarded it. The first test fails loudly when a SQLAlchemy release
changes one of the internals the module reads or writes."""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy.exc
import sqlalchemy.pool
from sqlalchemy import event

from scalekit.pool import db
from scalekit.pool.database import Database
from scalekit.pool.reuse import FRESH_KEYS, renewed
from scalekit.pool.service import PoolService
from scalekit.pool.tracking import TrackedConnection

from .apps import wrap
from .helpers import assert_connection_gauges, in_forked_child, pg_execute, pg_sessions, pg_url, unique, wsgi_get

ONE_CONNECTION = {"pool_size": 1, "max_overflow": 0, "pool_timeout_seconds": 5}

App = Callable[[dict[str, Any], Any], list[bytes]]


def service(app: Any) -> PoolService:
    return app.runtime.services["pool"]  # type: ignore[no-any-return]


def database_of(app: Any) -> Database:
    return service(app).databases["default"]


def kept(app: Any) -> list[Any]:
    """The database's kept connections, newest last."""
    stack = database_of(app)._kept
    return [] if stack is None else stack.stack


def routed(routes: dict[str, Callable[[Any], Any]]) -> App:
    """A WSGI app answering ``/<name>`` with ``routes[name](db().connection())``."""

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        answer = routes[environ["PATH_INFO"].strip("/")](db().connection())
        start_response("200 OK", [("content-type", "text/plain")])
        return [str(answer).encode()]

    return app


def backend_pid(connection: Any) -> int:
    return int(connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())


def get(app: Any, path: str) -> str:
    answer = wsgi_get(app, path)
    assert answer.code == 200, answer.chunks
    assert service(app).wait_idle()
    return b"".join(answer.chunks).decode()


@pytest.fixture
def make_app(postgres_available: None) -> Any:
    made: list[Any] = []

    def make(routes: dict[str, Callable[[Any], Any]], **settings: Any) -> Any:
        app = wrap(routed({"pid": backend_pid, **routes}), pg_url(unique("sk_reuse")),
                   **{**ONE_CONNECTION, **settings})
        made.append(app)
        return app

    yield make
    for app in made:
        service(app).close()


# --------------------------------------------------------------------------- the internals


def test_the_sqlalchemy_internals_reuse_relies_on(sqlite_url: str) -> None:
    """Everything of SQLAlchemy's that scalekit.pool.reuse reads or writes without SQLAlchemy
    documenting it. A failure here means a release changed one: update reuse.py for it (or turn
    reuse_connections off by default) and the sqlalchemy pin in pyproject.toml."""
    from sqlalchemy.dialects.postgresql.psycopg2 import PGDialect_psycopg2

    engine = sqlalchemy.create_engine(sqlite_url, poolclass=sqlalchemy.pool.QueuePool)
    connection = TrackedConnection(engine)
    state = connection.__dict__
    assert frozenset(state) == FRESH_KEYS  # renewed() builds exactly these
    assert state["_execution_options"] is engine._execution_options
    assert (state["_Connection__can_reconnect"], state["_Connection__in_begin"],
            state["_Connection__savepoint_seq"], state["_allow_autobegin"]) == (True, False, 0, True)
    assert isinstance(engine._should_log_info(), bool)
    fairy = state["_dbapi_connection"]
    record = fairy._connection_record
    assert fairy._pool is engine.pool and fairy.is_valid
    assert len(record.finalize_callback) == 0 and callable(record.finalize_callback.pop)
    assert isinstance(record.starttime, float) and isinstance(engine.pool._invalidate_time, (int, float))
    assert list(inspect.signature(engine.pool._invalidate).parameters)[:3] == [
        "connection", "exception", "_checkin"]
    counts = [len(events) for events in (engine.pool.dispatch.checkout, engine.pool.dispatch.checkin,
                                         engine.pool.dispatch.reset, engine.dispatch.engine_connect)]
    assert all(isinstance(count, int) for count in counts)
    assert isinstance(PGDialect_psycopg2()._isolation_lookup["READ COMMITTED"], int)
    connection.execution_options(isolation_level="SERIALIZABLE")
    assert len(record.finalize_callback) == 1  # what undoes it at check-in
    record.finalize_callback.pop()(fairy.dbapi_connection)
    # A renewed Connection works on the same pooled connection; the old object is closed.
    connection.exec_driver_sql("SELECT 1")
    connection.rollback()
    fresh = renewed(connection)
    assert frozenset(fresh.__dict__) == FRESH_KEYS and fresh.connection is fairy
    assert fresh.exec_driver_sql("SELECT 1").scalar_one() == 1
    assert connection.closed and not connection.invalidated
    with pytest.raises(sqlalchemy.exc.ResourceClosedError):
        connection.exec_driver_sql("SELECT 1")
    fresh.close()
    assert engine.pool.checkedout() == 0  # back in the pool once, through the new object
    engine.dispose()


# --------------------------------------------------------------------------- kept


def test_a_pool_listener_of_the_apps_sees_every_checkout(make_app: Any) -> None:
    app = make_app({})
    first = get(app, "/pid")
    pool = database_of(app).engine.pool
    checkouts: list[object] = []

    def on_checkout(*args: Any) -> None:
        checkouts.append(args)

    event.listen(pool, "checkout", on_checkout)
    try:
        # Kept connections skip QueuePool's events: once the app listens, they go through it.
        assert [get(app, "/pid") for _ in range(3)] == [first] * 3
        assert len(checkouts) >= 2
    finally:
        event.remove(pool, "checkout", on_checkout)
    assert database_of(app).checked_out() == 0


def test_kept_connections_skip_the_pool_and_keep_their_backend(make_app: Any) -> None:
    app = make_app({})
    first = get(app, "/pid")
    assert len(kept(app)) == 1  # kept, not given back to QueuePool
    first_kept = kept(app)[0]
    assert [get(app, "/pid") for _ in range(3)] == [first] * 3
    assert kept(app)[0] is not first_kept  # the same DBAPI connection, a new Connection object


def test_a_connection_kept_by_the_app_after_its_response_is_closed(make_app: Any) -> None:
    held: list[Any] = []
    app = make_app({"hold": lambda connection: held.append(connection) or backend_pid(connection)})
    first = get(app, "/hold")
    with pytest.raises(sqlalchemy.exc.ResourceClosedError):
        held[0].exec_driver_sql("SELECT 1")  # never on the next request's connection
    assert get(app, "/pid") == first


# --------------------------------------------------------------------------- discard rules


def test_an_isolation_level_set_by_one_request_is_not_seen_by_the_next(make_app: Any) -> None:
    def serializable(connection: Any) -> str:
        connection.execution_options(isolation_level="SERIALIZABLE")
        return str(connection.exec_driver_sql("SHOW transaction_isolation").scalar_one())

    app = make_app({
        "serializable": serializable,
        "show": lambda c: c.exec_driver_sql("SHOW transaction_isolation").scalar_one(),
        "options": lambda c: sorted(c.get_execution_options()),
    })
    assert get(app, "/serializable") == "serializable"
    assert get(app, "/show") == "read committed"
    assert get(app, "/options") == "[]"


def test_an_execution_option_without_driver_effect_is_not_seen_by_the_next(make_app: Any) -> None:
    app = make_app({
        "set": lambda c: c.execution_options(schema_translate_map={None: "elsewhere"}) and "set",
        "options": lambda c: sorted(c.get_execution_options()),
    })
    assert get(app, "/set") == "set"
    assert get(app, "/options") == "[]"


def test_a_listener_added_on_one_requests_connection_never_fires_in_the_next(
        make_app: Any) -> None:
    fired: list[str] = []

    def listen(connection: Any) -> int:
        event.listen(connection, "before_cursor_execute", lambda *args: fired.append("fired"))
        return backend_pid(connection)

    app = make_app({"listen": listen})
    get(app, "/listen")
    assert fired == ["fired"]  # it does fire in the request that added it
    get(app, "/pid")
    get(app, "/pid")
    assert fired == ["fired"]


def test_a_read_only_session_set_on_the_raw_connection_does_not_leak(make_app: Any) -> None:
    def read_only(connection: Any) -> str:
        db().dbapi_connection().set_session(readonly=True)
        return str(connection.exec_driver_sql("SHOW transaction_read_only").scalar_one())

    app = make_app({
        "read_only": read_only,
        "show": lambda c: (c.exec_driver_sql("SHOW transaction_read_only").scalar_one(),
                           db().dbapi_connection().readonly),
    })
    assert get(app, "/read_only") == "on"
    assert get(app, "/show") == "('off', None)"


def test_autocommit_left_on_the_raw_connection_does_not_leak(make_app: Any) -> None:
    def autocommit(connection: Any) -> str:
        db().dbapi_connection().autocommit = True
        return "on"

    app = make_app({"autocommit": autocommit,
                    "show": lambda c: db().dbapi_connection().autocommit})
    get(app, "/autocommit")
    assert get(app, "/show") == "False"


def test_a_connection_older_than_recycle_seconds_is_replaced(make_app: Any) -> None:
    app = make_app({}, recycle_seconds=600)
    first = get(app, "/pid")
    kept(app)[0].connection._connection_record.starttime -= 601  # opened 601 s ago
    second = get(app, "/pid")
    assert second != first
    assert get(app, "/pid") == second


def test_a_connection_killed_while_kept_is_replaced_at_checkout(make_app: Any) -> None:
    app = make_app({})
    first = int(get(app, "/pid"))
    assert pg_execute("SELECT pg_terminate_backend(%s, 5000)", (first,)) == [(True,)]
    second = int(get(app, "/pid"))  # the request succeeds, on a new connection
    assert second != first
    assert database_of(app).checked_out() == 0


def test_gauges_and_counts_see_kept_connections_as_idle(make_app: Any) -> None:
    app = make_app({}, pool_size=2)
    get(app, "/pid")
    database = database_of(app)
    assert_connection_gauges(database.update_gauges, used=0, idle=1)
    assert database.checked_out() == 0 and database.idle_count() == 1
    assert database.has_idle_connection()


def test_dispose_closes_kept_connections(make_app: Any) -> None:
    app = make_app({})
    get(app, "/pid")
    name = str(database_of(app).url.query["application_name"])
    assert sum(pg_sessions(name).values()) == 1
    service(app).close()
    deadline = time.monotonic() + 5
    while pg_sessions(name) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert pg_sessions(name) == {}


def test_a_forked_child_neither_uses_nor_closes_the_parents_kept_connections(
        make_app: Any) -> None:
    app = make_app({})
    first = get(app, "/pid")
    parent_kept = kept(app)[0]

    def child() -> bytes:
        answer = wsgi_get(app, "/pid")
        database_of(app).dispose()  # closes the child's own idle connections only
        return b"".join(answer.chunks)

    child_backend = in_forked_child(child).decode()
    assert child_backend != first
    assert kept(app) == [parent_kept] and not parent_kept.closed
    assert get(app, "/pid") == first  # the parent's connection still works, still the same


# --------------------------------------------------------------------------- SQLite, switch


def test_sqlite_connections_are_kept_too(sqlite_url: str) -> None:
    raw_ids: list[int] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        connection = db().connection()
        connection.exec_driver_sql("SELECT 1")
        raw_ids.append(id(connection.connection.dbapi_connection))
        start_response("200 OK", [])
        return [b"ok"]

    wrapped = wrap(app, sqlite_url, **ONE_CONNECTION)
    for _ in range(3):
        assert wsgi_get(wrapped, "/").code == 200
    assert len(set(raw_ids)) == 1 and len(kept(wrapped)) == 1
    service(wrapped).close()


def test_reuse_can_be_switched_off(make_app: Any) -> None:
    app = make_app({}, reuse_connections=False)
    first = get(app, "/pid")
    assert kept(app) == []
    assert get(app, "/pid") == first  # QueuePool lends the same one, through its events
