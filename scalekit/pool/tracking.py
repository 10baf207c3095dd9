"""Which tables a request reads and writes, observed on its pooled connection.

Every statement executed through a request's SQLAlchemy Connection is classified once per
distinct statement and then looked up:

* SQLAlchemy Core / ORM statements by the table objects in their compiled form (the compiled
  object is reused by SQLAlchemy's statement cache, so the walk happens once per shape);
* raw SQL text (``text()``, ``exec_driver_sql``) by sqlglot, a real SQL parser (a regex cannot
  tell a table from a CTE, a string literal or a comment), behind an LRU cache of texts.

Tables read tag the response ``table:NAME`` (``ctx.tags``, ``ctx.tables_read``). Tables written
are held per transaction (and per savepoint) and, once the COMMIT has succeeded, invalidated
with ``runtime.invalidate(("table:NAME", ...), source="table")``; a rollback drops them.
Not observed: statements run on the raw DBAPI connection, and writes hidden in functions or
triggers (the change feed covers those).

>>> access_of_sql("UPDATE products SET price = 1 WHERE id IN (SELECT id FROM promo)", "postgres")
TableAccess(read=frozenset({'promo'}), written=frozenset({'products'}), transaction=None)
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import sqlglot
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql import visitors
from sqlalchemy.sql.dml import UpdateBase
from sqlalchemy.sql.elements import TextClause
from sqlglot import exp

from ..context import RequestContext
from .errors import RequestDatabaseError

__all__ = [
    "ConnectionWatch",
    "TableAccess",
    "TrackedConnection",
    "access_of_sql",
    "access_of_statement",
    "attach",
    "detach",
    "install_events",
    "mark_touched",
    "set_parse_cache_size",
    "table_tag",
    "watch_of",
]

log = logging.getLogger("scalekit.pool")

Transaction = Literal["commit", "rollback"] | None
Invalidate = Callable[[tuple[str, ...]], None]


def table_tag(name: str) -> str:
    """The cache tag of a table: ``table:products``."""
    return f"table:{name}"


@dataclass(frozen=True, slots=True)
class TableAccess:
    """The tables one statement reads and writes, and whether it ends the transaction."""

    read: frozenset[str] = frozenset()
    written: frozenset[str] = frozenset()
    transaction: Transaction = None
    read_tags: frozenset[str] = field(default=frozenset(), repr=False, compare=False)

    def __post_init__(self) -> None:
        # Precomputed once per distinct statement, so recording a read costs a set update.
        object.__setattr__(self, "read_tags", frozenset(table_tag(name) for name in self.read))


NO_TABLES = TableAccess()

# --------------------------------------------------------------------------- raw SQL (sqlglot)

# Statement kinds whose target table is changed: the target is `this` (or `expressions`).
_WRITES = (exp.Insert, exp.Update, exp.Delete, exp.Merge, exp.Create, exp.Drop, exp.Alter,
           exp.TruncateTable, exp.Copy)
_SQLGLOT_DIALECTS = {"postgresql": "postgres", "sqlite": "sqlite", "mysql": "mysql",
                     "mariadb": "mysql", "mssql": "tsql", "oracle": "oracle"}
_warned_unparsable: set[str] = set()


def access_of_sql(sql: str, dialect: str) -> TableAccess:
    """Tables read and written by raw SQL text (cached; see :func:`set_parse_cache_size`)."""
    return _cached_access_of_sql(sql, dialect)


def _access_of_sql(sql: str, dialect: str) -> TableAccess:
    try:
        statements = sqlglot.parse(sql, read=_SQLGLOT_DIALECTS.get(dialect, dialect))
    except Exception as exc:  # noqa: BLE001  (sqlglot raises several kinds; none may fail a query)
        if len(_warned_unparsable) < 100 and sql not in _warned_unparsable:
            _warned_unparsable.add(sql)
            log.warning("scalekit: cannot parse SQL to find its tables (%s); responses that run "
                        "it are not tagged by table, tag them with scalekit.tag(): %.200s", exc, sql)
        return NO_TABLES
    read: set[str] = set()
    written: set[str] = set()
    transaction: Transaction = None
    for statement in statements:
        if not isinstance(statement, exp.Expression):
            continue
        if isinstance(statement, exp.Commit):
            transaction = "commit"
        elif isinstance(statement, exp.Rollback) and not statement.args.get("savepoint"):
            transaction = "rollback"
        _collect(statement, read, written)
    return TableAccess(frozenset(read), frozenset(written), transaction)


def _collect(tree: exp.Expression, read: set[str], written: set[str]) -> None:
    ctes = {cte.alias_or_name for cte in tree.find_all(exp.CTE)}
    targets: set[int] = set()
    for node in tree.find_all(*_WRITES):
        for table in _targets(node):
            targets.add(id(table))
            name = _table_name(table)
            if name:
                written.add(name)
    for table in tree.find_all(exp.Table):
        if id(table) in targets:
            continue
        name = _table_name(table)
        if name and not (name in ctes and not table.args.get("db")):
            read.add(name)


def _targets(node: exp.Expression) -> list[exp.Table]:
    if isinstance(node, exp.TruncateTable):
        candidates = list(node.expressions)
    else:  # DROP TABLE a, b keeps them in "tables"; the others in "this"
        candidates = [node.this, *(node.args.get("tables") or ())]
    out = []
    for candidate in candidates:
        if isinstance(candidate, exp.Schema):  # INSERT INTO t (a, b) / CREATE TABLE t (...)
            candidate = candidate.this
        if isinstance(candidate, exp.Table):
            out.append(candidate)
    return out


def _table_name(table: exp.Table) -> str | None:
    identifier = table.this
    if not isinstance(identifier, exp.Identifier):
        return None  # a table function such as generate_series(...)
    # The catalog's name: unquoted identifiers fold to lower case (as Postgres does); quoted
    # ones are kept exactly, as they are in the catalog and in the change feed's TG_TABLE_NAME.
    name = str(identifier.this)
    return name if identifier.quoted else name.lower()


_cached_access_of_sql = functools.lru_cache(maxsize=1024)(_access_of_sql)


def set_parse_cache_size(size: int) -> None:
    """Resize the LRU cache of parsed SQL texts (process-wide; from pool config)."""
    global _cached_access_of_sql
    if _cached_access_of_sql.cache_info().maxsize != size:
        _cached_access_of_sql = functools.lru_cache(maxsize=size)(_access_of_sql)


# --------------------------------------------------------------------------- Core / ORM


def access_of_statement(statement: Any) -> TableAccess | None:
    """Tables of a SQLAlchemy Core/ORM statement; None when it embeds SQL text (parse instead)."""
    tables: list[Any] = []
    texts: list[Any] = []
    visitors.traverse(statement, {}, {"table": tables.append, "textclause": texts.append})
    if texts or isinstance(statement, TextClause):
        return None
    target = statement.table if isinstance(statement, UpdateBase) else None
    if target is None:
        element = getattr(statement, "element", None)  # DDL: CreateTable(table), DropTable(table)
        target = element if hasattr(element, "name") and hasattr(element, "c") else None
    target_name = getattr(target, "name", None)
    written = frozenset({target_name}) if target_name else frozenset()
    read = frozenset(t.name for t in tables if t is not target and t.name != target_name)
    return TableAccess(read, written)


@functools.lru_cache(maxsize=2048)
def _access_of_compiled(compiled: Any) -> TableAccess | None:
    # Keyed by the compiled object, which SQLAlchemy reuses for every execution of one
    # statement shape: the traversal runs once per shape, not per execution.
    return access_of_statement(compiled.statement)


# --------------------------------------------------------------------------- per checkout


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
        "_pending",
        "connection",
        "ctx",
        "executing",
        "invalidate",
        "lock",
        "released",
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
        self.released = False
        self.touched = False
        self._pending: list[set[str]] = [set()]  # written tables, one set per savepoint level

    def start_release(self, *, only_if_idle: bool) -> bool:
        """Mark released unless ``only_if_idle`` and a statement is running; True if marked."""
        with self.lock:
            if only_if_idle and self.executing:
                return False
            self.released = True
            return True

    def record(self, access: TableAccess, connection: Connection) -> None:
        if access.read:
            self.ctx.tables_read.update(access.read)
            self.ctx.tags.update(access.read_tags)
        if access.written:
            self._pending[-1].update(access.written)
            if _is_autocommit(connection):  # each statement is its own committed transaction
                self.committed()
        if access.transaction == "commit":
            self.committed()
        elif access.transaction == "rollback":
            self.rolled_back()

    def committed(self) -> None:
        """The transaction's COMMIT succeeded: its written tables are invalidated now."""
        written: set[str] = set().union(*self._pending)
        self._pending = [set()]
        if not written:
            return
        self.ctx.tables_written.update(written)
        try:
            self.invalidate(tuple(sorted(table_tag(name) for name in written)))
        except Exception:  # the commit happened; failing the app now would lie
            log.exception("scalekit: invalidating tables %s after a commit failed", sorted(written))

    def rolled_back(self) -> None:
        self._pending = [set()]

    def savepoint(self) -> None:
        self._pending.append(set())

    def savepoint_released(self) -> None:
        if len(self._pending) > 1:
            top = self._pending.pop()
            self._pending[-1].update(top)

    def savepoint_rolled_back(self) -> None:
        if len(self._pending) > 1:
            self._pending.pop()


