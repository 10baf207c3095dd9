"""The session reset of connections given back: skipped when the request never touched the
connection, run off the request's path otherwise (the background resetter), and never letting
one request's session state (SET, PREPARE, temp tables, advisory locks, LISTEN, cursors, an
open or aborted transaction) reach the next request on the same connection."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg2
import pytest
import sqlalchemy.engine
import sqlalchemy.exc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from scalekit.pool import db
from scalekit.pool.policy import DISCARD_ALL_STATEMENTS
from scalekit.pool.service import PoolService
from scalekit.pool.tracking import TrackedConnection

from .apps import wrap
from .helpers import PG_DSN, ASGICall, in_forked_child, pg_execute, pg_url, unique, wsgi_get

pytestmark = pytest.mark.postgres

ONE_CONNECTION = {"pool_size": 1, "max_overflow": 0, "pool_timeout_seconds": 5}

# One row describing the session: what a reset must bring back to these values.
SESSION_STATE = text("""
    SELECT current_setting('statement_timeout'),
           (SELECT count(*) FROM pg_prepared_statements),
           (SELECT count(*) FROM pg_class WHERE relnamespace = pg_my_temp_schema()),
           (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()),
           (SELECT count(*) FROM pg_listening_channels()),
           (SELECT count(*) FROM pg_cursors),
           current_user
""")
CLEAN = ("0", 0, 0, 0, 0, 0, "postgres")


def service(app: Any) -> PoolService:
    return app.runtime.services["pool"]  # type: ignore[no-any-return]


def leave_state(connection: Any, action: str, lock_key: int) -> None:
    """Leave one kind of session state behind on the request's connection."""
    if action == "set_committed":
        connection.exec_driver_sql("SET statement_timeout = 4321")
        connection.commit()
    elif action == "set_left_open":
        connection.exec_driver_sql("SET statement_timeout = 4321")
    elif action == "prepare":
        connection.exec_driver_sql("PREPARE sk_plan AS SELECT 1")
        connection.commit()
    elif action == "temp_table":
        connection.exec_driver_sql("CREATE TEMP TABLE sk_scratch (x int)")
        connection.commit()
    elif action == "advisory_lock":
        connection.exec_driver_sql(f"SELECT pg_advisory_lock({lock_key})")
    elif action == "listen":
        connection.exec_driver_sql("LISTEN sk_channel")
        connection.commit()
    elif action == "cursor_with_hold":
        connection.exec_driver_sql("DECLARE sk_cursor CURSOR WITH HOLD FOR SELECT 1")
        connection.commit()
    elif action == "aborted_transaction":
        connection.exec_driver_sql("SET statement_timeout = 4321")
        with contextlib.suppress(sqlalchemy.exc.DataError):  # the app handles it, answers anyway
            connection.exec_driver_sql("SELECT 1 / 0")
    elif action == "raw_dbapi":
        raw = db().dbapi_connection()
        with raw.cursor() as cursor:
            cursor.execute("SET statement_timeout = 4321; PREPARE sk_raw AS SELECT 1")
        raw.commit()
    elif action == "raw_through_proxy":
        proxied = connection.connection  # the pool's proxy, reached without a statement
        cursor = proxied.cursor()
        cursor.execute("SET statement_timeout = 4321")
        cursor.close()
        proxied.commit()
    elif action == "begin_behind_the_driver":
        # Autocommit at the driver, then BEGIN as text: the server has a transaction that
        # psycopg2 knows nothing of, so its rollback() would not end it.
        autocommit = connection.execution_options(isolation_level="AUTOCOMMIT")
        autocommit.exec_driver_sql("BEGIN")
        autocommit.exec_driver_sql("SET statement_timeout = 4321")
    elif action == "everything":
        for each in ("prepare", "temp_table", "advisory_lock", "listen", "cursor_with_hold",
                     "set_left_open"):
            leave_state(connection, each, lock_key)
    else:
        raise AssertionError(action)


ACTIONS = ("set_committed", "set_left_open", "prepare", "temp_table", "advisory_lock", "listen",
           "cursor_with_hold", "aborted_transaction", "raw_dbapi", "raw_through_proxy",
           "begin_behind_the_driver", "everything")


