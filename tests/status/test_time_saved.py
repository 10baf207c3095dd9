"""Time saved, end to end: a stored response remembers what producing it cost (origin time,
database time), and every fresh hit, on the hot path or the full one, adds it to its route's
counters, which the status page shows."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from prometheus_client import REGISTRY

import scalekit
from scalekit.pool import db
from tests.direct import asgi_scope, call_asgi, call_wsgi
from tests.status.support import page_values

DB_SLEEP_MS = 20
APP_SLEEP_SECONDS = 0.01
HITS = 5


def _costly() -> None:
    db().dbapi_connection().create_function("sleep_ms", 1, lambda ms: time.sleep(ms / 1000) or ms)
    db().connection().exec_driver_sql(f"SELECT sleep_ms({DB_SLEEP_MS})")
    time.sleep(APP_SLEEP_SECONDS)


def wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    scalekit.set_route(f"/saved-wsgi{environ['PATH_INFO'][:6]}/{{id}}")
    _costly()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Cache-Control", "max-age=600")])
    return [b"costly"]


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    scalekit.set_route(f"/saved-asgi{scope['path'][:6]}/{{id}}")
    _costly()  # a blocking handler is fine for this test: one request at a time
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"cache-control", b"max-age=600")]})
    await send({"type": "http.response.body", "body": b"costly"})


def counters(route: str) -> tuple[float, float, float]:
    def sample(name: str) -> float:
        return REGISTRY.get_sample_value(name, {"route": route}) or 0.0
    return (sample("scalekit_cache_route_hits_total"), sample("scalekit_cache_origin_seconds_saved_total"),
            sample("scalekit_cache_db_seconds_saved_total"))


@pytest.mark.parametrize("kind", ["wsgi", "asgi"])
@pytest.mark.parametrize("path", [
    pytest.param("/plain/1", id="plain hits (the hot path)"),
    pytest.param("/extra/1", id="hits with a request Cache-Control (the full path)"),
])
def test_every_hit_adds_what_the_response_cost(kind: str, path: str) -> None:
    app = scalekit.wrap(wsgi_app if kind == "wsgi" else asgi_app, cdn=False,
                        cache={"disk": {"enabled": False}})
    headers = [("Cache-Control", "max-stale=0")] if path.startswith("/extra") else []

    def get() -> bytes:
        if kind == "wsgi":
            return call_wsgi(app, "GET", path, headers=headers).body
        scope = asgi_scope("GET", path, headers=[(k.lower().encode(), v.encode()) for k, v in headers])
        return call_asgi(app, scope).body

    route = f"/saved-{kind}{path[:6]}/{{id}}"
    before = counters(route)
    started = time.perf_counter()
    assert get() == b"costly"  # the miss, which stores the entry
    miss_seconds = time.perf_counter() - started
    for _ in range(HITS):
        assert get() == b"costly"
    hits, origin, database = (now - then for now, then in zip(counters(route), before, strict=True))
    assert hits == HITS
    # Bounds that hold however loaded the machine: the entry's origin time includes the sleeps
    # and lies within the miss, its database time includes the statement's sleep.
    assert HITS * (DB_SLEEP_MS / 1000 + APP_SLEEP_SECONDS) <= origin <= HITS * miss_seconds
    assert HITS * DB_SLEEP_MS / 1000 <= database <= origin


def test_the_status_page_ranks_routes_by_time_saved() -> None:
    app = scalekit.wrap(wsgi_app, cdn=False, cache={"disk": {"enabled": False}})
    for _ in range(1 + HITS):
        call_wsgi(app, "GET", "/ranks/1")
    route = "/saved-wsgi/ranks/{id}"
    page = call_wsgi(app, "GET", "/_scalekit/").body.decode()
    row = re.search(f"<tr><th>{re.escape(route)}</th>(.*?)</tr>", page)
    assert row is not None, "the route is among the top routes"
    values = {re.sub(r"route-\d+-", "", cell): value for cell, value in page_values(row.group(1).encode()).items()}
    assert values["saved-origin"] == counters(route)[1] > 0
    assert values["hit-ratio"] == HITS / (HITS + 1)