# id(connection) -> its watch. A plain dict is the cheapest lookup on the per-statement path;
# the watch holds the connection, so the id cannot be reused while the entry exists, and the
# handle always detaches when it gives the connection back.
_WATCHES: dict[int, ConnectionWatch] = {}
_committing = threading.local()


def attach(connection: Connection, watch: ConnectionWatch) -> None:
    """Observe ``connection`` for one request (until :func:`detach`)."""
    watch.connection = connection
    _WATCHES[id(connection)] = watch


def detach(connection: Connection) -> None:
    """Stop observing ``connection`` (it is going back to the pool)."""
    watch = _WATCHES.pop(id(connection), None)
    if watch is not None:
        watch.connection = None


def watch_of(connection: Connection) -> ConnectionWatch | None:
    """The watch observing ``connection``, if it belongs to a request."""
    return _WATCHES.get(id(connection))


def mark_touched(connection: Connection) -> None:
    """Record that the request may have changed ``connection``'s session (it needs a reset)."""
    watch = _WATCHES.get(id(connection))
    if watch is not None:
        watch.touched = True


class TrackedConnection(Connection):
    """The engine's Connection class: reaching the pooled DBAPI connection marks it touched.

    Statements are seen by the cursor events, but ``connection.connection`` (the pool's proxy
    of the DBAPI connection) lets code change the session without any: a raw cursor, a
    ``set_session()``, an isolation level through ``execution_options()``, SQLAlchemy's own
    begin/commit/rollback. Each of those goes through this property, so whoever reaches it
    is counted as having touched the session (conservative: a reset too many costs a round
    trip in the background, a reset too few leaks state into another request).
    """

    @property
    def connection(self) -> Any:  # the PoolProxiedConnection, as in the base class
        watch = _WATCHES.get(id(self))
        if watch is not None:
            watch.touched = True
        return super().connection


