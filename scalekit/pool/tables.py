"""Which tables a statement reads and writes: the classification behind table tracking.

Every statement executed through a request's SQLAlchemy Connection is classified once per
distinct statement and then looked up:

* SQLAlchemy Core / ORM statements by the table objects in their compiled form (the compiled
  object is reused by SQLAlchemy's statement cache, so the walk happens once per shape);
* raw SQL text (``text()``, ``exec_driver_sql``) by sqlglot, a real SQL parser (a regex cannot
  tell a table from a CTE, a string literal or a comment), behind an LRU cache of texts.

>>> access_of_sql("UPDATE products SET price = 1 WHERE id IN (SELECT id FROM promo)", "postgres")
TableAccess(read=frozenset({'promo'}), written=frozenset({'products'}), transaction=None)
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from typing import Any, Literal

import sqlglot
from sqlalchemy.sql import visitors
from sqlalchemy.sql.dml import UpdateBase
from sqlalchemy.sql.elements import TextClause
from sqlglot import exp

__all__ = [
    "NO_TABLES",
    "TableAccess",
    "access_of_compiled",
    "access_of_sql",
    "access_of_statement",
    "set_parse_cache_size",
    "table_tag",
]

log = logging.getLogger("scalekit.pool")

Transaction = Literal["commit", "rollback"] | None


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
def access_of_compiled(compiled: Any) -> TableAccess | None:
    """Tables of a compiled Core/ORM statement (None: it embeds SQL text, parse that).

    Keyed by the compiled object, which SQLAlchemy reuses for every execution of one statement
    shape: the traversal runs once per shape, not per execution.
    """
    return access_of_statement(compiled.statement)