def state_app(seen: list[tuple[Any, ...]], lock_key: int) -> Callable[..., Any]:
    """``/show`` records the session state; ``/<action>`` leaves that state behind."""

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        action = environ["PATH_INFO"].strip("/")
        if action == "nodb":
            pass
        elif action == "checkout_only":
            db().connection()
        else:
            connection = db().connection()
            if action == "show":
                raw = connection.connection.dbapi_connection
                seen.append((raw.info.transaction_status,
                             *connection.execute(SESSION_STATE).one()))
            elif action == "raise":
                connection.exec_driver_sql("SET statement_timeout = 4321")
                raise RuntimeError("the app failed")
            else:
                leave_state(connection, action, lock_key)
        start_response("200 OK", [("content-type", "text/plain")])
        return [b"ok"]

    return app


@pytest.fixture
def one_connection_app(postgres_available: None) -> Any:
    seen: list[tuple[Any, ...]] = []
    app = wrap(state_app(seen, random.randrange(1, 2**31)), pg_url(unique("sk_reset")),
               **ONE_CONNECTION)
    app.seen = seen
    yield app
    service(app).close()


# --------------------------------------------------------------------------- nothing leaks


@pytest.mark.parametrize("action", ACTIONS)
def test_session_state_of_one_request_never_reaches_the_next(one_connection_app: Any,
                                                             action: str) -> None:
    app = one_connection_app
    assert wsgi_get(app, "/show").code == 200
    backend = pg_backend_pids(app)
    assert wsgi_get(app, f"/{action}").code == 200
    # No wait: the next request needs the only slot, which the resetter frees once done.
    assert wsgi_get(app, "/show").code == 200
    assert app.seen == [(0, *CLEAN), (0, *CLEAN)]
    assert pg_backend_pids(app) == backend  # the same connection served all three
    assert service(app).wait_idle()
    assert service(app).checked_out() == 0


def test_a_request_that_raised_leaves_nothing(one_connection_app: Any) -> None:
    app = one_connection_app
    with pytest.raises(RuntimeError):
        wsgi_get(app, "/raise")
    assert wsgi_get(app, "/show").code == 200
    assert app.seen == [(0, *CLEAN)]


def test_inline_reset_switch_resets_before_the_request_returns(postgres_available: None) -> None:
    seen: list[tuple[Any, ...]] = []
    app = wrap(state_app(seen, 7), pg_url(unique("sk_inline")), reset_in_background=False,
               **ONE_CONNECTION)
    database = service(app).databases["default"]
    wsgi_get(app, "/everything")
    assert database.resetting() == 0 and database.checked_out() == 0  # already back
    wsgi_get(app, "/show")
    assert seen == [(0, *CLEAN)]
    service(app).close()


def test_a_configured_reset_statement_runs_as_configured(postgres_available: None) -> None:
    name = unique("sk_reset_all")
    seen: list[tuple[Any, ...]] = []
    app = wrap(state_app(seen, 7), pg_url(name), reset_statement="RESET ALL", **ONE_CONNECTION)
    wsgi_get(app, "/set_committed")
    wsgi_get(app, "/prepare")
    wsgi_get(app, "/show")
    assert seen[0][1:3] == ("0", 1)  # RESET ALL resets settings, keeps prepared statements
    service(app).close()


def test_discard_all_statements_follow_a_rollback_in_one_query(postgres_available: None) -> None:
    connection = psycopg2.connect(PG_DSN)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SET statement_timeout = 4321; PREPARE sk_p AS SELECT 1; "
                           "CREATE TEMP TABLE sk_t (x int); SELECT pg_advisory_lock(99); "
                           "LISTEN sk_c; DECLARE sk_k CURSOR WITH HOLD FOR SELECT 1; "
                           "CREATE TEMP SEQUENCE sk_s; SELECT nextval('sk_s')")
            connection.commit()
            cursor.execute("SELECT 1")  # a transaction open again, as a request leaves it
            assert connection.info.transaction_status != 0
            # One query: the ROLLBACK ends the transaction, the rest runs in the implicit
            # transaction of a multi-statement query, where DISCARD ALL itself would fail.
            cursor.execute("ROLLBACK; " + DISCARD_ALL_STATEMENTS)
            assert connection.info.transaction_status == 0
            cursor.execute(SESSION_STATE.text)
            assert cursor.fetchone() == CLEAN
    finally:
        connection.close()