def install_events(engine: Engine, *, track_tables: bool) -> None:
    """Register the statement (and, when tracking, transaction) events on ``engine``, and make
    its connections :class:`TrackedConnection`."""
    dialect = engine.dialect.name
    # Engine._connection_cls is what Engine.connect() instantiates (SQLAlchemy 1.4 to 2.1);
    # tests/pool/test_reset.py fails if a release stops honouring it.
    engine._connection_cls = TrackedConnection

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

    @event.listens_for(engine, "after_cursor_execute")
    def _after_cursor_execute(conn: Connection, cursor: Any, statement: str, parameters: Any,
                              context: Any, executemany: bool) -> None:
        watch = _WATCHES.get(id(conn))
        if watch is None:
            return
        watch.executing.discard(id(context))
        if not watch.track_tables:
            return
        compiled = context.compiled if context is not None else None
        access = _access_of_compiled(compiled) if compiled is not None else None
        if access is None:
            access = _cached_access_of_sql(statement, dialect)
        if access is not NO_TABLES:
            watch.record(access, conn)

    @event.listens_for(engine, "handle_error")
    def _handle_error(exception_context: Any) -> None:
        connection = exception_context.connection
        watch = _WATCHES.get(id(connection)) if connection is not None else None
        if watch is not None:
            watch.executing.discard(id(exception_context.execution_context))

    if track_tables:
        _install_transaction_events(engine)


def _install_transaction_events(engine: Engine) -> None:
    @event.listens_for(engine, "commit")
    def _before_commit(conn: Connection) -> None:
        _committing.watch = _WATCHES.get(id(conn))

    @event.listens_for(engine, "rollback")
    def _rollback(conn: Connection) -> None:
        watch = _WATCHES.get(id(conn))
        if watch is not None:
            watch.rolled_back()

    for name, method in (("savepoint", "savepoint"), ("release_savepoint", "savepoint_released"),
                         ("rollback_savepoint", "savepoint_rolled_back")):
        event.listen(engine, name, _forward(method))

    # SQLAlchemy's "commit" event fires BEFORE the COMMIT; invalidating then would let a
    # concurrent request re-cache the old rows under the new generation. The dialect's
    # do_commit is the COMMIT itself, so the invalidation runs right after it returns.
    original_do_commit = engine.dialect.do_commit

    def do_commit_then_invalidate(dbapi_connection: Any) -> None:
        watch = getattr(_committing, "watch", None)
        _committing.watch = None
        original_do_commit(dbapi_connection)
        if watch is not None:
            watch.committed()

    engine.dialect.do_commit = do_commit_then_invalidate  # type: ignore[method-assign]


def _forward(method: str) -> Callable[..., None]:
    def handler(conn: Connection, *args: Any) -> None:
        watch = _WATCHES.get(id(conn))
        if watch is not None:
            getattr(watch, method)()
    return handler


def _is_autocommit(conn: Connection) -> bool:
    # Connection._is_autocommit_isolation is how SQLAlchemy itself decides; no public twin.
    check = getattr(conn, "_is_autocommit_isolation", None)
    return bool(check()) if check is not None else False
