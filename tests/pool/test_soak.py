"""Every pooled connection is back when the response ends, under load: after 10,000 requests
mixing every way a response can end, under WSGI (threads) and ASGI (asyncio tasks), on SQLite
and Postgres, no connection is checked out and no transaction is left open."""

from __future__ import annotations

import asyncio
import gc
import random
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import sqlalchemy as sa

from .apps import POSTGRES_MODES, SQLITE_MODES, make_asgi_app, make_wsgi_app, wrap
from .helpers import ASGICall, WSGICall, pg_sessions, pg_url, unique

REQUESTS = 10_000
THREADS = 8
TASKS = 32
POOL = {"pool_size": 4, "max_overflow": 2, "pool_timeout_seconds": 20}

WSGI_ENDINGS = ("read_all", "read_all", "disconnect", "abandon")
ASGI_ENDINGS = ("read_all", "read_all", "disconnect", "cancel")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, fast_dir: object) -> Any:
    """(url, table, modes, application_name or None)."""
    table = unique("sk_soak")
    if request.param == "sqlite":
        url = f"sqlite:///{fast_dir}/soak.db"
        application_name = None
    else:
        request.getfixturevalue("postgres_available")
        application_name = unique("sk_soak_app")
        url = pg_url(application_name)
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg2://"))
    with engine.begin() as connection:
        connection.exec_driver_sql(f"CREATE TABLE {table} (id integer primary key, name text, price int)")
        connection.exec_driver_sql(f"INSERT INTO {table} VALUES (1, 'a', 1), (2, 'b', 2), (3, 'c', 3)")
    modes = POSTGRES_MODES if request.param == "postgres" else SQLITE_MODES
    yield url, table, modes, application_name
    with engine.begin() as connection:
        connection.exec_driver_sql(f"DROP TABLE {table}")
    engine.dispose()


def assert_all_returned(app: Any, application_name: str | None) -> None:
    service = app.runtime.services["pool"]
    deadline = time.monotonic() + 20  # abandoned bodies are given back by the worker thread
    while service.checked_out() and time.monotonic() < deadline:
        gc.collect()
        time.sleep(0.01)
    assert service.wait_idle()  # the background resets have run
    assert service.checked_out() == 0
    for database in service.databases.values():
        assert database.pending == 0 and not database.holders
    if application_name is not None:
        sessions = pg_sessions(application_name)
        assert sessions.get("idle in transaction", 0) == 0, sessions
        assert sessions.get("idle in transaction (aborted)", 0) == 0, sessions
        assert sessions.get("active", 0) == 0, sessions
        assert 0 < sum(sessions.values()) <= POOL["pool_size"] + POOL["max_overflow"]
    service.close()


def wsgi_request(app: Any, mode: str, ending: str) -> str:
    try:
        call = WSGICall(app, f"/{mode}")
    except RuntimeError:
        return "raised"
    if call.code != 200:
        call.close()
        return str(call.code)
    if ending == "abandon":
        call.read(1)
        del call  # dropped without close(): a misbehaving server
        return "abandoned"
    try:
        call.read(1 if ending == "disconnect" else None)
    except RuntimeError:
        call.close()
        return "raised_mid_stream"
    call.close()
    return ending


@pytest.mark.slow
def test_wsgi_threads_10000_requests(database: Any) -> None:
    url, table, modes, application_name = database
    app = wrap(make_wsgi_app(table), url, **POOL)

    def worker(seed: int) -> Counter[str]:
        rng = random.Random(seed)
        outcomes: Counter[str] = Counter()
        for _ in range(REQUESTS // THREADS):
            outcomes[wsgi_request(app, rng.choice(modes), rng.choice(WSGI_ENDINGS))] += 1
        return outcomes

    with ThreadPoolExecutor(THREADS) as executor:
        outcomes = sum(executor.map(worker, range(THREADS)), Counter())
    assert sum(outcomes.values()) == REQUESTS
    assert {"raised", "abandoned", "disconnect", "read_all", "raised_mid_stream"} <= set(outcomes)
    assert "503" not in outcomes, outcomes  # the pool was big enough: nobody waited 20 s
    assert_all_returned(app, application_name)


async def asgi_request(app: Any, mode: str, ending: str) -> str:
    call = ASGICall(f"/{mode}", disconnect_after=1 if ending == "disconnect" else None)
    task = asyncio.create_task(call.run(app))
    if ending == "cancel":
        while not call.chunks and not task.done():
            await asyncio.sleep(0)
        task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        return "cancelled"
    except OSError:
        return "disconnected"
    except RuntimeError:
        return "raised"
    return "disconnected" if call.disconnected.is_set() else str(call.status)


@pytest.mark.slow
def test_asgi_tasks_10000_requests(database: Any) -> None:
    url, table, modes, application_name = database
    app = wrap(make_asgi_app(table), url, **POOL)
    rng = random.Random(5)
    plan = [(rng.choice(modes), rng.choice(ASGI_ENDINGS)) for _ in range(REQUESTS)]

    async def main() -> Counter[str]:
        outcomes: Counter[str] = Counter()
        gate = asyncio.Semaphore(TASKS)

        async def one(mode: str, ending: str) -> None:
            async with gate:
                outcomes[await asgi_request(app, mode, ending)] += 1

        await asyncio.gather(*(one(mode, ending) for mode, ending in plan))
        return outcomes

    outcomes = asyncio.run(main())
    assert sum(outcomes.values()) == REQUESTS
    assert {"200", "raised", "cancelled", "disconnected"} <= set(outcomes)
    assert "503" not in outcomes, outcomes
    assert_all_returned(app, application_name)
