"""Cost of the pool layer, beside its baselines measured in the same run.

Targets (issue 5):
- checkout + return of a pooled connection per request is at least 50x cheaper than opening a
  new psycopg2 connection per request (the baseline: connect + close, nothing else). The pooled
  figure is a whole request's worth of pool work through the request handle: lazy checkout with
  pre-ping, the table-tracking hookup, return with rollback and the session reset
  (DISCARD ALL). Figures without pre-ping / reset are shown too, to say what each costs.
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
from scalekit.pool.engines import Database
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


def pooled_per_request(database: Database) -> Callable[[], None]:
    databases = {"default": database}

    def run() -> None:
        requests = RequestDatabases(databases, RequestContext("GET", "/"),
                                    invalidate=_ignore, track_tables=True)
        requests.default.connection()  # checkout (with pre-ping when on)
        requests.finish()  # rollback, reset statement, back to the pool
    return run


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    args = parser.parse_args()
    repeats = 3 if args.quick else 7
    print(f"scalekit pool benchmark ({repeats} repeats)\n")

    connect_us, connect_mean = timed_us(new_connection_per_request, 20 if args.quick else 50, repeats)
    variants = [
        ("pooled: pre-ping + DISCARD ALL (defaults)", DatabaseConfig(url=URL)),
        ("pooled: no pre-ping, DISCARD ALL", DatabaseConfig(url=URL, pre_ping=False)),
        ("pooled: no pre-ping, no reset", DatabaseConfig(url=URL, pre_ping=False, reset_statement="")),
    ]
    print("checkout + return per request (Postgres 127.0.0.1, psycopg2)     median      mean")
    print(f"  {'new psycopg2 connection per request (baseline)':48s} {connect_us:9.1f} {connect_mean:9.1f} us")
    default_ratio = 0.0
    for label, config in variants:
        database = Database("bench", config, state_dir=".scalekit")
        pooled_us, pooled_mean = timed_us(pooled_per_request(database), 300 if args.quick else 1000,
                                          repeats)
        ratio = connect_us / pooled_us
        default_ratio = default_ratio or ratio
        print(f"  {label:48s} {pooled_us:9.1f} {pooled_mean:9.1f} us   {ratio:6.1f}x cheaper")
        database.dispose()
    verdict = "OK" if default_ratio >= POOLED_TARGET_RATIO else "MISSED"
    print(f"  target: pooled (defaults) >= {POOLED_TARGET_RATIO:.0f}x cheaper than a new connection "
          f"(medians) -> {default_ratio:.1f}x {verdict}")
    print("  (the defaults pay one round trip per request for DISCARD ALL, which keeps SET, PREPARE,\n"
          "   temp tables and advisory locks of one request from reaching the next; the pool's own\n"
          "   checkout + return is the last row)\n")

    print("table tracking overhead per statement (in-memory SQLite, statement already seen)")
    worst = 0.0
    for name, base_us, tracked_us in tracking_overhead(2000 if args.quick else 5000, repeats):
        overhead = tracked_us - base_us
        worst = max(worst, overhead)
        print(f"  {name:32s} plain {base_us:7.1f} us   tracked {tracked_us:7.1f} us   "
              f"overhead {overhead:6.2f} us")
    verdict = "OK" if worst <= TRACKING_TARGET_US else "MISSED"
    print(f"  target: <= {TRACKING_TARGET_US:.0f} us per statement -> worst {worst:.2f} us {verdict}")


if __name__ == "__main__":
    main()
