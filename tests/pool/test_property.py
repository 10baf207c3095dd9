"""Every pooled connection is back when the response ends, as a property: whatever sequence
of request outcomes happens — overlapping, streaming, raising, disconnecting, abandoned, shed —
no connection stays checked out."""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

import sqlalchemy.exc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .apps import SQLITE_MODES, make_asgi_app, make_wsgi_app, wrap
from .helpers import ASGICall, WSGICall

# max_waiting 0: in one thread a checkout that waited would wait for itself. The short timeout
# is also SQLite's busy timeout: a write behind another request's open transaction fails fast
# ("database is locked", an app error like any other here).
POOL = {"pool_size": 2, "max_overflow": 0, "max_waiting": 0, "pool_timeout_seconds": 0.2}
PROPERTY_SETTINGS = settings(max_examples=40, deadline=None,
                             suppress_health_check=[HealthCheck.function_scoped_fixture])

wsgi_requests = st.lists(st.tuples(
    st.sampled_from(SQLITE_MODES),
    st.sampled_from(["read_all", "disconnect", "abandon", "never_read"]),
    st.booleans(),  # left open while the next requests start
), max_size=12)


def assert_nothing_checked_out(app: Any) -> None:
    service = app.runtime.services["pool"]
    deadline = time.monotonic() + 20
    while service.checked_out() and time.monotonic() < deadline:
        gc.collect()
        time.sleep(0.005)
    assert service.wait_idle()
    assert service.checked_out() == 0
    database = service.databases["default"]
    assert database.pending == 0 and not database.holders


def finish(call: WSGICall, ending: str) -> None:
    if ending == "abandon":
        return  # the caller drops its last reference
    try:
        if ending != "never_read":
            call.read(1 if ending == "disconnect" else None)
    except (RuntimeError, sqlalchemy.exc.OperationalError):
        pass
    call.close()


@PROPERTY_SETTINGS
@given(requests=wsgi_requests)
def test_wsgi_no_outcome_sequence_leaves_a_connection_out(sqlite_table: tuple[str, str],
                                                          requests: list[tuple[str, str, bool]]) -> None:
    url, table = sqlite_table
    app = _wsgi_app(url, table)
    open_calls: list[tuple[WSGICall, str]] = []
    for mode, ending, overlap in requests:
        try:
            call = WSGICall(app, f"/{mode}")
        except (RuntimeError, sqlalchemy.exc.OperationalError):
            continue
        assert call.code in (200, 503)
        if overlap:
            open_calls.append((call, ending))
        else:
            finish(call, ending)
        del call
    while open_calls:
        call, ending = open_calls.pop(0)
        finish(call, ending)
        del call
    assert_nothing_checked_out(app)


_APPS: dict[tuple[str, str, str], Any] = {}


def _wsgi_app(url: str, table: str) -> Any:
    key = ("wsgi", url, table)
    if key not in _APPS:
        _APPS[key] = wrap(make_wsgi_app(table), url, **POOL)
    return _APPS[key]


def _asgi_app(url: str, table: str) -> Any:
    key = ("asgi", url, table)
    if key not in _APPS:
        _APPS[key] = wrap(make_asgi_app(table), url,
                          **{**POOL, "max_waiting": None, "pool_timeout_seconds": 5})
    return _APPS[key]


asgi_requests = st.lists(st.tuples(
    st.sampled_from(SQLITE_MODES), st.sampled_from(["read_all", "disconnect", "cancel"]),
), max_size=12)


@PROPERTY_SETTINGS
@given(requests=asgi_requests)
def test_asgi_no_outcome_sequence_leaves_a_connection_out(sqlite_table: tuple[str, str],
                                                          requests: list[tuple[str, str]]) -> None:
    url, table = sqlite_table
    app = _asgi_app(url, table)

    async def one(mode: str, ending: str) -> None:
        call = ASGICall(f"/{mode}", disconnect_after=1 if ending == "disconnect" else None)
        task = asyncio.create_task(call.run(app))
        if ending == "cancel":
            await asyncio.sleep(0)
            task.cancel()
        try:
            await task
        except (asyncio.CancelledError, RuntimeError, OSError, sqlalchemy.exc.OperationalError):
            pass

    async def main() -> None:  # all at once: more requests than connections
        await asyncio.gather(*(one(mode, ending) for mode, ending in requests))

    asyncio.run(main())
    assert_nothing_checked_out(app)
