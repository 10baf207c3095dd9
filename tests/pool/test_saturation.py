"""Saturation: a request that cannot get a connection within pool_timeout is answered 503 with
Retry-After and a short body — never a hang, never a 500 with a traceback — counted, and the
pool serves again once connections come back. Also the metrics the pool keeps."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from sqlalchemy import text

from scalekit.errors import PoolTimeoutError
from scalekit.pool import db

from .apps import make_asgi_app, make_wsgi_app, wrap
from .helpers import ASGICall, WSGICall, assert_connection_gauges, sample, wsgi_get

TIMEOUT_SECONDS = 0.5
TINY_POOL = {"pool_size": 1, "max_overflow": 0, "pool_timeout_seconds": TIMEOUT_SECONDS,
             "retry_after_seconds": 2}
DEFAULT = {"database": "default"}


def assert_shed(status: int, retry_after: str | bytes | None, body: bytes) -> None:
    assert status == 503
    assert retry_after in ("2", b"2")
    assert b"Traceback" not in body and len(body) < 200


def test_wsgi_full_pool_answers_503_after_pool_timeout_then_recovers(
        sqlite_table: tuple[str, str]) -> None:
    url, table = sqlite_table
    app = wrap(make_wsgi_app(table), url, **TINY_POOL)
    holder = WSGICall(app, "/stream").read(1)  # holds the only connection while streaming
    timeouts = sample("scalekit_pool_timeouts_total", DEFAULT)

    started = time.monotonic()
    shed = wsgi_get(app, "/ok")
    waited = time.monotonic() - started

    assert_shed(shed.code, shed.header("retry-after"), b"".join(shed.chunks))
    assert TIMEOUT_SECONDS * 0.9 <= waited < TIMEOUT_SECONDS + 10  # waited its turn, never hung
    assert sample("scalekit_pool_timeouts_total", DEFAULT) == timeouts + 1
    holder.read().close()
    assert wsgi_get(app, "/ok").code == 200  # recovered


def test_max_waiting_sheds_at_once(sqlite_table: tuple[str, str]) -> None:
    url, table = sqlite_table
    app = wrap(make_wsgi_app(table), url, **{**TINY_POOL, "pool_timeout_seconds": 30, "max_waiting": 0})
    holder = WSGICall(app, "/stream").read(1)
    shed_before = sample("scalekit_pool_shed_total", DEFAULT)
    started = time.monotonic()
    shed = wsgi_get(app, "/ok")
    assert time.monotonic() - started < 10  # nowhere near the 30 s pool timeout
    assert_shed(shed.code, shed.header("retry-after"), b"".join(shed.chunks))
    assert sample("scalekit_pool_shed_total", DEFAULT) == shed_before + 1
    holder.read().close()
    assert wsgi_get(app, "/ok").code == 200


def test_max_waiting_counts_the_queue(sqlite_table: tuple[str, str]) -> None:
    """With max_waiting=1 the first waiter queues (and gets the connection), the second is shed."""
    url, table = sqlite_table
    app = wrap(make_wsgi_app(table), url, **{**TINY_POOL, "pool_timeout_seconds": 30, "max_waiting": 1})
    holder = WSGICall(app, "/stream").read(1)
    results: list[int] = []
    waiter = threading.Thread(target=lambda: results.append(wsgi_get(app, "/ok").code))
    waiter.start()
    database = app.runtime.services["pool"].databases["default"]
    deadline = time.monotonic() + 20
    while database.pending == 0 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert sample("scalekit_pool_pending_requests", DEFAULT) == 1
    assert wsgi_get(app, "/ok").code == 503  # the queue is full
    holder.read().close()
    waiter.join(20)
    assert results == [200]
    assert sample("scalekit_pool_pending_requests", DEFAULT) == 0


def test_framework_500_page_becomes_the_503(sqlite_table: tuple[str, str]) -> None:
    flask = pytest.importorskip("flask")
    url, table = sqlite_table
    flask_app = flask.Flask("shop")

    @flask_app.get("/ok")
    def ok() -> str:
        db().connection().execute(text(f"SELECT * FROM {table}")).all()
        return "ok"

    @flask_app.get("/hold")
    def hold() -> Any:
        connection = db().connection()

        def body() -> Any:
            yield "held"
            connection.execute(text("SELECT 1"))
        return flask_app.response_class(body())

    app = wrap(flask_app, url, **TINY_POOL)
    holder = WSGICall(app, "/hold").read(1)
    shed = wsgi_get(app, "/ok")  # Flask turned PoolTimeoutError into its 500 page
    assert_shed(shed.code, shed.header("retry-after"), b"".join(shed.chunks))
    holder.read().close()
    assert wsgi_get(app, "/ok").chunks == [b"ok"]


def test_app_that_handles_the_timeout_keeps_its_answer(sqlite_table: tuple[str, str]) -> None:
    url, _table = sqlite_table

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        try:
            db().connection()
        except PoolTimeoutError:
            start_response("200 OK", [("content-type", "text/plain")])
            return [b"degraded page from cache"]
        start_response("200 OK", [])

        def body() -> Any:
            yield b"held"
        return body()

    wrapped = wrap(app, url, **TINY_POOL)
    holder = WSGICall(wrapped, "/").read(1)
    assert wsgi_get(wrapped, "/").chunks == [b"degraded page from cache"]
    holder.read().close()


# --------------------------------------------------------------------------- ASGI


def test_asgi_full_pool_waits_off_the_loop_then_503(sqlite_table: tuple[str, str]) -> None:
    url, table = sqlite_table
    app = wrap(make_asgi_app(table), url, **TINY_POOL)

    async def scenario() -> tuple[ASGICall, float, int]:
        release = asyncio.Event()

        async def holding_app() -> None:
            call = ASGICall("/stream")

            async def slow_send(message: dict[str, Any]) -> None:
                await call.send(message)
                if message["type"] == "http.response.body":
                    await release.wait()  # a slow client holds the connection
            await app(call.scope, call.receive, slow_send)

        holder = asyncio.create_task(holding_app())
        await asyncio.sleep(0.05)
        ticks = 0

        async def ticker() -> None:  # proves the event loop keeps running while we wait
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        ticking = asyncio.create_task(ticker())
        started = time.monotonic()
        shed = await ASGICall("/ok").run(app)
        waited = time.monotonic() - started
        ticking.cancel()
        release.set()
        await holder
        return shed, waited, ticks

    shed, waited, ticks = asyncio.run(scenario())
    assert shed.status == 503
    assert_shed(shed.status, shed.header(b"retry-after"), b"".join(shed.chunks))
    assert waited >= TIMEOUT_SECONDS * 0.9
    assert ticks > 5  # the wait happened in a worker thread, not on the loop
    assert asyncio.run(ASGICall("/ok").run(app)).status == 200


def test_asgi_sync_connection_on_the_loop_sheds_instead_of_blocking(
        sqlite_table: tuple[str, str]) -> None:
    url, _ = sqlite_table

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["path"] == "/hold":
            (await db().aconnection()).exec_driver_sql("select 1")
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await asyncio.sleep(0.2)
            await send({"type": "http.response.body", "body": b"held"})
            return
        db().connection()  # sync call on the loop thread, pool full
        raise AssertionError("unreachable")

    wrapped = wrap(app, url, **{**TINY_POOL, "pool_timeout_seconds": 30})

    async def scenario() -> ASGICall:
        holder = asyncio.create_task(ASGICall("/hold").run(wrapped))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        shed = await ASGICall("/sync").run(wrapped)
        assert time.monotonic() - started < 10  # not the 30 s pool timeout
        await holder
        return shed

    shed = asyncio.run(scenario())
    assert_shed(shed.status, shed.header(b"retry-after"), b"".join(shed.chunks))


def test_starlette_500_becomes_503_and_the_error_is_not_reraised(
        sqlite_table: tuple[str, str]) -> None:
    starlette = pytest.importorskip("starlette.applications")
    from starlette.responses import PlainTextResponse, StreamingResponse
    from starlette.routing import Route

    url, table = sqlite_table
    release = asyncio.Event()

    async def ok(request: Any) -> Any:
        (await db().aconnection()).execute(text(f"SELECT * FROM {table}")).all()
        return PlainTextResponse("ok")

    def sync_ok(request: Any) -> Any:  # runs in Starlette's threadpool: blocking wait is fine
        db().connection().execute(text(f"SELECT * FROM {table}")).all()
        return PlainTextResponse("ok")

    async def hold(request: Any) -> Any:
        await db().aconnection()

        async def body() -> Any:
            yield b"held"
            await release.wait()
        return StreamingResponse(body())

    app = wrap(starlette.Starlette(routes=[Route("/ok", ok), Route("/sync", sync_ok),
                                           Route("/hold", hold)]), url, **TINY_POOL)

    async def scenario() -> list[ASGICall]:
        holder = asyncio.create_task(ASGICall("/hold").run(app))
        await asyncio.sleep(0.05)
        shed = [await ASGICall("/ok").run(app), await ASGICall("/sync").run(app)]
        release.set()
        await holder
        return shed + [await ASGICall("/ok").run(app), await ASGICall("/sync").run(app)]

    calls = asyncio.run(scenario())  # no exception escaped the wrapped app
    for call in calls[:2]:
        assert_shed(call.status, call.header(b"retry-after"), b"".join(call.chunks))
    assert [call.status for call in calls[2:]] == [200, 200]


# --------------------------------------------------------------------------- metrics


def test_pool_gauges_and_histograms(sqlite_table: tuple[str, str]) -> None:
    url, table = sqlite_table
    app = wrap(make_wsgi_app(table), url, pool_size=2, max_overflow=1)
    waits = sample("scalekit_pool_wait_seconds_count", DEFAULT)
    uses = sample("scalekit_pool_use_seconds_count", DEFAULT)
    service = app.runtime.services["pool"]
    first = WSGICall(app, "/stream").read(1)
    second = WSGICall(app, "/stream").read(1)
    assert_connection_gauges(service.update_gauges, used=2)  # what the pool's worker does every tick
    assert sample("scalekit_pool_max_connections", DEFAULT) == 3
    first.read().close()
    assert_connection_gauges(service.update_gauges, used=1, idle=1)
    second.read().close()
    assert_connection_gauges(service.update_gauges, idle=2)
    assert sample("scalekit_pool_wait_seconds_count", DEFAULT) == waits + 2
    assert sample("scalekit_pool_use_seconds_count", DEFAULT) == uses + 2


def test_asgi_waiting_checkout_gets_the_connection_when_it_comes_back(
        sqlite_table: tuple[str, str]) -> None:
    url, table = sqlite_table
    app = wrap(make_asgi_app(table), url, **{**TINY_POOL, "pool_timeout_seconds": 20})

    async def scenario() -> list[int | None]:
        calls = [ASGICall("/stream"), ASGICall("/stream"), ASGICall("/ok")]
        results = await asyncio.gather(*(call.run(app) for call in calls))
        return [call.status for call in results]

    shed = sample("scalekit_pool_shed_total", DEFAULT)
    assert asyncio.run(scenario()) == [200, 200, 200]  # one connection, served in turn
    assert sample("scalekit_pool_shed_total", DEFAULT) == shed  # waiting is not shedding
