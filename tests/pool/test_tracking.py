"""Table tracking: reads tag the response, committed writes invalidate after the commit."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

import scalekit
from scalekit.pool import db
from scalekit.pool.tables import TableAccess, access_of_sql, access_of_statement

from .apps import wrap
from .helpers import ASGICall, pg_execute, pg_url, unique, wsgi_get


def access(read: frozenset[str] | set[str] = frozenset(), written: frozenset[str] | set[str] = frozenset(),
           transaction: Any = None) -> TableAccess:
    return TableAccess(frozenset(read), frozenset(written), transaction)


@pytest.mark.parametrize(("sql", "expected"), [
    pytest.param("SELECT * FROM products WHERE id = %(id)s", access({"products"}), id="psycopg2 params"),
    pytest.param("SELECT * FROM products WHERE id = ?", access({"products"}), id="qmark params"),
    pytest.param('SELECT * FROM Products p JOIN "Orders" o ON o.pid = p.id', access({"products", "Orders"}),
                 id="unquoted folds to lower case, quoted kept"),
    pytest.param("WITH recent AS (SELECT * FROM orders) SELECT * FROM recent", access({"orders"}),
                 id="a CTE is not a table"),
    pytest.param("SELECT 'FROM secret' AS s, x FROM t -- JOIN hidden", access({"t"}),
                 id="literals and comments are not tables"),
    pytest.param("UPDATE products SET price = 1 WHERE id IN (SELECT id FROM promo)",
                 access({"promo"}, {"products"}), id="update target written, subquery read"),
    pytest.param("INSERT INTO archive (a, b) SELECT a, b FROM live", access({"live"}, {"archive"}),
                 id="insert from select"),
    pytest.param("DELETE FROM public.products USING stale WHERE stale.id = products.id",
                 access({"stale"}, {"products"}), id="delete using, schema-qualified"),
    pytest.param("WITH gone AS (DELETE FROM carts RETURNING id) SELECT count(*) FROM gone",
                 access(set(), {"carts"}), id="data-modifying CTE"),
    pytest.param("TRUNCATE products, orders", access(set(), {"products", "orders"}), id="truncate"),
    pytest.param("DROP TABLE IF EXISTS products", access(set(), {"products"}), id="ddl"),
    pytest.param("select * from generate_series(1, 3)", access(), id="table function"),
    pytest.param("SET statement_timeout = 5", access(), id="no tables"),
    pytest.param("COMMIT", access(transaction="commit"), id="raw commit"),
    pytest.param("ROLLBACK", access(transaction="rollback"), id="raw rollback"),
    pytest.param("this is not sql at all ((", access(), id="unparsable: no tables, no error"),
])
def test_raw_sql_tables(sql: str, expected: TableAccess) -> None:
    assert access_of_sql(sql, "postgresql") == expected


metadata = sa.MetaData()
products = sa.Table("products", metadata, sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("name", sa.String), sa.Column("price", sa.Integer))
promos = sa.Table("promos", metadata, sa.Column("product_id", sa.Integer))


class Base(DeclarativeBase):
    pass


class Order(Base):
    __tablename__ = "orders"
    id: Mapped[int] = mapped_column(primary_key=True)
    product_id: Mapped[int]


@pytest.mark.parametrize(("statement", "expected"), [
    pytest.param(sa.select(products).where(products.c.id.in_(sa.select(promos.c.product_id))),
                 access({"products", "promos"}), id="core select with subquery"),
    pytest.param(sa.update(products).values(price=1).where(products.c.id == 1),
                 access(set(), {"products"}), id="core update"),
    pytest.param(sa.insert(products).from_select(["id"], sa.select(promos.c.product_id)),
                 access({"promos"}, {"products"}), id="core insert from select"),
    pytest.param(sa.select(Order).join(products, products.c.id == Order.product_id),
                 access({"orders", "products"}), id="ORM select with join"),
    pytest.param(sa.delete(Order).where(Order.id == 3), access(set(), {"orders"}), id="ORM delete"),
    pytest.param(sa.text("select * from products"), None, id="text: parsed by sqlglot instead"),
])
def test_core_and_orm_statements(statement: Any, expected: TableAccess | None) -> None:
    assert access_of_statement(statement) == expected


# --------------------------------------------------------------------------- through the layer


class Recorder:
    """Stands in for the cache's invalidator: records (tags, source, rows seen at that time)."""

    def __init__(self, probe: Any = None) -> None:
        self.calls: list[tuple[tuple[str, ...], str, Any]] = []
        self.probe = probe

    def __call__(self, tags: tuple[str, ...], source: str) -> None:
        self.calls.append((tags, source, self.probe() if self.probe else None))


