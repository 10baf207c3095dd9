"""The cache's spans: a lookup (tier, outcome) for every request it looks up, the store of a
miss, and tag invalidations, each joined to the span current when it happens."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import scalekit
from tests.direct import asgi_scope, call_asgi, call_wsgi
from tests.tracing.conftest import by_name


def wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    scalekit.set_route("/pages/{id}")
    scalekit.tag("page:1")
    start_response("200 OK", [("Content-Type", "text/plain"), ("Cache-Control", "max-age=600")])
    return [b"page"]


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    scalekit.set_route("/pages/{id}")
    scalekit.tag("page:1")
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"cache-control", b"max-age=600")]})
    await send({"type": "http.response.body", "body": b"page"})


@pytest.fixture(params=["wsgi", "asgi"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_a_miss_then_a_hit(kind: str, spans: InMemorySpanExporter) -> None:
    app = scalekit.wrap(wsgi_app if kind == "wsgi" else asgi_app, cdn=False, pool=False, tracing=True,
                        cache={"disk": {"enabled": False}})

    def get() -> bytes:
        return call_wsgi(app, "GET", "/pages/1").body if kind == "wsgi" else call_asgi(
            app, asgi_scope("GET", "/pages/1")).body

    assert get() == b"page"
    assert get() == b"page"  # a plain memory hit: with tracing on it goes through the store too
    named = by_name(spans)
    first, second = named["GET /pages/{id}"]
    lookups = {span.parent.span_id: span for span in named["cache lookup"]}
    assert dict(lookups[first.context.span_id].attributes) == {"scalekit.cache.outcome": "miss"}
    assert dict(lookups[second.context.span_id].attributes) == {
        "scalekit.cache.outcome": "hit", "scalekit.cache.tier": "memory", "http.response.status_code": 200}
    (store,) = named["cache store"]
    assert store.parent.span_id == first.context.span_id
    assert store.attributes["http.response.status_code"] == 200
    assert store.attributes["http.response.body.size"] == 4



def test_a_url_marked_hit_for_miss_still_gets_its_lookup_span(kind: str, tmp_path: Any,
                                                              spans: InMemorySpanExporter) -> None:
    """Its lookups ask L1 alone (no disk lookup for an endpoint never cached), traced as any."""
    def wsgi_private(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain"), ("Cache-Control", "no-store")])
        return [b"live"]

    async def asgi_private(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain"), (b"cache-control", b"no-store")]})
        await send({"type": "http.response.body", "body": b"live"})

    app = scalekit.wrap(wsgi_private if kind == "wsgi" else asgi_private, cdn=False, pool=False,
                        tracing=True, cache={"disk": {"enabled": True, "path": str(tmp_path / "l3")}})
    for _ in range(3):
        body = call_wsgi(app, "GET", "/live").body if kind == "wsgi" else call_asgi(
            app, asgi_scope("GET", "/live")).body
        assert body == b"live"
    lookups = by_name(spans)["cache lookup"]
    assert [span.attributes["scalekit.cache.outcome"] for span in lookups] == ["miss"] * 3
    app.runtime.close()

def test_an_invalidation_joins_the_current_span(spans: InMemorySpanExporter) -> None:
    scalekit.wrap(wsgi_app, cdn=False, pool=False, tracing=True, cache={"disk": {"enabled": False}})
    with trace.get_tracer("test").start_as_current_span("a job") as job:
        scalekit.invalidate(["page:1", "page:2"])
    invalidations = [span for span in by_name(spans)["cache invalidate"]
                     if span.parent is not None and span.parent.span_id == job.get_span_context().span_id]
    assert invalidations and invalidations[0].attributes["scalekit.cache.tags"] == 2
