"""The metrics layer: counts and times every request, and serves a protected ``/metrics``.

Outermost layer, so cache hits and shed requests are measured too. The route label is the
template an adapter put in the request context (``/products/{id}``), or ``unmatched``: a raw
path would create one series per URL. Decisions (who may scrape, which labels) are plain
functions; :class:`WSGIMetrics` and :class:`ASGIMetrics` only move bytes.
"""

from __future__ import annotations

import base64
import binascii
import glob
import hmac
import ipaddress
import logging
import os
import time
from collections.abc import Awaitable, Iterable
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from .. import asgi, wsgi
from ..calls import direct
from ..config import MetricsConfig
from ..context import CONTEXT_KEY, UNMATCHED_ROUTE
from ..messages import Response, simple_response
from .flusher import FLUSHER
from .handles import Handles, gauge_increment, histogram_handles
from .hits import HitLedger, early_path
from .instruments import (
    CACHE_MAX_BYTES,
    HTTP_DURATION,
    HTTP_IN_FLIGHT,
    HTTP_REQUESTS,
    TWIN_NAMES,
    tier_gauge,
)

__all__ = [
    "ASGIMetrics",
    "MetricsPolicy",
    "WSGIMetrics",
    "WorkerFiles",
    "current_registry",
    "render_exposition",
    "wrap_asgi",
    "wrap_wsgi",
]

# RFC 9110 §9 methods plus PATCH; anything else is counted as "other" to bound the label.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"})
LOOPBACK = ("127.0.0.0/8", "::1/128")
# A guard against an adapter or app that names routes by raw path: past this many distinct
# route labels in one process, new ones are counted under OVERFLOW_ROUTE (and logged once).
MAX_ROUTE_LABELS = 1000
OVERFLOW_ROUTE = "overflow"
MAX_CACHED_CHILDREN = 20_000

log = logging.getLogger("scalekit")


def status_class(status: int) -> str:
    """``"2xx"`` for 200..299, and so on; ``"5xx"`` for anything outside 100..599."""
    return f"{status // 100}xx" if 100 <= status <= 599 else "5xx"


def current_registry() -> CollectorRegistry:
    """The registry ``/metrics`` and the status page read: this process's, or in multiprocess
    mode one merging every gunicorn worker's files (this process's queued hits written first)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        FLUSHER.flush()
        registry = CollectorRegistry()
        registry.register(_TwinsMerged(WorkerFiles(os.environ["PROMETHEUS_MULTIPROC_DIR"])))
        return registry
    return REGISTRY


class WorkerFiles(Collector):
    """Every worker's metric files in ``directory``, merged as prometheus_client's
    ``MultiProcessCollector`` merges them, less the files still at 0 bytes.

    prometheus_client creates a file before it sizes it: a scrape can find one empty while a
    worker starts, and a worker killed in that moment leaves it for good. Read, an empty file
    raises and fails the whole scrape, every scrape after it too (an open prometheus_client bug); it
    holds nothing yet, so it is skipped.
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def collect(self) -> Iterable[Metric]:
        files = []
        for path in glob.glob(os.path.join(self.directory, "*.db")):
            try:
                if os.path.getsize(path) > 0:
                    files.append(path)
            except OSError:  # gone meanwhile: a dead worker's live gauges, removed at its exit
                continue
        return MultiProcessCollector.merge(files, accumulate=True)  # type: ignore[no-untyped-call, no-any-return]


class _TwinsMerged(Collector):
    """The workers' merged metrics, with the shared tiers' gauges (see
    :data:`~.instruments.SHARED_TWINS`) back under the names the other tiers use."""

    def __init__(self, inner: Collector) -> None:
        self.inner = inner

    def collect(self) -> Iterable[Metric]:
        families = {family.name: family for family in self.inner.collect()}
        for twin_name, name in TWIN_NAMES.items():
            twin = families.pop(twin_name, None)
            if twin is None:
                continue
            family = families.get(name)
            if family is None:
                family = families[name] = Metric(name, twin.documentation, "gauge")
            for sample in twin.samples:
                family.add_sample(name, sample.labels, sample.value)
        return families.values()


