"""Which tables a request reads and writes, observed on its pooled connection.

Every statement executed through a request's SQLAlchemy Connection is classified
(:mod:`.tables`). Tables read tag the response ``table:NAME`` (``ctx.tags``,
``ctx.tables_read``). Tables written are held per transaction (and per savepoint) and, once
the COMMIT has succeeded, invalidated with ``runtime.invalidate(("table:NAME", ...),
source="table")``; a rollback drops them. Not observed: statements run on the raw DBAPI
connection, and writes hidden in functions or triggers (the change feed covers those).

Everything is seen through SQLAlchemy's public events. Its ``commit`` event comes *before*
the COMMIT, and invalidating then would let a concurrent request cache the old rows under the
new generation; no event follows a successful COMMIT. So the tables are held as committing,
and invalidated the moment the request is seen to go on past the COMMIT: its next transaction
begins, its response starts, or its connection is given back. A COMMIT that fails
(``handle_error``) drops them, unless the connection broke, when the outcome is unknown and
they are invalidated anyway. A COMMIT sent as SQL text, and a write in autocommit mode, have
run when ``after_cursor_execute`` comes: invalidated at once.

>>> watch = ConnectionWatch(RequestContext("POST", "/"), print, track_tables=True)
>>> watch.record(access_of_sql("UPDATE products SET price = 2", "postgres"), autocommit=False)
>>> watch.commit_started()
>>> watch.commit_confirmed()
('table:products',)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from ..context import RequestContext
from .errors import RequestDatabaseError
from .tables import NO_TABLES, TableAccess, access_of_compiled, access_of_sql, table_tag

__all__ = [
    "ConnectionWatch",
    "TrackedConnection",
    "access_of_sql",
    "attach",
    "detach",
    "install_events",
    "mark_touched",
    "table_tag",
]

log = logging.getLogger("scalekit.pool")

Invalidate = Callable[[tuple[str, ...]], None]


class ConnectionWatch:
    """One request's view of its connection: statements in flight, tables touched.

    ``executing`` lets the layer give the connection back early (client disconnect, release at
    response start) only when no statement is running on it in another thread; ``released``
    (set under ``lock``) makes a statement that races with that release fail instead of running
    on a connection that is already back in the pool. ``touched`` turns True as soon as the
    request may have changed the session (a statement, the raw DBAPI connection handed out,
    a transaction begun): only a touched connection needs the rollback and session reset.
    """

    __slots__ = (
        "_committing",
        "_pending",
        "connection",
        "ctx",
        "executing",
        "invalidate",
        "lock",
        "released",
        "started",
        "touched",
        "track_tables",
    )

    def __init__(self, ctx: RequestContext, invalidate: Invalidate, *, track_tables: bool) -> None:
        self.connection: Connection | None = None  # set by attach(); keeps its id unique
        self.ctx = ctx
        self.invalidate = invalidate
        self.track_tables = track_tables
        self.lock = threading.Lock()
        self.executing: set[int] = set()
        self.started: dict[int, float] = {}  # when each statement in flight began
        self.released = False
        self.touched = False
        self._pending: list[set[str]] = [set()]  # written tables, one set per savepoint level
        self._committing: set[str] = set()  # written, their COMMIT sent and not seen to fail

    def start_release(self, *, only_if_idle: bool) -> bool:
        """Mark released unless ``only_if_idle`` and a statement is running; True if marked."""
        with self.lock:
            if only_if_idle and self.executing:
                return False
            self.released = True
            return True

    def add_statement_time(self, statement: int) -> None:
        """A statement ended (or failed): add its time to the request's database time."""
        started = self.started.pop(statement, None)
        if started is not None:
            with self.lock:  # statements of one request may run in several threads
                self.ctx.db_seconds += time.perf_counter() - started

    def record(self, access: TableAccess, *, autocommit: bool) -> None:
        """A statement ran: note what it read and wrote (``autocommit``: committed already)."""
        self.commit_confirmed()
        if access.read:
            self.ctx.tables_read.update(access.read)
            self.ctx.tags.update(access.read_tags)
        if access.written:
            self._pending[-1].update(access.written)
            if autocommit:  # each statement is its own committed transaction
                self._invalidate(self._take_pending())
        if access.transaction == "commit":  # COMMIT sent as text: it has run
            self._invalidate(self._take_pending())
        elif access.transaction == "rollback":
            self._pending = [set()]

    def commit_started(self) -> None:
        """The transaction's COMMIT is about to be sent."""
        self._committing.update(self._take_pending())

    def commit_failed(self, *, outcome_known: bool) -> None:
        """The COMMIT raised: nothing was written, unless the connection broke under it."""
        if outcome_known:
            self._committing = set()
        else:
            self.commit_confirmed()

    def commit_confirmed(self) -> None:
        """The request went on past its COMMIT: what it wrote is invalidated now."""
        if self._committing:
            written, self._committing = self._committing, set()
            self._invalidate(written)

    def rolled_back(self) -> None:
        self.commit_confirmed()
        self._pending = [set()]

    def savepoint(self) -> None:
        self.commit_confirmed()
        self._pending.append(set())

    def savepoint_released(self) -> None:
        if len(self._pending) > 1:
            top = self._pending.pop()
            self._pending[-1].update(top)

    def savepoint_rolled_back(self) -> None:
        if len(self._pending) > 1:
            self._pending.pop()

    def _take_pending(self) -> set[str]:
        written: set[str] = set().union(*self._pending)
        self._pending = [set()]
        return written

    def _invalidate(self, written: set[str]) -> None:
        if not written:
            return
        self.ctx.tables_written.update(written)
        try:
            self.invalidate(tuple(sorted(table_tag(name) for name in written)))
        except Exception:  # the commit happened; failing the app now would lie
            log.exception("scalekit: invalidating tables %s after a commit failed", sorted(written))


