"""The metrics layer: what moves per request, bounded labels, the protected /metrics endpoint,
exposition validity (prometheus_client's parser and promtool), multiprocess gunicorn."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from base64 import b64encode
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

import scalekit
from scalekit.metrics import layer as metrics
from tests.direct import asgi_scope, call_asgi, call_wsgi

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
TOKEN = "s3cret-token-0123456789"


def parse(body: bytes) -> Samples:
    """Every sample of an exposition, keyed by (name, labels)."""
    samples: Samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def hello_wsgi(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    if environ["PATH_INFO"].startswith("/items/"):
        scalekit.set_route("/items/{id}")
    if environ["PATH_INFO"] == "/fail":
        raise RuntimeError("app failed")
    status = "404 Not Found" if environ["PATH_INFO"] == "/missing" else "200 OK"
    start_response(status, [("Content-Type", "text/plain")])
    return [b"hello"]


async def hello_asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["path"].startswith("/items/"):
        scalekit.set_route("/items/{id}")
    if scope["path"] == "/fail":
        raise RuntimeError("app failed")
    status = 404 if scope["path"] == "/missing" else 200
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"hello"})


class Driver:
    """Make requests to a wrapped app and scrape it, the same way for WSGI and ASGI."""

    def __init__(self, kind: str, **settings: Any) -> None:
        self.kind = kind
        app = hello_wsgi if kind == "wsgi" else hello_asgi
        self.app = scalekit.wrap(app, cdn=False, cache=False, pool=False, **settings)

    def request(self, method: str = "GET", path: str = "/", *, client: str = "127.0.0.1",
                authorization: str | None = None) -> tuple[int, dict[str, str], bytes]:
        if self.kind == "wsgi":
            headers = [("Authorization", authorization)] if authorization else []
            result = call_wsgi(self.app, method, path, remote_addr=client, headers=headers)
            return result.status_code, {k.lower(): v for k, v in result.headers}, result.body
        asgi_headers = [(b"authorization", authorization.encode())] if authorization else []
        outcome = call_asgi(self.app, asgi_scope(method, path, headers=asgi_headers, client=(client, 1234)))
        return outcome.status, {k.decode(): v.decode() for k, v in outcome.headers}, outcome.body

    def scrape(self, path: str = "/metrics") -> Samples:
        status, headers, body = self.request("GET", path)
        assert status == 200, body
        assert headers["content-type"].startswith("text/plain; version=0.0.4")
        return parse(body)


@pytest.fixture(params=["wsgi", "asgi"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_counters_and_histogram_move_with_requests(kind: str) -> None:
    driver = Driver(kind)
    before = driver.scrape()
    for _ in range(3):
        driver.request("GET", "/")
    driver.request("POST", "/items/7")
    driver.request("GET", "/missing")
    after = driver.scrape()

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("scalekit_http_requests_total", method="GET", route="unmatched", status="2xx") == 3
    assert delta("scalekit_http_requests_total", method="POST", route="/items/{id}", status="2xx") == 1
    assert delta("scalekit_http_requests_total", method="GET", route="unmatched", status="4xx") == 1
    assert delta("scalekit_http_request_duration_seconds_count", method="GET", route="unmatched") == 4
    assert delta("scalekit_http_request_duration_seconds_bucket", method="GET", route="unmatched", le="+Inf") == 4
    assert delta("scalekit_http_request_duration_seconds_sum", method="GET", route="unmatched") > 0
    # The scrapes themselves are not requests of the app.
    assert delta("scalekit_http_requests_total", method="GET", route="unmatched", status="2xx") == 3


def test_failures_count_as_5xx_and_leave_nothing_in_flight(kind: str) -> None:
    driver = Driver(kind)
    before = driver.scrape()
    with pytest.raises(RuntimeError):
        driver.request("GET", "/fail")
    after = driver.scrape()
    assert value(after, "scalekit_http_requests_total", method="GET", route="unmatched", status="5xx") \
        - value(before, "scalekit_http_requests_total", method="GET", route="unmatched", status="5xx") == 1
    assert value(after, "scalekit_http_requests_in_flight") == value(before, "scalekit_http_requests_in_flight")


def test_unknown_methods_are_counted_as_other(kind: str) -> None:
    driver = Driver(kind)
    driver.request("BREW", "/")
    assert value(driver.scrape(), "scalekit_http_requests_total", method="other", route="unmatched", status="2xx") >= 1


def test_in_flight_gauge_covers_the_streamed_body() -> None:
    """WSGI: a request is in flight until the server closes its body, not when the app returns."""
    driver = Driver("wsgi")
    baseline = value(driver.scrape(), "scalekit_http_requests_in_flight")

    def streaming(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"a"
        yield b"b"

    app = scalekit.wrap(streaming, cdn=False, cache=False, pool=False)
    from tests.direct import wsgi_environ
    body = app(wsgi_environ(), lambda status, headers, exc_info=None: None)
    chunks = iter(body)
    next(chunks)
    assert value(driver.scrape(), "scalekit_http_requests_in_flight") == baseline + 1
    body.close()  # type: ignore[attr-defined]
    assert value(driver.scrape(), "scalekit_http_requests_in_flight") == baseline


def test_a_whole_list_body_is_counted_when_the_app_returns_close_or_not() -> None:
    """WSGI: a list body is the whole response, so the request is counted (and out of flight)
    when the app returns, as a plain hit is; a server that never calls close() on a list (granian
    sends one without it) still has it counted."""
    driver = Driver("wsgi")
    before = driver.scrape()
    app = scalekit.wrap(hello_wsgi, cdn=False, cache=False, pool=False)
    from tests.direct import wsgi_environ
    body = app(wsgi_environ(path="/items/7"), lambda status, headers, exc_info=None: None)
    assert body == [b"hello"]  # handed on as the app's own list: no close() to wait for
    after = driver.scrape()
    counted = {"method": "GET", "route": "/items/{id}", "status": "2xx"}
    assert value(after, "scalekit_http_requests_total", **counted) == value(
        before, "scalekit_http_requests_total", **counted) + 1
    assert value(after, "scalekit_http_requests_in_flight") == value(before, "scalekit_http_requests_in_flight")


def test_in_flight_gauge_during_an_asgi_request() -> None:
    driver = Driver("wsgi")  # scrapes the same process-wide registry, without an event loop
    seen: list[float] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(value(driver.scrape(), "scalekit_http_requests_in_flight"))
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    baseline = value(driver.scrape(), "scalekit_http_requests_in_flight")
    call_asgi(scalekit.wrap(app, cdn=False, cache=False, pool=False))
    assert seen == [baseline + 1]
    assert value(driver.scrape(), "scalekit_http_requests_in_flight") == baseline


def test_ten_thousand_distinct_paths_create_no_new_series(kind: str) -> None:
    driver = Driver(kind)
    driver.request("GET", "/warm-up")
    before = driver.scrape()
    for index in range(10_000 if kind == "wsgi" else 2_000):
        driver.request("GET", f"/flooded-catalogue/{index}?page={index}")
    after = driver.scrape()
    assert set(after) == set(before)
    # Other tests' apps share the process registry; this flood's paths are unique to it.
    assert not any("/flooded-catalogue/" in str(labels) for _, labels in after)


def test_route_labels_are_capped_even_if_an_app_names_raw_paths(monkeypatch: pytest.MonkeyPatch,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(metrics, "MAX_ROUTE_LABELS", 5)

    def raw_routes(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        scalekit.set_route(environ["PATH_INFO"])  # the mistake the cap guards against
        start_response("200 OK", [])
        return [b""]

    app = scalekit.wrap(raw_routes, cdn=False, cache=False, pool=False)
    with caplog.at_level(logging.WARNING, logger="scalekit"):
        for index in range(20):
            call_wsgi(app, "GET", f"/raw-{index}")
    samples = Driver("wsgi").scrape()
    routes = {dict(labels).get("route") for name, labels in samples if name == "scalekit_http_requests_total"}
    raw = {route for route in routes if route and route.startswith("/raw-")}
    assert len(raw) == 3  # 5 labels per wrap: unmatched, overflow and three raw ones
    assert "overflow" in routes
    assert sum("distinct route labels" in record.message for record in caplog.records) == 1


# --------------------------------------------------------------------------- /metrics access

ACCESS = [
    pytest.param({}, "127.0.0.1", None, 200, id="default: loopback allowed"),
    pytest.param({}, "::1", None, 200, id="default: IPv6 loopback allowed"),
    pytest.param({}, "::ffff:127.0.0.1", None, 200, id="default: IPv4-mapped loopback allowed"),
    pytest.param({}, "10.1.2.3", None, 403, id="default: other addresses refused"),
    pytest.param({}, "not-an-ip", None, 403, id="default: garbage address refused"),
    pytest.param({"allow_from": ["10.0.0.0/8"]}, "10.1.2.3", None, 200, id="allowlist: inside"),
    pytest.param({"allow_from": ["10.0.0.0/8"]}, "127.0.0.1", None, 403, id="allowlist replaces loopback"),
    pytest.param({"token": TOKEN}, "127.0.0.1", None, 401, id="token: loopback needs it too"),
    pytest.param({"token": TOKEN}, "10.1.2.3", f"Bearer {TOKEN}", 200, id="token: right token"),
    pytest.param({"token": TOKEN}, "10.1.2.3", f"bearer {TOKEN}", 200, id="token: scheme case-insensitive"),
    pytest.param({"token": TOKEN}, "10.1.2.3", "Bearer wrong-token-wrong-token", 401, id="token: wrong token"),
    pytest.param({"token": TOKEN}, "10.1.2.3", f"Basic {TOKEN}", 401, id="token: wrong scheme"),
    pytest.param({"token": TOKEN}, "10.1.2.3", "Basic " + b64encode(f"prometheus:{TOKEN}".encode()).decode(),
                 200, id="token: as the password of Basic credentials"),
    pytest.param({"token": TOKEN}, "10.1.2.3", "Basic " + b64encode(f"{TOKEN}:wrong".encode()).decode(),
                 401, id="token: as a Basic user name, not its password"),
    pytest.param({"token": TOKEN, "allow_from": ["10.0.0.0/8"]}, "10.9.9.9", None, 200,
                 id="token + allowlist: allowed network without token"),
    pytest.param({"token": TOKEN, "allow_from": ["10.0.0.0/8"]}, "192.0.2.1", None, 401,
                 id="token + allowlist: other network needs the token"),
]


@pytest.mark.parametrize(("settings", "client", "authorization", "expected"), ACCESS)
def test_metrics_endpoint_protection(kind: str, settings: dict[str, Any], client: str,
                                     authorization: str | None, expected: int) -> None:
    driver = Driver(kind, metrics=settings)
    status, headers, body = driver.request("GET", "/metrics", client=client, authorization=authorization)
    assert status == expected
    assert headers["cache-control"] == "no-store"
    if expected == 200:
        assert b"scalekit_http_requests_total" in body
    else:
        assert b"scalekit_" not in body
    if expected == 401:
        assert headers["www-authenticate"] == 'Bearer realm="metrics"'
    else:
        assert "www-authenticate" not in headers


def test_configurable_path_and_exclusions(kind: str) -> None:
    driver = Driver(kind, metrics={"path": "/_internal/metrics", "exclude_paths": ["/health"]})
    status, _, body = driver.request("GET", "/metrics")
    assert (status, body) == (200, b"hello")  # the app's own route now
    before = driver.scrape("/_internal/metrics")
    driver.request("GET", "/health")
    driver.request("GET", "/healthz/deep")
    after = driver.scrape("/_internal/metrics")
    assert value(after, "scalekit_http_requests_total", method="GET", route="unmatched", status="2xx") \
        == value(before, "scalekit_http_requests_total", method="GET", route="unmatched", status="2xx")


def test_head_on_metrics_has_no_body(kind: str) -> None:
    status, headers, body = Driver(kind).request("HEAD", "/metrics")
    assert status == 200 and body == b"" and int(headers["content-length"]) > 0


def test_metrics_layer_switched_off_serves_no_endpoint(kind: str) -> None:
    assert Driver(kind, metrics=False).request("GET", "/metrics")[2] == b"hello"


def test_exposition_passes_promtool(promtool: str) -> None:
    driver = Driver("wsgi")
    driver.request("GET", "/items/1")
    status, _, body = driver.request("GET", "/metrics")
    assert status == 200
    checked = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, timeout=60,
                             check=False)
    assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()


# --------------------------------------------------------------------------- gunicorn, several workers


@pytest.mark.server
def test_multiprocess_gunicorn_sums_counters_and_live_in_flight(tmp_path: Path, promtool: str) -> None:
    import httpx

    from tests.servers import run_server
    metrics_dir = tmp_path / "prometheus"
    (metrics_dir).mkdir()
    (metrics_dir / "counter_999999.db").write_bytes(b"stale file of an earlier run")
    env = {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    with run_server("gunicorn", "tests.apps.metrics_app:wrapped", env=env, workers=3,
                    extra_args=["-c", "python:scalekit.gunicorn_conf"]) as url, \
            httpx.Client(base_url=url, timeout=20) as client:
        # What a worker killed while prometheus_client was creating its file leaves for good (the
        # file exists at 0 bytes before it is sized, an open prometheus_client bug), and what a scrape
        # finds while a new worker creates one: neither may fail the scrape.
        (metrics_dir / "counter_888888.db").write_bytes(b"")
        pids = set()
        for index in range(30):
            pids.add(client.get("/pid", headers={"Connection": "close"}).text)
            client.get(f"/items/{index}", headers={"Connection": "close"})

        def scrape() -> Samples:
            response = client.get("/metrics", headers={"Connection": "close"})
            assert response.status_code == 200
            return parse(response.content)

        # Each worker adds what it counted to its file within the flush interval (0.5 s).
        _wait_until(lambda: value(scrape(), "scalekit_http_requests_total", method="GET", route="unmatched",
                                  status="2xx") == 30)
        first = scrape()
        assert value(first, "scalekit_http_requests_total", method="GET", route="/items/{id}", status="2xx") == 30
        assert value(first, "scalekit_http_requests_total", method="GET", route="unmatched", status="2xx") == 30

        # Two requests held open on two workers; the scrape lands on the third.
        gates = [tmp_path / "gate-1", tmp_path / "gate-2"]
        streams = [httpx.stream("GET", f"{url}/hold", params={"gate": str(gate)}, timeout=20) for gate in gates]
        bodies = [stream.__enter__().iter_raw() for stream in streams]
        try:
            holders = [int(next(body).split()[1]) for body in bodies]
            # Sync workers serve one request at a time, so the two holders are two workers
            # (the sequential requests above may all have landed on one: the kernel decides).
            pids.update(str(pid) for pid in holders)
            assert value(scrape(), "scalekit_http_requests_in_flight") == 2
            # The first holder dies mid-request: its in-flight count goes with it (livesum over
            # live workers, after gunicorn's child_exit hook), its counters stay.
            os.kill(holders[0], signal.SIGKILL)
            _wait_until(lambda: value(scrape(), "scalekit_http_requests_in_flight") == 1)
            gates[1].touch()
            assert b"".join(bodies[1]) == b"released"
        finally:
            for gate in gates:
                gate.touch()
            for stream in streams:
                with contextlib.suppress(httpx.HTTPError):
                    stream.__exit__(None, None, None)
        # The server closes a body just after sending its end: poll until it has.
        _wait_until(lambda: value(scrape(), "scalekit_http_requests_in_flight") == 0)
        final = scrape()
        assert value(final, "scalekit_http_requests_total", method="GET", route="/items/{id}", status="2xx") == 30
        assert value(final, "scalekit_http_requests_total", method="GET", route="unmatched", status="2xx") >= 30
        body = client.get("/metrics").content
    checked = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, timeout=60,
                             check=False)
    assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()
    assert len(pids) >= 2  # the requests really were served by several workers


def _wait_until(condition: Callable[[], bool], timeout_seconds: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


@pytest.mark.server
def test_metrics_under_uvicorn() -> None:
    import httpx

    from tests.servers import run_server
    with run_server("uvicorn", "tests.apps.plain:wrapped_asgi_app") as url:
        for _ in range(3):
            httpx.get(f"{url}/x", timeout=20)
        samples = parse(httpx.get(f"{url}/metrics", timeout=20).content)
    assert value(samples, "scalekit_http_requests_total", method="GET", route="unmatched", status="2xx") == 3


def test_record_uses_cached_children() -> None:
    policy = metrics.MetricsPolicy(scalekit.MetricsConfig())
    policy.record("GET", "unmatched", 200, 0.001)
    cached = dict(policy._children)
    policy.record("GET", "unmatched", 200, 0.001)
    assert policy._children == cached and len(cached) == 1


@pytest.mark.parametrize("internals", [True, False], ids=["value handles", "public API fallback"])
def test_recorded_histogram_matches_prometheus_semantics(internals: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast path files each observation in the same bucket Histogram.observe would."""
    if not internals:
        monkeypatch.setattr(metrics, "histogram_handles", lambda counter, histogram: (None, counter, histogram, ()))
    policy = metrics.MetricsPolicy(scalekit.MetricsConfig())
    route = f"/histogram-{internals}"
    observations = [0.0001, 0.0005, 0.0007, 0.003, 0.5, 100.0]  # 0.0005 sits exactly on a bound
    for seconds in observations:
        policy.record("GET", route, 200, seconds)
    samples = Driver("wsgi").scrape()
    for bound in ("0.0005", "0.001", "0.005", "1.0", "10.0", "+Inf"):
        expected = sum(1 for seconds in observations if seconds <= float(bound))
        assert value(samples, "scalekit_http_request_duration_seconds_bucket",
                     method="GET", route=route, le=bound) == expected, bound
    assert value(samples, "scalekit_http_request_duration_seconds_sum", method="GET", route=route) \
        == pytest.approx(sum(observations))
    assert value(samples, "scalekit_http_requests_total", method="GET", route=route, status="2xx") == 6