def render_exposition(accept: str | None = None) -> tuple[bytes, str]:
    """The exposition of every metric and its content type, negotiated from ``accept``
    (Prometheus text 0.0.4 by default, OpenMetrics when asked), merged over gunicorn workers
    in multiprocess mode."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(current_registry()), content_type


class MetricsPolicy:
    """Pure decisions of the metrics layer, precomputed from :class:`MetricsConfig`."""

    def __init__(self, config: MetricsConfig) -> None:
        self.path = config.path
        self.token = config.token.encode() if config.token else None
        allow = config.allow_from
        if allow is None:
            allow = () if config.token else LOOPBACK
        self.networks = tuple(ipaddress.ip_network(address, strict=False) for address in allow)
        self.exclude_paths = config.exclude_paths
        # (method, route, status) -> (counter child, histogram child, their value handles)
        self._children: dict[tuple[str, str, int], tuple[Any, Any, Handles]] = {}
        self._routes: set[str] = {UNMATCHED_ROUTE, OVERFLOW_ROUTE}
        self._overflowed = False
        # Every request is counted through it (held here: the registry holds it only weakly).
        self.ledger = HitLedger(self)
        self.status: Any = None
        if config.status_page:
            from ..status import StatusPage  # not imported when the page is off
            self.status = StatusPage(config.status_path, lambda: current_registry().collect())
        # What the shells answer themselves, found with one set lookup per request.
        self.endpoints = frozenset({self.path, *(self.status.paths if self.status else ())})

    def is_measured(self, path: str) -> bool:
        """False for the scrape itself and configured exclusions (health checks, say)."""
        if path == self.path:
            return False
        return not (self.exclude_paths and path.startswith(self.exclude_paths))

    def authorize(self, client_address: str | None, authorization: str | None, *,
                  browser: bool = False) -> Response | None:
        """None when the scrape may proceed; otherwise the 401/403 to answer.

        The token is accepted as a bearer token or as the password of Basic credentials (any
        user name): a browser cannot send a bearer token, but asks for a password when
        challenged with Basic, which ``browser`` (the status page) adds to the 401.
        """
        if self.token is not None and authorization and _carries_token(authorization, self.token):
            return None
        if client_address and self.networks and _in_networks(client_address, self.networks):
            return None
        if self.token is not None:
            challenges: tuple[tuple[str, str], ...] = (("www-authenticate", 'Bearer realm="metrics"'),)
            if browser:
                challenges += (("www-authenticate", 'Basic realm="scalekit", charset="UTF-8"'),)
            return simple_response(401, "metrics require a bearer token\n", extra_headers=challenges)
        return simple_response(403, "metrics are only served to allowed addresses "
                                    "(set metrics.allow_from or metrics.token)\n")

    def answer(self, path: str, client_address: str | None, authorization: str | None,
               accept: str | None) -> Response:
        """The response for one of :attr:`endpoints`: the scrape or the status page, guarded."""
        browser = path != self.path
        denied = self.authorize(client_address, authorization, browser=browser)
        if denied is not None:
            return denied
        return self.status.respond(path) if browser else self.exposition(accept)

    def exposition(self, accept: str | None = None) -> Response:
        """The scrape response (never stored by a cache on the way)."""
        body, content_type = render_exposition(accept)
        return Response(200, (("content-type", content_type), ("content-length", str(len(body))),
                              ("cache-control", "no-store")), body)

    def record(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one finished request: queued in the ledger, added to the counter and the
        histogram in batches (before any read of the registry, and by the flusher)."""
        self.ledger.record(method, route, status, seconds)

    def handles(self, method: str, route: str, status: int) -> Handles:
        """The value handles a request of this kind is counted with (see :meth:`add`)."""
        series = self._children.get((method, route, status)) or self._children_for(method, route, status)
        return series[2]

    def add(self, handles: Handles, requests: int, seconds: float, buckets: dict[int, int]) -> None:
        """Count ``requests`` finished requests at once: ``seconds`` their summed duration,
        ``buckets`` how many fell in each histogram bucket (by index). Value handles only:
        without them (``handles[0]`` None) the ledger observes each request itself."""
        count, total, histogram, _ = handles
        count.inc(requests)
        total.inc(seconds)
        for index, hits in buckets.items():
            histogram[index].inc(hits)

    def _children_for(self, method: str, route: str, status: int) -> tuple[Any, Any, Handles]:
        """Resolve bounded label values once per (method, route, status) seen."""
        label_method = method if method in KNOWN_METHODS else "other"
        key = (method, route, status)
        if route not in self._routes:
            if len(self._routes) >= MAX_ROUTE_LABELS:
                if not self._overflowed:
                    self._overflowed = True
                    log.warning("scalekit: more than %d distinct route labels; counting new ones "
                                "as %r. Route labels must be templates ('/items/{id}'), never "
                                "raw paths.", MAX_ROUTE_LABELS, OVERFLOW_ROUTE)
                route = OVERFLOW_ROUTE
            self._routes.add(route)
        counter = HTTP_REQUESTS.labels(label_method, route, status_class(status))
        histogram = HTTP_DURATION.labels(label_method, route)
        series = (counter, histogram, histogram_handles(counter, histogram))
        if len(self._children) < MAX_CACHED_CHILDREN:  # raw methods/statuses are unbounded
            self._children[key] = series
        return series