# --------------------------------------------------------------------------- untouched


def test_an_untouched_checkout_sends_no_statement(one_connection_app: Any) -> None:
    app = one_connection_app
    wsgi_get(app, "/set_committed")
    assert service(app).wait_idle()
    before = last_query(app)
    for _ in range(5):
        assert wsgi_get(app, "/checkout_only").code == 200
    assert service(app).wait_idle()
    assert service(app).databases["default"].resetting() == 0
    assert last_query(app) == before  # no rollback, no reset, no ping reached the server
    wsgi_get(app, "/show")
    assert app.seen == [(0, *CLEAN)]


def test_request_connections_are_tracked_and_the_engine_is_left_as_sqlalchemy_made_it(
        sqlite_url: str) -> None:
    # The handles build TrackedConnection(engine), SQLAlchemy's documented constructor, so
    # reaching the raw connection marks the request's connection touched; engine.connect()
    # still gives SQLAlchemy's own class.
    kinds: list[type] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        kinds.append(type(db().connection()))
        start_response("200 OK", [])
        return [b"ok"]

    wrapped = wrap(app, sqlite_url)
    wsgi_get(wrapped, "/")
    assert kinds == [TrackedConnection]
    with service(wrapped).databases["default"].engine.connect() as connection:
        assert type(connection) is sqlalchemy.engine.Connection


def test_connections_taken_outside_requests_are_still_reset_on_return(
        one_connection_app: Any) -> None:
    engine = service(one_connection_app).databases["default"].engine
    with engine.connect() as connection:
        connection.exec_driver_sql("SET statement_timeout = 4321")
        connection.commit()
    wsgi_get(one_connection_app, "/show")
    assert one_connection_app.seen == [(0, *CLEAN)]


# --------------------------------------------------------------------------- failures, limits


def test_a_failed_reset_discards_the_connection_and_the_next_request_works(
        postgres_available: None, caplog: pytest.LogCaptureFixture) -> None:
    killed: list[int] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        connection = db().connection()
        pid = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
        if environ["PATH_INFO"] == "/kill":
            # Terminated (waiting up to 5 s until it is gone) while this request holds it:
            # the reset after the response is the first to find the connection dead.
            pg_execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))
            killed.append(pid)
        start_response("200 OK", [])
        return [str(pid).encode()]

    wrapped = wrap(app, pg_url(unique("sk_killed")), **ONE_CONNECTION)
    with caplog.at_level(logging.WARNING, logger="scalekit.pool"):
        assert wsgi_get(wrapped, "/kill").code == 200
        assert service(wrapped).wait_idle()
    assert any("discarding it" in record.getMessage() for record in caplog.records)
    assert service(wrapped).checked_out() == 0
    answer = wsgi_get(wrapped, "/")
    assert answer.code == 200 and int(answer.chunks[0]) != killed[0]
    service(wrapped).close()


def test_slot_stays_taken_until_the_reset_is_done(postgres_available: None) -> None:
    # A reset that takes 0.5 s: a request arriving meanwhile cannot have the connection, and
    # with a shorter pool timeout it is answered 503 (never handed the unreset connection).
    seen: list[tuple[Any, ...]] = []
    app = wrap(state_app(seen, 7), pg_url(unique("sk_slow_reset")), pool_size=1, max_overflow=0,
               pool_timeout_seconds=0.1, reset_statement="SELECT pg_sleep(0.5)")
    assert wsgi_get(app, "/set_committed").code == 200
    shed = wsgi_get(app, "/show")
    assert shed.code == 503 and shed.header("retry-after") == "1"
    assert service(app).wait_idle()
    assert wsgi_get(app, "/show").code == 200
    service(app).close()


