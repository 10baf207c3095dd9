"""Traces of a wrapped app, read back from the OpenTelemetry SDK's in-memory exporter: the
request's server span (HTTP conventions, joined to the caller's trace context or to the span of
an instrumentation around scalekit), and the pool checkout inside it (database conventions)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import scalekit
from scalekit.pool import db
from tests.direct import asgi_scope, call_asgi, call_wsgi
from tests.servers import REPO_ROOT
from tests.tracing.conftest import by_name

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


def wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    path = environ["PATH_INFO"]
    if path == "/fail":
        start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
        return [b"down"]
    if path.startswith("/db/"):
        scalekit.set_route("/db/{id}")
        value = db().connection().exec_driver_sql("SELECT 7").scalar_one()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [str(value).encode()]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"plain"]


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    path, status, body = scope["path"], 200, b"plain"
    if path == "/fail":
        status, body = 503, b"down"
    elif path.startswith("/db/"):
        scalekit.set_route("/db/{id}")
        connection = await db().aconnection()
        body = str(connection.exec_driver_sql("SELECT 7").scalar_one()).encode()
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})


def wrapped(kind: str, **settings: Any) -> Any:
    settings.setdefault("tracing", True)
    # The default database: a SQLite file under the state directory (any thread may use it).
    return scalekit.wrap(wsgi_app if kind == "wsgi" else asgi_app, cdn=False, cache=False, **settings)


def request(app: Any, kind: str, path: str, headers: dict[str, str] | None = None) -> int:
    headers = headers or {}
    if kind == "wsgi":
        return call_wsgi(app, "GET", path, headers=list(headers.items())).status_code
    scope = asgi_scope("GET", path, headers=[(k.encode(), v.encode()) for k, v in headers.items()])
    return call_asgi(app, scope).status


@pytest.fixture(params=["wsgi", "asgi"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_the_request_span_follows_http_conventions_and_its_caller(kind: str, spans: InMemorySpanExporter) -> None:
    assert request(wrapped(kind), kind, "/db/7", {"traceparent": TRACEPARENT}) == 200
    named = by_name(spans)
    (server,) = named["GET /db/{id}"]
    assert server.kind == trace.SpanKind.SERVER
    assert format(server.context.trace_id, "032x") == TRACE_ID
    assert server.parent is not None and format(server.parent.span_id, "016x") == PARENT_ID
    attributes = dict(server.attributes)
    assert attributes["http.request.method"] == "GET"
    assert attributes["http.route"] == "/db/{id}"
    assert attributes["http.response.status_code"] == 200
    assert attributes["url.path"] == "/db/7"
    assert attributes["url.scheme"] == "http"
    assert server.status.status_code == trace.StatusCode.UNSET


def test_the_pool_checkout_is_a_span_inside_the_request(kind: str, spans: InMemorySpanExporter) -> None:
    request(wrapped(kind), kind, "/db/1")
    named = by_name(spans)
    (server,), (checkout,) = named["GET /db/{id}"], named["pool checkout"]
    assert checkout.parent is not None and checkout.parent.span_id == server.context.span_id
    assert checkout.context.trace_id == server.context.trace_id
    assert dict(checkout.attributes) == {"db.system.name": "sqlite", "db.client.connection.pool.name": "default"}


def test_a_5xx_marks_the_request_span_as_an_error(kind: str, spans: InMemorySpanExporter) -> None:
    assert request(wrapped(kind), kind, "/fail") == 503
    (server,) = by_name(spans)["GET"]  # no route: named by its method alone
    assert server.status.status_code == trace.StatusCode.ERROR
    assert server.attributes["error.type"] == "503"
    assert "pool checkout" not in by_name(spans)  # no connection was asked for


def test_a_span_already_current_is_the_request_span(kind: str, spans: InMemorySpanExporter) -> None:
    """An instrumentation around scalekit made the request's span: scalekit's spans join it."""
    app = wrapped(kind)
    with trace.get_tracer("outer-instrumentation").start_as_current_span("GET outer") as outer:
        request(app, kind, "/db/2")
    named = by_name(spans)
    assert set(named) == {"GET outer", "pool checkout"}
    (checkout,) = named["pool checkout"]
    assert checkout.parent is not None and checkout.parent.span_id == outer.get_span_context().span_id


def test_tracing_off_makes_no_span(kind: str, spans: InMemorySpanExporter) -> None:
    request(wrapped(kind, tracing=False), kind, "/db/3", {"traceparent": TRACEPARENT})
    assert spans.get_finished_spans() == ()


NOTHING_IMPORTED = textwrap.dedent("""
    import sys
    {block}
    import scalekit
    from scalekit.pool import db
    from tests.direct import call_wsgi

    def wsgi_app(environ, start_response):
        if environ["PATH_INFO"] == "/db/1":
            db().connection().exec_driver_sql("SELECT 1")
        start_response("200 OK", [("Content-Type", "text/plain"), ("Cache-Control", "max-age=60")])
        return [b"plain"]

    app = scalekit.wrap(wsgi_app, pool={{"databases": {{"default": {{"url": "sqlite://"}}}}}},
                        cache={{"disk": {{"enabled": False}}}}, allowed_hosts=["localhost"])
    for path in ("/db/1", "/plain", "/plain", "/metrics", "/_scalekit/"):
        assert call_wsgi(app, "GET", path, headers=[("Host", "localhost")]).status_code == 200, path
    loaded = sorted(name for name in sys.modules if name.startswith("opentelemetry"))
    assert loaded == [], loaded
    {after}
""")
BLOCK_OPENTELEMETRY = textwrap.dedent("""
    class Absent:
        def find_spec(self, name, path=None, target=None):
            if name == "opentelemetry" or name.startswith("opentelemetry."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    sys.meta_path.insert(0, Absent())
""")
TRACING_WITHOUT_THE_EXTRA = textwrap.dedent("""
    try:
        scalekit.wrap(wsgi_app, tracing=True)
    except scalekit.ConfigError as error:
        print(error)
    else:
        raise SystemExit("no error")
""")


@pytest.mark.parametrize("installed", [True, False], ids=["extra installed, tracing off", "extra absent"])
def test_nothing_of_opentelemetry_is_imported_when_tracing_is_off(installed: bool) -> None:
    script = NOTHING_IMPORTED.format(block="" if installed else BLOCK_OPENTELEMETRY,
                                     after="" if installed else TRACING_WITHOUT_THE_EXTRA)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                          timeout=60, check=False, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    if not installed:  # switching tracing on names the extra to install
        assert "tracing.enabled" in done.stdout and "pip install 'scalekit[otel]'" in done.stdout