def _carries_token(authorization: str, token: bytes) -> bool:
    scheme, _, credentials = authorization.partition(" ")
    scheme = scheme.lower()
    if scheme == "basic":
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        credentials_bytes = decoded.partition(b":")[2]
    elif scheme == "bearer":
        credentials_bytes = credentials.strip().encode()
    else:
        return False
    return hmac.compare_digest(credentials_bytes, token)


def _in_networks(address: str, networks: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == net.version and ip in net for net in networks)


def _route_of(ctx: Any) -> str:
    return ctx.route if ctx is not None else UNMATCHED_ROUTE


class WSGIMetrics(wsgi.EarlyFirst):
    """PEP 3333 shell of the metrics layer."""

    def __init__(self, app: wsgi.WSGIApp, policy: MetricsPolicy) -> None:
        self.app = app
        self.policy = policy
        self._in_flight = gauge_increment(HTTP_IN_FLIGHT)
        self._exclude = policy.exclude_paths
        self._endpoints = policy.endpoints
        # Around the cache (through the CDN layer): plain hits are counted from its early path.
        self.serve_early: wsgi.EarlyPath | None = early_path(self, app, policy)
        self.inner: wsgi.WSGIApp = getattr(app, "handle", app) if self.serve_early else direct(app)

    def handle(self, environ: wsgi.Environ, start_response: wsgi.StartResponse) -> Iterable[bytes]:
        """The whole layer but the early path."""
        policy = self.policy
        path = environ.get("PATH_INFO", "")
        if path in self._endpoints:
            response = policy.answer(path, environ.get("REMOTE_ADDR"), environ.get("HTTP_AUTHORIZATION"),
                                     environ.get("HTTP_ACCEPT"))
            return wsgi.send_response(start_response, response, head=environ.get("REQUEST_METHOD") == "HEAD")
        if self._exclude and path.startswith(self._exclude):
            return self.inner(environ, start_response)
        exchange = _WSGIExchange(policy, self._in_flight, environ, start_response)
        self._in_flight.inc(1)
        try:
            body = self.inner(environ, exchange.start_response)
        except BaseException:
            exchange.finish(True)
            raise
        if type(body) is list:
            # Whole and without close(): the request is done, as a plain hit is when it returns.
            # Anything else is in flight until the server closes it (a stream may still fail).
            exchange.finish(False)
            return body
        return wsgi.ClosingBody(body, exchange.finish)


