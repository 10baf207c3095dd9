"""The SQLAlchemy engine of one configured database, set up for the pool layer.

A QueuePool engine with: the driver's connection parameters (Postgres: a connect timeout,
TCP keepalives, an application name), the pre-ping by socket poll (:mod:`.liveness`), the
session reset of connections that code other than the request handles gives back, the
statement events of table tracking (:mod:`.tracking`), and, for the default SQLite file only,
WAL mode. Everything is attached with SQLAlchemy's public API (``create_engine`` arguments and
events).

>>> engine, reset = create_pool_engine(DatabaseConfig(url="sqlite://"), make_url("sqlite://"),
...                                    track_tables=True)
>>> with engine.connect() as connection:
...     connection.exec_driver_sql("select 1").scalar()
1
>>> reset is None  # SQLite: the rollback is the whole reset
True
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.pool import QueuePool

from .config import DatabaseConfig
from .liveness import install_liveness_check
from .policy import default_sqlite_url, resolve_reset_statement
from .resetter import reset_session
from .tracking import install_events

__all__ = [
    "DBAPI_SETTINGS",
    "DBAPI_SETTING_NAMES",
    "SESSION_RESET_DONE",
    "create_pool_engine",
    "dbapi_settings",
    "engine_url",
    "postgres_socket_defaults",
]

# Pool record info: the DBAPI connection's client-side settings when it was opened.
DBAPI_SETTINGS = "scalekit.dbapi_settings"
# Pool record info: the layer already reset this connection (or it needed none), so the pool
# "reset" hook, which resets connections checked out by other code, skips it once.
SESSION_RESET_DONE = "scalekit.session_reset_done"

# TCP keepalives on every pooled Postgres connection, and (libpq 12+) a bound on how long sent
# data may stay unacknowledged. Without them, a database host that vanishes without a reset
# (power loss, a partition, a dropped NAT entry) leaves each query waiting for the kernel's
# retransmission timeout, about 15 minutes, and the pool's connections with it. A long query
# is unaffected: the server acknowledges the probes while it works.
KEEPALIVE_IDLE_SECONDS = 30
KEEPALIVE_INTERVAL_SECONDS = 10
KEEPALIVE_COUNT = 3
TCP_USER_TIMEOUT_MILLISECONDS = 30_000

# Client-side settings of a DBAPI connection that outlive a session reset (DISCARD ALL cannot
# reach them): psycopg2's, then sqlite3's. Missing ones read as None.
DBAPI_SETTING_NAMES = ("autocommit", "isolation_level", "readonly", "deferrable", "encoding",
                  "cursor_factory", "row_factory", "text_factory")
_UNREADABLE = ("unreadable",)


def engine_url(config: DatabaseConfig, state_dir: str) -> URL:
    """The SQLAlchemy URL of a database (the default SQLite file when none is configured).

    A plain ``postgresql://`` URL means psycopg2 (the ``postgres`` extra), whatever SQLAlchemy's
    own default driver for it is.
    """
    url = make_url(config.url or default_sqlite_url(state_dir))
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg2")
    password = config.resolved_password()  # given apart from the URL: no encoding needed
    if password is not None:
        url = url.set(password=password)
    return url


def postgres_socket_defaults() -> dict[str, int]:
    """libpq connection parameters scalekit sets unless the database URL sets them."""
    defaults = {"keepalives": 1, "keepalives_idle": KEEPALIVE_IDLE_SECONDS,
                "keepalives_interval": KEEPALIVE_INTERVAL_SECONDS, "keepalives_count": KEEPALIVE_COUNT}
    import psycopg2  # type: ignore[import-untyped]

    if psycopg2.__libpq_version__ >= 120000:  # tcp_user_timeout is a libpq 12 parameter
        defaults["tcp_user_timeout"] = TCP_USER_TIMEOUT_MILLISECONDS
    return defaults


def create_pool_engine(config: DatabaseConfig, url: URL, *,
                       track_tables: bool) -> tuple[Engine, str | None]:
    """The engine of one database, and the statement that resets a returned connection's
    session (None: the rollback is the whole reset)."""
    engine = create_engine(
        url,
        poolclass=QueuePool,
        pool_size=config.pool_size,
        max_overflow=config.max_overflow,
        pool_timeout=config.pool_timeout_seconds,
        pool_pre_ping=False,  # .liveness instead: a socket poll first, a round trip if needed
        pool_recycle=config.recycle_seconds if config.recycle_seconds > 0 else -1,
        connect_args=_connect_args(config, url),
    )
    if config.pre_ping and url.get_backend_name() != "sqlite":  # a file cannot disconnect
        install_liveness_check(engine)
    event.listen(engine, "connect", _record_dbapi_settings)
    if config.url is None:
        event.listen(engine, "connect", _tune_default_sqlite)
    reset = resolve_reset_statement(config.reset_statement, dialect=engine.dialect.name,
                                    driver=engine.dialect.driver)
    if reset is not None:
        event.listen(engine, "reset", _reset_hook(reset))
    install_events(engine, track_tables=track_tables)
    return engine, reset


def _connect_args(config: DatabaseConfig, url: URL) -> dict[str, Any]:
    connect_args: dict[str, Any] = {}
    if url.get_backend_name() == "sqlite":
        database = url.database
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        connect_args["timeout"] = config.pool_timeout_seconds  # wait on a locked file
    elif url.get_backend_name() == "postgresql" and url.get_driver_name() == "psycopg2":
        connect_args["connect_timeout"] = max(1, math.ceil(config.connect_timeout_seconds))
        if "application_name" not in url.query:
            connect_args["application_name"] = "scalekit"  # findable in pg_stat_activity
        for name, value in postgres_socket_defaults().items():
            if name not in url.query:  # a libpq parameter in the URL wins
                connect_args[name] = value
    return connect_args


def dbapi_settings(dbapi_connection: Any) -> tuple[Any, ...]:
    """The client-side settings of a DBAPI connection, to compare with those it was opened with.

    Typecasters registered on a psycopg2 connection count too (by number). A connection whose
    settings cannot be read (closed by the app) gets a value no open connection has.
    """
    try:
        values = tuple(getattr(dbapi_connection, name, None) for name in DBAPI_SETTING_NAMES)
        casters = tuple(len(getattr(dbapi_connection, name, ())) for name in ("string_types", "binary_types"))
    except Exception:  # noqa: BLE001  (psycopg2: InterfaceError on a closed connection)
        return _UNREADABLE
    return values + casters


def _reset_hook(statement: str) -> Any:
    """The pool "reset" hook, for connections checked out by other code than the request
    handles (``db().engine.connect()``): roll back, then run ``statement``. The handles'
    connections were reset already (or needed no reset) and are flagged so."""

    def reset(dbapi_connection: Any, record: Any, reset_state: Any) -> None:
        if reset_state.terminate_only:
            return  # the connection is being closed, nothing to clean
        if record.info.pop(SESSION_RESET_DONE, False):
            return
        reset_session(dbapi_connection, statement)
        # An exception here makes SQLAlchemy discard the connection rather than reuse it.

    return reset


def _record_dbapi_settings(dbapi_connection: Any, record: Any) -> None:
    # After the dialect's own on-connect setup (registered first): what a fresh one looks like.
    record.info[DBAPI_SETTINGS] = dbapi_settings(dbapi_connection)


def _tune_default_sqlite(dbapi_connection: Any, record: Any) -> None:
    # The default demo database only (a configured file is left as its owner set it): WAL lets
    # readers proceed while one request writes, and NORMAL syncs at checkpoints instead of at
    # every COMMIT, which survives an app crash (not a power cut) at a fraction of the cost.
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()