def make_app(table: str, other: str) -> Any:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        connection = db().connection()
        path = environ["PATH_INFO"]
        if path == "/orm":
            # A Session bound to the request's connection before it began a transaction owns
            # the transaction: Session.commit() commits it. (One that joins an open transaction
            # leaves the commit to connection.commit().)
            session = Session(bind=connection)
            session.execute(sa.update(sa.table(other, sa.column("price"))).values(price=7))
            session.commit()
        connection.execute(sa.text(f"SELECT * FROM {table}")).all()
        if path == "/commit":
            connection.execute(sa.text(f"UPDATE {table} SET price = price + 10 WHERE id = 1"))
            connection.commit()
        elif path == "/rollback":
            connection.execute(sa.text(f"UPDATE {table} SET price = price + 10 WHERE id = 1"))
            connection.rollback()
        elif path == "/savepoints":
            with connection.begin_nested():  # released: its write counts
                connection.execute(sa.text(f"UPDATE {table} SET price = price + 1 WHERE id = 1"))
            nested = connection.begin_nested()  # rolled back: its write does not
            connection.execute(sa.text(f"UPDATE {other} SET price = 0"))
            nested.rollback()
            connection.commit()
        elif path == "/raw_commit":
            connection.exec_driver_sql(f"UPDATE {other} SET price = 5")
            connection.exec_driver_sql("COMMIT")
        elif path == "/left_open":
            connection.execute(sa.text(f"UPDATE {table} SET price = 0"))  # never committed
        start_response("200 OK", [("content-type", "text/plain")])
        ctx = scalekit.current()
        assert ctx is not None
        return [",".join(sorted(ctx.tags)).encode(), b"|", ",".join(sorted(ctx.tables_written)).encode()]
    return app


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def two_tables(request: pytest.FixtureRequest, fast_dir: object) -> Any:
    """(url, table, other table, read-committed probe of table's price) on each database."""
    table, other = unique("products"), unique("promos")
    if request.param == "sqlite":
        url = f"sqlite:///{fast_dir}/t.db"
        engine = sa.create_engine(url)
    else:
        request.getfixturevalue("postgres_available")
        url = pg_url(unique("sk_track"))
        engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg2://"))
    with engine.begin() as connection:
        for name in (table, other):
            connection.exec_driver_sql(f"CREATE TABLE {name} (id integer primary key, price int)")
            connection.exec_driver_sql(f"INSERT INTO {name} VALUES (1, 1)")

    def probe() -> int:
        with engine.connect() as connection:  # a different connection: sees committed data only
            return int(connection.exec_driver_sql(f"SELECT price FROM {table} WHERE id = 1").scalar_one())

    yield url, table, other, probe
    with engine.begin() as connection:
        for name in (table, other):
            connection.exec_driver_sql(f"DROP TABLE {name}")
    engine.dispose()


def test_reads_tag_the_response(two_tables: Any) -> None:
    url, table, other, _ = two_tables
    app = wrap(make_app(table, other), url)
    body = b"".join(wsgi_get(app, "/read").chunks)
    assert body == f"table:{table}|".encode()


def test_committed_write_invalidates_after_the_commit(two_tables: Any) -> None:
    url, table, other, probe = two_tables
    app = wrap(make_app(table, other), url)
    recorder = Recorder(probe)
    app.runtime.add_invalidator(recorder)
    body = b"".join(wsgi_get(app, "/commit").chunks)
    assert body == f"table:{table}|{table}".encode()
    # Called once, with the table's tag, and the new price was already visible to others.
    assert recorder.calls == [((f"table:{table}",), "table", 11)]


def test_rolled_back_or_uncommitted_writes_never_invalidate(two_tables: Any) -> None:
    url, table, other, probe = two_tables
    app = wrap(make_app(table, other), url)
    recorder = Recorder()
    app.runtime.add_invalidator(recorder)
    wsgi_get(app, "/rollback")
    wsgi_get(app, "/left_open")
    assert recorder.calls == []
    assert probe() == 1


def test_savepoints_raw_commit_and_orm_sessions(two_tables: Any) -> None:
    url, table, other, _probe = two_tables
    app = wrap(make_app(table, other), url)
    recorder = Recorder()
    app.runtime.add_invalidator(recorder)
    wsgi_get(app, "/savepoints")
    wsgi_get(app, "/raw_commit")
    wsgi_get(app, "/orm")
    assert [call[:2] for call in recorder.calls] == [
        ((f"table:{table}",), "table"),  # the released savepoint's write; not the rolled-back one
        ((f"table:{other}",), "table"),  # COMMIT sent as raw SQL
        ((f"table:{other}",), "table"),  # ORM Session.commit()
    ]


