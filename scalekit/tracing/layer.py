"""The tracing layer: one server span per request, unless one is already current.

The span follows OpenTelemetry's HTTP server conventions: named ``{method} {route}`` once the
route template is known (``{method}`` alone otherwise), with ``http.request.method``,
``url.path``, ``url.scheme``, ``server.address``, ``http.route``,
``http.response.status_code`` and, for a 5xx, ``error.type`` and an error status. Its parent is
the trace context of the request's headers (W3C ``traceparent`` through the global
propagator). When the app's own instrumentation already opened a span around scalekit, that
span is the request's and this layer only makes it current for the layers inside.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

from .. import asgi, wsgi
from ..context import CONTEXT_KEY, UNMATCHED_ROUTE
from .spans import TRACER_NAME  # first: it says which extra to install if OpenTelemetry is absent

from opentelemetry import context, propagate, trace  # isort: skip

__all__ = ["ASGITracing", "WSGITracing", "wrap_asgi", "wrap_wsgi"]

# RFC 9110 §9 methods plus PATCH; others are reported as _OTHER, as the convention asks.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"})
# W3C Trace Context and Baggage: (header name, WSGI environ key).
TRACE_HEADERS = (("traceparent", "HTTP_TRACEPARENT"), ("tracestate", "HTTP_TRACESTATE"),
                 ("baggage", "HTTP_BAGGAGE"))


def _method_attributes(method: str) -> dict[str, str]:
    if method in KNOWN_METHODS:
        return {"http.request.method": method}
    return {"http.request.method": "_OTHER", "http.request.method_original": method}


def _finish(span: Any, method: str, ctx: Any, status: int, error: BaseException | None) -> None:
    """Name the span by its route, record the status and end it."""
    route = ctx.route if ctx is not None else UNMATCHED_ROUTE
    label = method if method in KNOWN_METHODS else "HTTP"
    if route != UNMATCHED_ROUTE:
        span.set_attribute("http.route", route)
        span.update_name(f"{label} {route}")
    if status:
        span.set_attribute("http.response.status_code", status)
    if error is not None:
        span.record_exception(error)
        span.set_attribute("error.type", type(error).__qualname__)
        span.set_status(trace.StatusCode.ERROR)
    elif status >= 500:
        span.set_attribute("error.type", str(status))
        span.set_status(trace.StatusCode.ERROR)
    span.end()


class _Getter:
    """Reads W3C trace context headers from a WSGI environ or an ASGI scope's headers."""

    def __init__(self, headers: dict[str, str]) -> None:
        self.headers = headers

    def get(self, carrier: Any, key: str) -> list[str] | None:
        value = self.headers.get(key.lower())
        return [value] if value is not None else None

    def keys(self, carrier: Any) -> list[str]:
        return list(self.headers)


def _start(tracer: Any, method: str, attributes: dict[str, Any], headers: dict[str, str]) -> tuple[Any, Any]:
    """(span, token): a new server span, or the current one (token None) if there is one."""
    current = trace.get_current_span()
    if current.get_span_context().is_valid:
        return current, None
    parent = propagate.extract({}, getter=_Getter(headers))  # type: ignore[arg-type]
    span = tracer.start_span(method if method in KNOWN_METHODS else "HTTP", context=parent,
                             kind=trace.SpanKind.SERVER, attributes=attributes)
    return span, context.attach(trace.set_span_in_context(span, parent))


class WSGITracing:
    """PEP 3333 shell: the span is current from the call until the server closes the body (the
    cache stores a response then), and ends there."""

    def __init__(self, app: wsgi.WSGIApp) -> None:
        self.app = app
        self.tracer = trace.get_tracer(TRACER_NAME)

    def __call__(self, environ: wsgi.Environ, start_response: wsgi.StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        headers = {name: environ[key] for name, key in TRACE_HEADERS if key in environ}
        host, _, port = str(environ.get("HTTP_HOST") or environ.get("SERVER_NAME", "")).partition(":")
        attributes = {**_method_attributes(method), "url.path": environ.get("PATH_INFO", "") or "/",
                      "url.scheme": environ.get("wsgi.url_scheme", "http"), "server.address": host}
        if port.isdigit():
            attributes["server.port"] = int(port)
        if environ.get("QUERY_STRING"):
            attributes["url.query"] = environ["QUERY_STRING"]
        span, token = _start(self.tracer, method, attributes, headers)
        status = 0

        def traced_start_response(status_line: str, response_headers: list[tuple[str, str]],
                                  exc_info: Any = None) -> Any:
            nonlocal status
            status = int(status_line[:3]) if status_line[:3].isdigit() else 0
            if exc_info:
                return start_response(status_line, response_headers, exc_info)
            return start_response(status_line, response_headers)

        def finish(failed: bool) -> None:
            if token is not None:
                context.detach(token)
                _finish(span, method, environ.get(CONTEXT_KEY), status or (500 if failed else 0), None)

        try:
            body = self.app(environ, traced_start_response)
        except BaseException as error:
            if token is not None:
                context.detach(token)
                _finish(span, method, environ.get(CONTEXT_KEY), 500, error)
            raise
        return wsgi.ClosingBody(body, finish)


class ASGITracing:
    """ASGI 3 shell: the span is current while the app (and every layer inside) runs."""

    def __init__(self, app: asgi.ASGIApp) -> None:
        self.app = app
        self.tracer = trace.get_tracer(TRACER_NAME)

    async def __call__(self, scope: asgi.Scope, receive: asgi.Receive, send: asgi.Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope.get("headers", ())
                   if name in (b"traceparent", b"tracestate", b"baggage")}
        server = scope.get("server") or (None, None)
        attributes: dict[str, Any] = {**_method_attributes(method), "url.path": scope["path"],
                                      "url.scheme": scope.get("scheme", "http")}
        host = asgi.header_value(scope, b"host")
        attributes["server.address"] = host.partition(":")[0] if host else (server[0] or "")
        if scope.get("query_string"):
            attributes["url.query"] = scope["query_string"].decode("latin-1")
        span, token = _start(self.tracer, method, attributes, headers)
        status = 0

        async def send_with_status(message: asgi.Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        error: BaseException | None = None
        try:
            await self.app(scope, receive, send_with_status)
        except BaseException as exc:
            error = exc
            raise
        finally:
            if token is not None:
                with contextlib.suppress(ValueError):
                    context.detach(token)
                _finish(span, method, scope.get(CONTEXT_KEY), status or (500 if error else 0), error)


def wrap_wsgi(app: wsgi.WSGIApp, runtime: Any) -> wsgi.WSGIApp:
    """The tracing layer around a WSGI app."""
    return WSGITracing(app)


def wrap_asgi(app: asgi.ASGIApp, runtime: Any) -> asgi.ASGIApp:
    """The tracing layer around an ASGI app."""
    return ASGITracing(app)