class _WSGIExchange:
    """One measured WSGI request: reads the status on its way out, records at close()."""

    __slots__ = ("environ", "in_flight", "policy", "server_start_response", "started", "status")

    def __init__(self, policy: MetricsPolicy, in_flight: Any, environ: wsgi.Environ,
                 start_response: wsgi.StartResponse) -> None:
        self.policy, self.in_flight, self.environ = policy, in_flight, environ
        self.server_start_response = start_response
        self.status = 500
        self.started = time.perf_counter()

    def start_response(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        code = status[:3]
        self.status = int(code) if code.isdigit() else 500
        if exc_info:
            return self.server_start_response(status, headers, exc_info)
        return self.server_start_response(status, headers)

    def finish(self, failed: bool) -> None:
        self.in_flight.inc(-1)
        environ = self.environ
        self.policy.ledger.record(environ.get("REQUEST_METHOD", "GET"), _route_of(environ.get(CONTEXT_KEY)),
                                  500 if failed else self.status, time.perf_counter() - self.started)


class ASGIMetrics(asgi.EarlyFirst):
    """ASGI 3 shell of the metrics layer (wraps ``send`` only to read the status)."""

    def __init__(self, app: asgi.ASGIApp, policy: MetricsPolicy) -> None:
        self.app = app
        self.policy = policy
        self._in_flight = gauge_increment(HTTP_IN_FLIGHT)
        self._exclude = policy.exclude_paths
        self._endpoints = policy.endpoints
        self.serve_early: asgi.EarlyPath | None = early_path(self, app, policy)
        self.inner: asgi.ASGIApp = getattr(app, "handle", app) if self.serve_early else direct(app)

    async def handle(self, scope: asgi.Scope, receive: asgi.Receive, send: asgi.Send) -> None:
        """The whole layer but the early path."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        policy = self.policy
        path = scope["path"]
        if path in self._endpoints:
            client = scope.get("client")
            response = policy.answer(path, client[0] if client else None,
                                     asgi.header_value(scope, b"authorization"),
                                     asgi.header_value(scope, b"accept"))
            await asgi.send_response(send, response, head=scope["method"] == "HEAD")
            return
        if self._exclude and path.startswith(self._exclude):
            await self.inner(scope, receive, send)
            return
        in_flight = self._in_flight
        started = time.perf_counter()
        status = 0

        def send_with_status(message: asgi.Message) -> Awaitable[None]:
            # A plain function handing back send's own awaitable: no coroutine of its own per message.
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            return send(message)

        in_flight.inc(1)
        try:
            await self.inner(scope, receive, send_with_status)
        except BaseException:
            status = max(status, 500)
            raise
        finally:
            in_flight.inc(-1)
            policy.ledger.record(scope["method"], _route_of(scope.get(CONTEXT_KEY)), status or 500,
                                 time.perf_counter() - started)


def wrap_wsgi(app: wsgi.WSGIApp, runtime: Any) -> wsgi.WSGIApp:
    """The metrics layer around a WSGI app."""
    record_bounds(runtime.config)
    return WSGIMetrics(app, MetricsPolicy(runtime.config.metrics))


def wrap_asgi(app: asgi.ASGIApp, runtime: Any) -> asgi.ASGIApp:
    """The metrics layer around an ASGI app."""
    record_bounds(runtime.config)
    return ASGIMetrics(app, MetricsPolicy(runtime.config.metrics))


def record_bounds(config: Any) -> None:
    """Publish the byte bound of the disk tier the config turns on, beside its bytes (the
    memory tiers publish theirs, summed over the process's, as they do their bytes)."""
    cache = config.cache
    if cache.enabled and cache.disk.enabled:
        tier_gauge(CACHE_MAX_BYTES, "disk").set(cache.disk.max_bytes)