def test_tracking_can_be_switched_off(two_tables: Any) -> None:
    url, table, other, _probe = two_tables
    app = scalekit.wrap(make_app(table, other), cache=False, cdn=False,
                        pool={"track_tables": False, "databases": {"default": {"url": url}}})
    recorder = Recorder()
    app.runtime.add_invalidator(recorder)
    assert b"".join(wsgi_get(app, "/commit").chunks) == b"|"
    assert recorder.calls == []


def test_asgi_reads_and_commits_are_tracked_too(two_tables: Any) -> None:
    url, table, other, _probe = two_tables
    tags: list[set[str]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        connection = await db().aconnection()
        connection.execute(sa.text(f"SELECT * FROM {other}")).all()
        connection.execute(sa.text(f"UPDATE {table} SET price = 2"))
        connection.commit()
        ctx = scalekit.current()
        assert ctx is not None
        tags.append(set(ctx.tags))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    wrapped = wrap(app, url)
    recorder = Recorder()
    wrapped.runtime.add_invalidator(recorder)
    asyncio.run(ASGICall("/").run(wrapped))
    assert tags == [{f"table:{other}"}]
    assert [call[:2] for call in recorder.calls] == [((f"table:{table}",), "table")]


@pytest.mark.postgres
def test_autocommit_writes_invalidate_per_statement(pg_table: str) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        connection = db().connection().execution_options(isolation_level="AUTOCOMMIT")
        connection.exec_driver_sql(f"UPDATE {pg_table} SET price = 9 WHERE id = 3")
        start_response("200 OK", [])
        return [b"ok"]

    wrapped = wrap(app, pg_url(unique("sk_autocommit")))
    recorder = Recorder()
    wrapped.runtime.add_invalidator(recorder)
    wsgi_get(wrapped, "/")
    assert [call[:2] for call in recorder.calls] == [((f"table:{pg_table}",), "table")]
    assert pg_execute(f"SELECT price FROM {pg_table} WHERE id = 3") == [(9,)]


@pytest.mark.parametrize("protocol", ["wsgi", "asgi"])
def test_a_commit_is_invalidated_before_the_response_starts(two_tables: Any, protocol: str) -> None:
    # No event follows a successful COMMIT; the invalidation must still reach the cache before
    # the client can have the answer (and ask again).
    url, table, _other, probe = two_tables
    recorder = Recorder(probe)
    at_start: list[int] = []

    def write(connection: Any) -> None:
        connection.execute(sa.text(f"UPDATE {table} SET price = 5 WHERE id = 1"))
        connection.commit()

    def wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        write(db().connection())
        start_response("200 OK", [])
        at_start.append(len(recorder.calls))
        return [b"ok"]

    async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        write(await db().aconnection())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        at_start.append(len(recorder.calls))
        await send({"type": "http.response.body", "body": b"ok"})

    app = wrap(wsgi_app if protocol == "wsgi" else asgi_app, url)
    app.runtime.add_invalidator(recorder)
    if protocol == "wsgi":
        wsgi_get(app, "/")
    else:
        asyncio.run(ASGICall("/").run(app))
    assert at_start == [1]
    assert recorder.calls == [((f"table:{table}",), "table", 5)]  # once, after the COMMIT


@pytest.mark.postgres
def test_a_commit_that_fails_invalidates_nothing(postgres_available: None) -> None:
    table = unique("sk_deferred")
    pg_execute(f"CREATE TABLE {table} (id int, CONSTRAINT {table}_once UNIQUE (id) "
               "DEFERRABLE INITIALLY DEFERRED)")
    failures: list[str] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        connection = db().connection()
        connection.execute(sa.text(f"INSERT INTO {table} VALUES (1), (1)"))  # checked at COMMIT
        try:
            connection.commit()
        except sa.exc.IntegrityError:
            failures.append("commit refused")
            connection.rollback()
        connection.execute(sa.text("SELECT 1"))  # the request goes on: a new transaction
        start_response("200 OK", [])
        return [b"ok"]

    try:
        wrapped = wrap(app, pg_url(unique("sk_failed_commit")))
        recorder = Recorder()
        wrapped.runtime.add_invalidator(recorder)
        wsgi_get(wrapped, "/")
        assert failures == ["commit refused"] and recorder.calls == []
    finally:
        pg_execute(f"DROP TABLE {table}")