@pytest.mark.server
def test_multiprocess_gunicorn_reports_the_shared_disk_tier_once(tmp_path: Path, promtool: str) -> None:
    """Two workers share one disk tier: /metrics gives its size as the file holds it (the
    latest a worker saw, once their writer threads have written), not the sum of each worker's
    view; the memory tiers, one per worker, are still summed."""
    import httpx

    from scalekit.cache.tiers.disk import DiskTier
    from tests.servers import run_server
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "DISK_APP_STATE": str(tmp_path / "state")}
    with run_server("gunicorn", "tests.apps.disk_app:wrapped", env=env, workers=2,
                    extra_args=["-c", "python:scalekit.gunicorn_conf"]) as url, \
            httpx.Client(base_url=url, timeout=20) as client:
        pids: set[str] = set()
        index = 0
        while index < 40 or (len(pids) < 2 and index < 400):  # the kernel spreads connections
            pids.add(client.get("/pid", headers={"Connection": "close"}).text)
            assert client.get(f"/items/{index}", headers={"Connection": "close"}).status_code == 200
            index += 1
        assert len(pids) == 2  # both workers wrote to the disk tier
        disk = DiskTier(tmp_path / "state" / "cache", background_writes=False)
        deadline = time.monotonic() + 20
        while True:  # the workers' writer threads land their last batches within moments
            samples = parse(client.get("/metrics").content)
            if value(samples, "scalekit_cache_bytes", tier="disk") == disk.current_bytes or \
                    time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert disk.current_bytes > 0
        assert value(samples, "scalekit_cache_bytes", tier="disk") == disk.current_bytes
        body = client.get("/metrics").content
    assert value(samples, "scalekit_cache_max_bytes", tier="disk") == 512 * 1024 * 1024  # not 2x
    assert value(samples, "scalekit_cache_max_bytes", tier="memory") == 2 * 64 * 1024 * 1024
    checked = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, timeout=60,
                             check=False)
    assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()


