"""The default stack's plain hits answered from the cache's early path: the same as the full path.

With the metrics and CDN layers around the cache (the defaults), a plain hit is answered by the
cache's early path, its headers stamped by the CDN layer when the cache memoises them and its
request counted in the metrics layer's ledger. A state machine of requests, clock advances and
invalidations compares each early answer with the full stack's answer to the same request at
the same instant (status, every header, body) and the metrics each of them moved: request
counts and durations by method, route label and status, and the cache's savings by route. A
conditional request then gets its 304 with the ETag the early path sent.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule
from prometheus_client import REGISTRY

from scalekit.asgi import ASGIRoot
from scalekit.cache import layer as cache_layer
from scalekit.cdn import layer as cdn_layer
from scalekit.config import load_config
from scalekit.context import set_route
from scalekit.metrics import layer as metrics_layer
from scalekit.metrics.hits import HitLedger
from scalekit.runtime import Runtime
from scalekit.wsgi import WSGIRoot
from tests.cache.origin_app import (
    ALLOWED_HOSTS,
    START_TIME,
    FakeClock,
    Origin,
    origin_asgi,
    origin_wsgi,
)

PATHS = ("/p0", "/p1", "/blog/p2")
CONTROLS = ("cc=max-age=60", "cc=max-age=3&rule=30", "rule=60", "cc=max-age=2&age=1&etag=1",
            "cc=max-age=60&tag=a b", "cc=max-age=60&size=40", "cc=max-age=60&cookie=1",
            "cc=no-cache&etag=1", "cc=max-age=60&vary=accept-language", "cc=max-age=30&lm=1&status=404")
CDN_SETTINGS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "stamping": {"surrogate_keys": "fastly", "surrogate_control": True, "etag_max_body_bytes": 32,
                 "rules": [{"path": "/blog/**", "policy": "page", "override": True},
                           {"path": "/p1", "policy": "immutable-asset"}],
                 "default_policy": "page"},
}


def build(kind: str, clock: FakeClock, origin: Origin, cdn: dict[str, Any]) -> tuple[Any, Any, Runtime]:
    """The default layers as wrap() orders them, on a runtime with a clock the test moves;
    returns the root and the same root without its early path."""
    config = load_config({"cache": {"disk": {"enabled": False}, "coalesce": False}, "cdn": cdn,
                          "pool": False, "allowed_hosts": ALLOWED_HOSTS}, environ={}, cwd="/nonexistent")
    runtime = Runtime(config, clock=clock)
    app = routed_wsgi(origin) if kind == "wsgi" else routed_asgi(origin)
    chain = app
    for module in (cache_layer, cdn_layer, metrics_layer):
        chain = module.wrap_wsgi(chain, runtime) if kind == "wsgi" else module.wrap_asgi(chain, runtime)
    root_type = WSGIRoot if kind == "wsgi" else ASGIRoot
    root, full = root_type(app, chain, runtime), root_type(app, chain, runtime)
    full.serve_early = None  # the full stack: metrics, CDN and cache each run
    return root, full, runtime


def routed_wsgi(origin: Origin) -> Any:
    inner = origin_wsgi(origin)

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        set_route(environ["PATH_INFO"].rsplit("/", 1)[0] + "/{name}")
        return inner(environ, start_response)
    return app


def routed_asgi(origin: Origin) -> Any:
    inner = origin_asgi(origin)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            set_route(scope["path"].rsplit("/", 1)[0] + "/{name}")
        await inner(scope, receive, send)
    return app


Answer = tuple[int, list[tuple[str, str]], bytes]
COUNTED = ("scalekit_http_requests_total", "scalekit_http_request_duration_seconds_count",
           "scalekit_cache_route_hits_total", "scalekit_cache_requests_total")


def counts() -> dict[tuple[str, tuple[str, ...]], float]:
    """Every sample of the metrics a request moves (the duration's sum and buckets aside: a
    time, which differs from one call to the next)."""
    found = {}
    for metric in REGISTRY.collect():
        for sample in metric.samples:
            if sample.name in COUNTED:
                found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def moved(before: dict[Any, float], after: dict[Any, float]) -> dict[Any, float]:
    return {key: value - before.get(key, 0.0) for key, value in after.items() if value != before.get(key, 0.0)}


class StackEarlyMatchesFull(RuleBasedStateMachine):
    kind = "wsgi"
    cdn = "defaults"

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock(START_TIME + 0.125)
        self.origin = Origin(self.clock)
        self.root, self.full_root, self.runtime = build(self.kind, self.clock, self.origin,
                                                        CDN_SETTINGS[self.cdn])
        self.loop = asyncio.new_event_loop() if self.kind == "asgi" else None
        self.queries: dict[str, str] = {}
        self.last_etag: dict[str, str] = {}

    def teardown(self) -> None:
        self.runtime.close()
        if self.loop is not None:
            self.loop.close()

    # -- one request through a root, as a server would make it
    def call(self, root: Any, method: str, path: str, headers: dict[str, str]) -> Answer:
        query = self.queries.get(path, "")
        if self.kind == "wsgi":
            environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query,
                       "SERVER_NAME": "test", "SERVER_PORT": "80", "wsgi.url_scheme": "http",
                       "HTTP_HOST": "test", **{"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()}}
            seen: dict[str, Any] = {}

            def start_response(status: str, out: list[tuple[str, str]], exc_info: Any = None) -> Any:
                seen["status"], seen["headers"] = int(status[:3]), list(out)
            body = root(environ, start_response)
            data = b"".join(body)
            getattr(body, "close", lambda: None)()
            return seen["status"], seen["headers"], data
        scope = {"type": "http", "method": method, "path": path, "scheme": "http", "server": ("test", 80),
                 "query_string": query.encode(), "http_version": "1.1",
                 "headers": [(b"host", b"test"), *((k.encode(), v.encode()) for k, v in headers.items())]}
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)
        assert self.loop is not None
        self.loop.run_until_complete(root(scope, receive, send))
        return (sent[0]["status"], [(k.decode(), v.decode()) for k, v in sent[0]["headers"]],
                b"".join(m.get("body", b"") for m in sent[1:]))

    def early(self, method: str, path: str) -> bool:
        """Whether the root's early path answers this request (asked without answering it)."""
        query = self.queries.get(path, "")
        if self.kind == "wsgi":
            request: dict[str, Any] = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query,
                                       "wsgi.url_scheme": "http", "HTTP_HOST": "test"}
        else:
            request = {"type": "http", "method": method, "path": path, "scheme": "http",
                       "query_string": query.encode(), "headers": [(b"host", b"test")]}
        before = counts()
        answered = self.root.serve_early(request) is not None  # a request too, counted like one
        self.probe_moved = moved(before, counts())
        return answered

    # -- rules
    @rule(path=st.sampled_from(PATHS), query=st.sampled_from(CONTROLS))
    def program(self, path: str, query: str) -> None:
        self.queries[path] = query

    @rule(method=st.sampled_from(["GET", "GET", "HEAD"]), path=st.sampled_from(PATHS))
    def request(self, method: str, path: str) -> None:
        if not self.early(method, path):
            self.call(self.full_root, method, path, {})  # a miss fills the cache
            return
        calls = dict(self.origin.calls)
        before = counts()
        early = self.call(self.root, method, path, {})
        early_moved = moved(before, counts())
        before = counts()
        full = self.call(self.full_root, method, path, {})
        full_moved = moved(before, counts())
        assert self.origin.calls == calls  # both were hits
        assert early == full
        assert early_moved == full_moved == self.probe_moved
        assert any(name == "scalekit_http_requests_total" for name, _ in early_moved), early_moved
        etag = dict(early[1]).get("etag")
        if etag is not None and method == "GET":
            self.last_etag[path] = etag

    @rule(path=st.sampled_from(PATHS), authorized=st.booleans())
    def conditional(self, path: str, authorized: bool) -> None:
        """If-None-Match with the ETag a hit sent: 304 with that ETag (full path: a condition)."""
        etag = self.last_etag.get(path)
        if etag is None:
            return
        headers = {"if-none-match": etag, **({"authorization": "Bearer x"} if authorized else {})}
        status, out, body = self.call(self.root, "GET", path, headers)
        if status == 304:
            assert dict(out).get("etag") == etag and body == b""

    @rule(seconds=st.sampled_from([0.25, 0.5, 0.999, 1.0, 1.75, 30.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule()
    def invalidate(self) -> None:
        self.runtime.invalidate(["a"])


class AsgiStackEarlyMatchesFull(StackEarlyMatchesFull):
    kind = "asgi"


class WsgiStampedStack(StackEarlyMatchesFull):
    cdn = "stamping"


class AsgiStampedStack(StackEarlyMatchesFull):
    kind = "asgi"
    cdn = "stamping"


MACHINE_SETTINGS = settings(max_examples=60, stateful_step_count=30, deadline=None)
TestWsgiStack = StackEarlyMatchesFull.TestCase
TestAsgiStack = AsgiStackEarlyMatchesFull.TestCase
TestWsgiStampedStack = WsgiStampedStack.TestCase
TestAsgiStampedStack = AsgiStampedStack.TestCase
TestWsgiStack.settings = TestAsgiStack.settings = MACHINE_SETTINGS
TestWsgiStampedStack.settings = TestAsgiStampedStack.settings = MACHINE_SETTINGS


@pytest.mark.parametrize("kind", ["wsgi", "asgi"])
@pytest.mark.parametrize(("cdn", "header", "private"), [
    ("defaults", {"authorization": "Bearer x"}, "private, max-age=60"),
    ("stamping", {"cookie": "session=alice"}, "private, max-age=0"),
    ("defaults", {"cookie": "session=alice"}, None),
], ids=["authorization", "cookie under a rule", "cookie, no rule"])
def test_credentials_on_a_hit(kind: str, cdn: str, header: dict[str, str], private: str | None) -> None:
    """Authorization, and a Cookie where a rule or the default policy gives the lifetime, make
    the CDN layer stamp a hit private: such a hit takes the full path. Without a rule a Cookie
    changes nothing, and the early path answers as the full path would."""
    clock = FakeClock(START_TIME + 0.125)
    machine = StackEarlyMatchesFull.__new__(StackEarlyMatchesFull)
    machine.kind, machine.queries, machine.loop = kind, {"/blog/p2": "cc=max-age=60"}, (
        asyncio.new_event_loop() if kind == "asgi" else None)
    machine.root, full_root, runtime = build(kind, clock, Origin(clock), CDN_SETTINGS[cdn])
    try:
        machine.call(machine.root, "GET", "/blog/p2", {})
        status, out, _ = machine.call(machine.root, "GET", "/blog/p2", header)
        assert status == 200 and "; hit" in dict(out)["cache-status"]
        assert machine.call(full_root, "GET", "/blog/p2", header)[1] == out
        if private is not None:
            assert dict(out)["cache-control"] == private
        else:
            assert machine.call(machine.root, "GET", "/blog/p2", {})[1] == out
    finally:
        runtime.close()
        if machine.loop is not None:
            machine.loop.close()


def histogram(route: str) -> dict[str, float]:
    found = {}
    for metric in REGISTRY.collect():
        for sample in metric.samples:
            if (sample.labels.get("route") == route and sample.name.startswith("scalekit_http_request")
                    and not sample.name.endswith("_created")):
                found[sample.name + sample.labels.get("le", "")] = sample.value
    return found


@pytest.mark.parametrize("multiprocess", [False, True])
def test_the_ledger_counts_what_the_layer_records(multiprocess: bool, monkeypatch: Any, tmp_path: Any) -> None:
    """Hits counted through the ledger land in the same series and buckets as requests the
    metrics layer records one by one (a wall clock stepping back counts as no time)."""
    if multiprocess:
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    policy = metrics_layer.MetricsPolicy(load_config({}, environ={}, cwd="/nonexistent").metrics)
    ledger = HitLedger(policy)
    durations = [0.0001, 0.003, -0.5, 20.0, 0.0004, 0.26]
    line = ledger.line("GET", "/items/7", f"/ledger/{multiprocess}", 200)
    assert line is not None
    for seconds in durations:
        line(seconds)
        policy.record("GET", f"/layer/{multiprocess}", 200, max(seconds, 0.0))
    ledger.flush()
    assert histogram(f"/ledger/{multiprocess}") == histogram(f"/layer/{multiprocess}")
    assert histogram(f"/ledger/{multiprocess}")["scalekit_http_requests_total"] == len(durations)
    assert ledger.line("GET", "/metrics", "/ledger", 200) is None  # the scrape is never measured
