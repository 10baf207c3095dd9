"""Health: after every connection is cut (a Postgres restart, through a TCP proxy the test
controls), pre-ping replaces the dead connections and only requests in flight fail; while the
database is down requests get 503, not a hang; a forked child never shares the parent's pool."""

from __future__ import annotations

import os
import socket
from typing import Any

import pytest
import sqlalchemy.exc

from scalekit.pool import db
from scalekit.pool.engines import (
    KEEPALIVE_COUNT,
    KEEPALIVE_IDLE_SECONDS,
    KEEPALIVE_INTERVAL_SECONDS,
    TCP_USER_TIMEOUT_MILLISECONDS,
)

from .apps import make_wsgi_app, wrap
from .helpers import WSGICall, in_forked_child, pg_sessions, pg_url, unique, wsgi_get

pytestmark = pytest.mark.postgres


def backend_pid_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    pid = db().connection().exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
    start_response("200 OK", [("content-type", "text/plain")])
    return [str(pid).encode()]


def test_pool_recovers_after_every_connection_is_cut(proxy: Any, pg_table: str) -> None:
    name = unique("sk_proxy")
    app = wrap(make_wsgi_app(pg_table), pg_url(name, port=proxy.port), pool_size=3, max_overflow=0)
    warm = [WSGICall(app, "/stream").read(1) for _ in range(3)]  # three connections in the pool
    in_flight = warm.pop()
    for call in warm:
        call.read().close()
    assert proxy.open_connections == 3

    assert proxy.drop_all() == 3  # the database "restarts": every socket is gone

    # The request in flight fails (its connection died under it) and is cleaned up...
    with pytest.raises(sqlalchemy.exc.OperationalError):
        in_flight.read()
    in_flight.close()
    # ...and every later request succeeds: pre-ping replaced the dead idle connections.
    codes = [wsgi_get(app, path).code for path in ("/ok", "/write", "/stream", "/ok") * 5]
    assert codes == [200] * 20
    assert app.runtime.services["pool"].wait_idle()  # the background resets have run
    assert app.runtime.services["pool"].checked_out() == 0
    assert proxy.open_connections >= 1
    assert pg_sessions(name).get("idle in transaction", 0) == 0
    app.runtime.services["pool"].close()


def test_database_down_answers_503_then_recovers(proxy: Any, pg_table: str) -> None:
    app = wrap(make_wsgi_app(pg_table), pg_url(unique("sk_down"), port=proxy.port),
               pool_size=2, retry_after_seconds=5)
    assert wsgi_get(app, "/ok").code == 200
    proxy.refusing = True
    proxy.drop_all()
    down = wsgi_get(app, "/ok")
    assert down.code == 503 and down.header("retry-after") == "5"
    assert b"Traceback" not in b"".join(down.chunks)
    proxy.refusing = False
    assert [wsgi_get(app, "/ok").code for _ in range(3)] == [200, 200, 200]
    app.runtime.services["pool"].close()


def test_forked_child_never_uses_the_parents_connections(postgres_available: None) -> None:
    app = wrap(backend_pid_app, pg_url(unique("sk_fork")), pool_size=1, max_overflow=0)
    parent_backend = int(wsgi_get(app, "/").chunks[0])  # now idle in the parent's pool
    child_backend = int(in_forked_child(lambda: wsgi_get(app, "/").chunks[0]))
    assert child_backend != parent_backend
    # The child neither used nor closed the parent's connection: it still serves the parent.
    assert int(wsgi_get(app, "/").chunks[0]) == parent_backend
    app.runtime.services["pool"].close()


def test_pid_check_replaces_a_pool_inherited_without_fork_hooks(postgres_available: None) -> None:
    app = wrap(backend_pid_app, pg_url(unique("sk_pid")), pool_size=1, max_overflow=0)
    first = int(wsgi_get(app, "/").chunks[0])
    database = app.runtime.services["pool"].databases["default"]
    old_pool = database.engine.pool
    database._pid = -1  # as if this process were a child that skipped os.register_at_fork
    assert int(wsgi_get(app, "/").chunks[0]) != first
    assert database.engine.pool is not old_pool
    app.runtime.services["pool"].close()


def _socket_options(dbapi_connection: Any) -> dict[str, int]:
    sock = socket.socket(fileno=os.dup(dbapi_connection.fileno()))
    try:
        return {
            "keepalive": sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
            "idle": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
            "interval": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
            "count": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
            "user_timeout_ms": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
        }
    finally:
        sock.close()


@pytest.mark.parametrize(("query", "expected_idle", "expected_user_timeout_ms"), [
    pytest.param("", KEEPALIVE_IDLE_SECONDS, TCP_USER_TIMEOUT_MILLISECONDS, id="defaults"),
    pytest.param("&keepalives_idle=7&tcp_user_timeout=4500", 7, 4500, id="the URL wins"),
])
def test_pooled_postgres_sockets_detect_a_vanished_server(
        postgres_available: None, query: str, expected_idle: int,
        expected_user_timeout_ms: int) -> None:
    """A host that disappears without a reset must not hold queries for the kernel's ~15 min
    retransmission timeout: keepalive probes and TCP_USER_TIMEOUT are on every pooled socket."""
    seen: list[dict[str, int]] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.append(_socket_options(db().dbapi_connection()))
        start_response("200 OK", [("content-type", "text/plain")])
        return [b"ok"]

    wrapped = wrap(app, pg_url(unique("sk_keepalive")) + query, pool_size=1, max_overflow=0)
    assert wsgi_get(wrapped, "/").status.startswith("200")
    wrapped.runtime.services["pool"].close()
    assert seen == [{"keepalive": 1, "idle": expected_idle, "interval": KEEPALIVE_INTERVAL_SECONDS,
                     "count": KEEPALIVE_COUNT, "user_timeout_ms": expected_user_timeout_ms}]