def test_the_value_handles_fit_this_prometheus_client() -> None:
    """scalekit/metrics/handles.py reads prometheus_client's children (value objects, a
    histogram's sum and buckets) and wraps ``collect``: this fails on a release that lays them
    out differently, rather than letting the hot paths fall back to the public API unnoticed."""
    from bisect import bisect_left

    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

    from scalekit.metrics import handles

    registry = CollectorRegistry()
    counter = Counter("handles_probe", "probe", ["a"], registry=registry)
    histogram = Histogram("handles_probe_seconds", "probe", ["a"], buckets=(0.1, 1.0), registry=registry)
    gauge = Gauge("handles_probe_gauge", "probe", registry=registry)
    assert handles.fast_handles(counter.labels("x"), histogram.labels("x"), gauge), (
        "prometheus_client changed its metric objects: update scalekit/metrics/handles.py")
    count, total, buckets, bounds = handles.histogram_handles(counter.labels("x"), histogram.labels("x"))
    count.inc(1)
    total.inc(0.5)
    buckets[bisect_left(bounds, 0.5)].inc(1)
    handles.gauge_increment(gauge).inc(3)
    handles.incrementer(counter.labels("y"))()
    tally = handles.Tally((counter,), (handles.counter_handle(counter.labels("z")).inc,))
    tally.tick()
    tally.tick()
    read = registry.get_sample_value
    assert read("handles_probe_total", {"a": "x"}) == 1
    assert read("handles_probe_seconds_sum", {"a": "x"}) == 0.5
    assert read("handles_probe_seconds_bucket", {"a": "x", "le": "0.1"}) == 0
    assert read("handles_probe_seconds_bucket", {"a": "x", "le": "1.0"}) == 1
    assert read("handles_probe_seconds_count", {"a": "x"}) == 1
    assert read("handles_probe_gauge", {}) == 3
    assert read("handles_probe_total", {"a": "y"}) == 1
    assert read("handles_probe_total", {"a": "z"}) == 2  # the tally flushed before the read