# id(connection) -> its watch. A plain dict is the cheapest lookup on the per-statement path;
# the watch holds the connection, so the id cannot be reused while the entry exists, and the
# database always detaches once the connection is back.
_WATCHES: dict[int, ConnectionWatch] = {}


def attach(connection: Connection, watch: ConnectionWatch) -> None:
    """Observe ``connection`` for one request (until :func:`detach`)."""
    watch.connection = connection
    _WATCHES[id(connection)] = watch


def detach(connection: Connection) -> None:
    """Stop observing ``connection`` (it is back in the pool)."""
    watch = _WATCHES.pop(id(connection), None)
    if watch is not None:
        watch.connection = None


def mark_touched(connection: Connection) -> None:
    """Record that the request may have changed ``connection``'s session (it needs a reset)."""
    watch = _WATCHES.get(id(connection))
    if watch is not None:
        watch.touched = True


class TrackedConnection(Connection):
    """The request handles' Connection: reaching the pooled DBAPI connection marks it touched.

    Built as ``TrackedConnection(engine)``, what ``engine.connect()`` builds with the base
    class (SQLAlchemy's documented constructor). Statements are seen by the cursor events, but
    ``connection.connection`` (the pool's proxy of the DBAPI connection) lets code change the
    session without any: a raw cursor, a ``set_session()``, an isolation level through
    ``execution_options()``, SQLAlchemy's own begin/commit/rollback. Each of those goes through
    this property, so whoever reaches it is counted as having touched the session
    (conservative: a reset too many costs a round trip in the background, a reset too few
    leaks state into another request).
    """

    @property
    def connection(self) -> Any:  # the PoolProxiedConnection, as in the base class
        watch = _WATCHES.get(id(self))
        if watch is not None:
            watch.touched = True
        return super().connection


def install_events(engine: Engine, *, track_tables: bool) -> None:
    """Register the statement (and, when tracking, transaction) events on ``engine``."""
    dialect = engine.dialect.name

    @event.listens_for(engine, "before_cursor_execute")
    def _before_cursor_execute(conn: Connection, cursor: Any, statement: str, parameters: Any,
                               context: Any, executemany: bool) -> None:
        watch = _WATCHES.get(id(conn))
        if watch is None:
            return
        watch.touched = True
        with watch.lock:
            if watch.released:
                raise RequestDatabaseError(
                    "this request's database connection was already given back (response "
                    "started with release_at_response_start(), or the client disconnected).")
            watch.executing.add(id(context))
            watch.started[id(context)] = time.perf_counter()

    @event.listens_for(engine, "after_cursor_execute")
    def _after_cursor_execute(conn: Connection, cursor: Any, statement: str, parameters: Any,
                              context: Any, executemany: bool) -> None:
        watch = _WATCHES.get(id(conn))
        if watch is None:
            return
        watch.executing.discard(id(context))
        watch.add_statement_time(id(context))
        if not watch.track_tables:
            return
        compiled = context.compiled if context is not None else None
        access = access_of_compiled(compiled) if compiled is not None else None
        if access is None:
            access = access_of_sql(statement, dialect)
        if access is not NO_TABLES:
            watch.record(access, autocommit=bool(access.written) and _is_autocommit(conn))

    @event.listens_for(engine, "handle_error")
    def _handle_error(exception_context: Any) -> None:
        connection = exception_context.connection
        watch = _WATCHES.get(id(connection)) if connection is not None else None
        if watch is None:
            return
        watch.executing.discard(id(exception_context.execution_context))
        watch.add_statement_time(id(exception_context.execution_context))
        if exception_context.statement is None:  # no statement: the COMMIT (or a rollback)
            watch.commit_failed(outcome_known=not exception_context.is_disconnect)

    if track_tables:
        _install_transaction_events(engine)


def _install_transaction_events(engine: Engine) -> None:
    for name, method in (("begin", "commit_confirmed"), ("commit", "commit_started"),
                         ("rollback", "rolled_back"), ("savepoint", "savepoint"),
                         ("release_savepoint", "savepoint_released"),
                         ("rollback_savepoint", "savepoint_rolled_back")):
        event.listen(engine, name, _forward(method))


def _forward(method: str) -> Callable[..., None]:
    def handler(conn: Connection, *args: Any) -> None:
        watch = _WATCHES.get(id(conn))
        if watch is not None:
            getattr(watch, method)()
    return handler


def _is_autocommit(conn: Connection) -> bool:
    """Whether each statement on ``conn`` commits by itself: SQLAlchemy's AUTOCOMMIT isolation
    level, or the driver's own autocommit switched on (psycopg2's ``autocommit``)."""
    if conn.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
        return True
    return getattr(conn.connection.dbapi_connection, "autocommit", False) is True