def test_saturated_pool_still_answers_503_within_pool_timeout(postgres_available: None) -> None:
    release = threading.Event()
    started = threading.Event()

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        db().connection().exec_driver_sql("SELECT 1")
        start_response("200 OK", [])
        if environ["PATH_INFO"] == "/hold":
            started.set()
            release.wait(10)
        return [b"ok"]

    wrapped = wrap(app, pg_url(unique("sk_saturated")), pool_size=1, max_overflow=0,
                   pool_timeout_seconds=0.3)
    holder = threading.Thread(target=wsgi_get, args=(wrapped, "/hold"))
    holder.start()
    assert started.wait(10)
    began = time.monotonic()
    answer = wsgi_get(wrapped, "/")
    elapsed = time.monotonic() - began
    release.set()
    holder.join(10)
    assert answer.code == 503 and 0.3 <= elapsed < 3
    assert wsgi_get(wrapped, "/").code == 200
    service(wrapped).close()


def test_asgi_sync_checkout_on_the_loop_waits_for_a_reset_in_flight(
        postgres_available: None) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        connection = db().connection()  # sync, on the loop: must not wait for a busy pool
        connection.exec_driver_sql("SET statement_timeout = 4321")
        value = connection.exec_driver_sql("SHOW statement_timeout").scalar_one()
        connection.commit()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": value.encode()})

    wrapped = wrap(app, pg_url(unique("sk_asgi_reset")), pool_size=1, max_overflow=0,
                   reset_statement="SELECT pg_sleep(0.2); RESET ALL")

    async def scenario() -> list[ASGICall]:
        return [await ASGICall("/").run(wrapped) for _ in range(3)]

    calls = asyncio.run(scenario())
    assert [call.status for call in calls] == [200, 200, 200]  # each waited for the reset
    assert service(wrapped).wait_idle()
    service(wrapped).close()


# --------------------------------------------------------------------------- fork


def test_forked_child_starts_its_own_resetter_and_ignores_the_parents_queue(
        postgres_available: None) -> None:
    seen: list[tuple[Any, ...]] = []
    app = wrap(state_app(seen, 7), pg_url(unique("sk_fork_reset")), pool_size=1, max_overflow=0,
               reset_statement="SELECT pg_sleep(0.3); DISCARD ALL")
    wsgi_get(app, "/set_committed")  # its reset is running in the parent when it forks
    database = service(app).databases["default"]
    assert database.resetting() == 1

    def child() -> bytes:
        ok = database.resetting() == 0
        ok = ok and wsgi_get(app, "/everything").code == 200 and database.wait_idle(10)
        ok = ok and wsgi_get(app, "/show").code == 200 and seen[-1] == (0, *CLEAN)
        return b"ok" if ok else repr(seen).encode()

    assert in_forked_child(child) == b"ok"
    assert database.wait_idle()
    wsgi_get(app, "/show")
    assert seen == [(0, *CLEAN)]  # the parent's connection, reset by the parent only
    service(app).close()


# --------------------------------------------------------------------------- property

REQUEST_ACTIONS = (*ACTIONS, "nodb", "checkout_only", "raise")


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(actions=st.lists(st.sampled_from(REQUEST_ACTIONS), min_size=1, max_size=8))
def test_no_sequence_of_requests_leaks_session_state(one_connection_app: Any,
                                                     actions: list[str]) -> None:
    app = one_connection_app
    app.seen.clear()
    for action in actions:
        try:
            wsgi_get(app, f"/{action}")
        except RuntimeError:
            assert action == "raise"
        wsgi_get(app, "/show")
    assert app.seen == [(0, *CLEAN)] * len(actions)


# --------------------------------------------------------------------------- helpers


def pg_backend_pids(app: Any) -> list[int]:
    name = app_name(app)
    return [row[0] for row in pg_execute(
        "SELECT pid FROM pg_stat_activity WHERE application_name = %s ORDER BY pid", (name,))]


def last_query(app: Any) -> tuple[Any, ...]:
    rows = pg_execute("SELECT pid, query_start, query, state FROM pg_stat_activity "
                      "WHERE application_name = %s", (app_name(app),))
    assert len(rows) == 1, rows
    return rows[0]


def app_name(app: Any) -> str:
    url = service(app).databases["default"].url
    return str(url.query["application_name"])
