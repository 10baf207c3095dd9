"""Cost of the pool layer, beside its baselines measured in the same run.

Targets:
- checkout + return of a pooled connection per request is at least 50x cheaper than opening a
  new psycopg2 connection per request (the baseline: connect + close, nothing else). The pooled
  figure is a whole request's worth of pool work through the request handle, for a request
  that USED its connection (so its session must be reset): the request's handles, lazy
  checkout with pre-ping, the table-tracking hookup, and the return, whose rollback + session
  reset (DISCARD ALL) runs on the database's resetter thread by default. The checkout and the
  return are timed on their own around the request's ``SELECT 1`` (the statement's round trips
  are the app's work, not the pool's); the resetter's time per connection is printed beside.
  Rows for an inline reset, no reset, connections that go through SQLAlchemy's QueuePool on
  every request instead of being kept (``reuse_connections = false``: what scalekit.pool.reuse
  buys, with its ratio), and a checkout that runs nothing (no reset needed) say what each part
  costs.
- table tracking adds at most 20 us per statement (same statement on an in-memory SQLite
  engine with the tracking events and a request attached, vs a plain engine).

Wall-clock times of single operations, median (and mean) over several repeats; the database
round trips are part of what is measured.
Run: ``python bench/pool.py`` (``--quick`` for fewer repeats). Needs Postgres on 127.0.0.1:5432.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg2
import sqlalchemy as sa

from scalekit.context import RequestContext
from scalekit.pool.config import DatabaseConfig
from scalekit.pool.database import Database
from scalekit.pool.handle import RequestDatabases
from scalekit.pool.tracking import ConnectionWatch, attach, install_events

POOLED_TARGET_RATIO = 50.0
TRACKING_TARGET_US = 20.0
DSN = "host=127.0.0.1 port=5432 dbname=test user=postgres application_name=sk_bench_connect"
URL = "postgresql://postgres@127.0.0.1:5432/test?application_name=sk_bench_pool"


def timed_us(operation: Callable[[], None], count: int, repeats: int) -> tuple[float, float]:
    """(median, mean) time of one ``operation()`` in microseconds, over ``repeats`` x ``count``.

    Every operation is timed on its own: on a machine shared with other jobs, a database round
    trip now and then waits milliseconds for a CPU, and the median of single operations is not
    moved by those waits (the mean, shown beside it, is).
    """
    for _ in range(max(1, count // 10)):
        operation()  # warm up: connections opened, caches filled
    samples = []
    clock = time.perf_counter
    for _ in range(repeats):
        for _ in range(count):
            started = clock()
            operation()
            samples.append(clock() - started)
    return statistics.median(samples) * 1e6, statistics.fmean(samples) * 1e6


# --------------------------------------------------------------------------- checkout vs connect


def new_connection_per_request() -> None:
    psycopg2.connect(DSN).close()


def pooled_per_request(database: Database, statement: str | None = None) -> Callable[[], None]:
    """One request's pool work; with ``statement``, the request runs it (and needs a reset)."""
    databases = {"default": database}

    def run() -> None:
        ctx = RequestContext("GET", "/")  # held for the request, as the environ holds it: handles see it weakly
        requests = RequestDatabases(databases, ctx, invalidate=_ignore, track_tables=True)
        connection = requests.default.connection()  # checkout (with pre-ping when on)
        if statement is not None:
            connection.exec_driver_sql(statement).all()
        requests.finish()  # back to the pool; a used connection is reset first
    return run


def used_request(database: Database, statement: str) -> tuple[Callable[[], None], list[float]]:
    """(run, seconds): one request that runs ``statement``; ``seconds`` gets the time of its
    pool work alone (handles + checkout, then the return), the statement left out."""
    databases = {"default": database}
    seconds: list[float] = []
    clock = time.perf_counter

    def run() -> None:
        started = clock()
        ctx = RequestContext("GET", "/")
        requests = RequestDatabases(databases, ctx, invalidate=_ignore, track_tables=True)
        connection = requests.default.connection()
        checked_out = clock()
        connection.exec_driver_sql(statement).all()
        returning = clock()
        requests.finish()
        seconds.append(checked_out - started + clock() - returning)
    return run, seconds


def time_resets(database: Database) -> list[float]:
    """Wall time of each background reset (reset + check-in), in seconds, once filled."""
    resetter = database._resetter  # bench only: the work moved off the request's path
    finish, spent = resetter._finish, []

    def timed_finish(connection: Any) -> None:
        started = time.perf_counter()
        finish(connection)
        spent.append(time.perf_counter() - started)
    resetter._finish = timed_finish  # type: ignore[method-assign]
    return spent


def _ignore(tags: tuple[str, ...]) -> None:
    pass


# --------------------------------------------------------------------------- tracking overhead


def statements(engine: sa.Engine, statement: Any, tracked: bool) -> Callable[[], None]:
    connection = engine.connect()
    if tracked:
        attach(connection, ConnectionWatch(RequestContext("GET", "/"), _ignore, track_tables=True))

    def run() -> None:
        connection.execute(statement).fetchall()
    return run


def tracking_overhead(count: int, repeats: int) -> list[tuple[str, float, float]]:
    plain = sa.create_engine("sqlite://")
    tracked = sa.create_engine("sqlite://")
    install_events(tracked, track_tables=True)
    metadata = sa.MetaData()
    products = sa.Table("products", metadata, sa.Column("id", sa.Integer, primary_key=True),
                        sa.Column("price", sa.Integer))
    promos = sa.Table("promos", metadata, sa.Column("product_id", sa.Integer))
    for engine in (plain, tracked):
        metadata.create_all(engine)
        with engine.begin() as connection:
            connection.execute(products.insert(), [{"id": i, "price": i} for i in range(10)])
    cases = {
        "raw SQL text (sqlglot, LRU)": sa.text(
            "SELECT p.id, p.price FROM products p JOIN promos x ON x.product_id = p.id WHERE p.id > :n"
        ).bindparams(n=3),
        "Core select (compiled cache)": sa.select(products).where(
            products.c.id.in_(sa.select(promos.c.product_id))),
    }
    rows = []
    for name, statement in cases.items():
        base = timed_us(statements(plain, statement, False), count, repeats)[0]
        with_tracking = timed_us(statements(tracked, statement, True), count, repeats)[0]
        rows.append((name, base, with_tracking))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    args = parser.parse_args()
    repeats = 3 if args.quick else 7
    print(f"scalekit pool benchmark ({repeats} repeats)\n")

    count = 300 if args.quick else 1000
    connect_us, connect_mean = timed_us(new_connection_per_request, 20 if args.quick else 50, repeats)
    print("checkout + return per request (Postgres 127.0.0.1, psycopg2)          median      mean")
    print(f"  {'new psycopg2 connection per request (baseline)':54s} {connect_us:9.1f} {connect_mean:9.1f} us")

    # Requests that used their connection: the checkout and the return, timed around SELECT 1.
    used = [
        ("used, pre-ping + background reset (defaults)", DatabaseConfig(url=URL)),
        ("used, pre-ping + inline reset", DatabaseConfig(url=URL, reset_in_background=False)),
        ("used, pre-ping, rollback only (background)", DatabaseConfig(url=URL, reset_statement="")),
        ("used, defaults, no reuse: QueuePool every time", DatabaseConfig(url=URL, reuse_connections=False)),
    ]
    default_ratio = 0.0
    for label, config in used:
        database = Database("bench", config, state_dir=".scalekit")
        resets = time_resets(database)
        run, parts = used_request(database, "SELECT 1")
        for _ in range(max(1, count // 10)):
            run()  # warm up: connections opened, statement compiled
        parts.clear()
        for _ in range(repeats * count):
            run()
        database.wait_idle()
        pool_us = statistics.median(parts) * 1e6
        ratio = connect_us / pool_us
        default_ratio = default_ratio or ratio
        print(f"  {label:54s} {pool_us:9.1f} {statistics.fmean(parts) * 1e6:9.1f} us   "
              f"{ratio:6.1f}x cheaper")
        if resets:
            print(f"    + off the request's path, on the resetter thread: reset + check-in "
                  f"{statistics.median(resets) * 1e6:.1f} us per connection")
        database.dispose()

    # Checkouts that run nothing: nothing to roll back or reset, nothing sent.
    idle = [
        ("nothing run, pre-ping (defaults)", DatabaseConfig(url=URL)),
        ("nothing run, no pre-ping", DatabaseConfig(url=URL, pre_ping=False)),
        ("nothing run, no pre-ping, no reset", DatabaseConfig(url=URL, pre_ping=False, reset_statement="")),
    ]
    for label, config in idle:
        database = Database("bench", config, state_dir=".scalekit")
        pooled_us, pooled_mean = timed_us(pooled_per_request(database), count, repeats)
        print(f"  {label:54s} {pooled_us:9.1f} {pooled_mean:9.1f} us   "
              f"{connect_us / pooled_us:6.1f}x cheaper")
        database.dispose()
    missed = []
    verdict = "OK" if default_ratio >= POOLED_TARGET_RATIO else "MISSED"
    if verdict == "MISSED":
        missed.append("pooled checkout")
    print(f"  target: pooled, used (defaults) >= {POOLED_TARGET_RATIO:.0f}x cheaper than a new "
          f"connection (medians) -> {default_ratio:.1f}x {verdict}")
    print("  (a used connection is rolled back and reset (DISCARD ALL) before any request gets it\n"
          "   again, so SET, PREPARE, temp tables, advisory locks and LISTEN never leak; by default\n"
          "   that happens on the resetter thread, not in the request)\n")

    print("table tracking overhead per statement (in-memory SQLite, statement already seen)")
    worst = 0.0
    for name, base_us, tracked_us in tracking_overhead(2000 if args.quick else 5000, repeats):
        overhead = tracked_us - base_us
        worst = max(worst, overhead)
        print(f"  {name:32s} plain {base_us:7.1f} us   tracked {tracked_us:7.1f} us   "
              f"overhead {overhead:6.2f} us")
    verdict = "OK" if worst <= TRACKING_TARGET_US else "MISSED"
    if verdict == "MISSED":
        missed.append("table tracking")
    print(f"  target: <= {TRACKING_TARGET_US:.0f} us per statement -> worst {worst:.2f} us {verdict}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
