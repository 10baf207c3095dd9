"""Per-request overhead of ``scalekit.wrap``: all layers off, and the metrics layer on.

Baseline: the bare app, measured in the same run. In-process figures call the app directly
(WSGI: call, iterate, close; ASGI: one event loop awaiting the app), interleaving the variants
in each round and taking the median over rounds of (variant - bare) per request. They are CPU
time of the measuring thread (``time.thread_time``), so other processes competing for the
cores (a shared CI machine) do not inflate them; wall time is printed beside. Over HTTP,
wrk drives gunicorn (WSGI) and uvicorn (ASGI), one worker each, and the overhead is the
difference of the mean service times (1 / requests per second).

    python bench/overhead.py                 # everything (HTTP part only if wrk is installed)
    python bench/overhead.py --no-http --rounds 31 --requests 50000
    python bench/overhead.py --strict        # exit 1 if an in-process target is missed

Targets (in-process): all layers off <= 3 us per request; metrics on <= 15 us.

It also prints what scalekit/metrics/handles.py (prometheus_client's value objects instead of
its public calls) buys per request and per plain cache hit, beside those targets.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import scalekit

TARGETS_US = {"all layers off": 3.0, "metrics on": 15.0}
LAYERS_OFF = {"metrics": False, "cdn": False, "cache": False, "pool": False}
METRICS_ONLY = {"cdn": False, "cache": False, "pool": False}
BODY = b"hello, world\n"


def bare_wsgi(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))])
    return [BODY]


async def bare_asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(BODY)).encode())]})
    await send({"type": "http.response.body", "body": BODY})


# Module-level, so gunicorn/uvicorn can import them as bench.overhead:<name>.
off_wsgi = scalekit.wrap(bare_wsgi, **LAYERS_OFF)
metrics_wsgi = scalekit.wrap(bare_wsgi, **METRICS_ONLY)
off_asgi = scalekit.wrap(bare_asgi, **LAYERS_OFF)
metrics_asgi = scalekit.wrap(bare_asgi, **METRICS_ONLY)

VARIANTS = {"bare app": "bare", "all layers off": "off", "metrics on": "metrics"}


# --------------------------------------------------------------------------- in-process


def _environ() -> dict[str, Any]:
    return {"REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": "/products/42",
            "QUERY_STRING": "", "SERVER_NAME": "bench", "SERVER_PORT": "80", "REMOTE_ADDR": "127.0.0.1",
            "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_HOST": "bench", "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(), "wsgi.errors": sys.stderr,
            "wsgi.multithread": False, "wsgi.multiprocess": False, "wsgi.run_once": False}


def time_wsgi(app: Callable[..., Any], requests: int) -> tuple[float, float]:
    """(CPU, wall) seconds per request: a fresh environ copy, call, iterate, close."""
    base = _environ()

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        return None

    started, wall = time.thread_time(), time.perf_counter()
    for _ in range(requests):
        body = app(dict(base), start_response)
        for _chunk in body:
            pass
        close = getattr(body, "close", None)
        if close is not None:
            close()
    return (time.thread_time() - started) / requests, (time.perf_counter() - wall) / requests


def time_asgi(app: Callable[..., Any], requests: int) -> tuple[float, float]:
    """(CPU, wall) seconds per request, awaiting the app in one running event loop."""
    base = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
            "scheme": "http", "path": "/products/42", "raw_path": b"/products/42", "query_string": b"",
            "root_path": "", "headers": [(b"host", b"bench")], "client": ("127.0.0.1", 5000),
            "server": ("bench", 80)}
    request = {"type": "http.request", "body": b"", "more_body": False}

    async def receive() -> dict[str, Any]:
        return request

    async def send(message: dict[str, Any]) -> None:
        return None

    async def loop() -> tuple[float, float]:
        started, wall = time.thread_time(), time.perf_counter()
        for _ in range(requests):
            await app(dict(base), receive, send)
        return (time.thread_time() - started) / requests, (time.perf_counter() - wall) / requests

    return asyncio.run(loop())


def in_process(kind: str, rounds: int, requests: int) -> dict[str, tuple[float, float, float]]:
    """variant -> medians in us: (CPU per request, CPU overhead over bare in the same round,
    wall per request)."""
    apps = {name: globals()[f"{key}_{kind}"] for name, key in VARIANTS.items()}
    timer = time_wsgi if kind == "wsgi" else time_asgi
    for app in apps.values():  # warm up: label children, code paths, allocator
        timer(app, requests // 10 or 1)
    cpu: dict[str, list[float]] = {name: [] for name in apps}
    wall: dict[str, list[float]] = {name: [] for name in apps}
    overheads: dict[str, list[float]] = {name: [] for name in apps}
    names = list(apps)
    for round_index in range(rounds):
        order = names[round_index % len(names):] + names[:round_index % len(names)]
        measured = {name: timer(apps[name], requests) for name in order}
        for name in names:
            cpu[name].append(measured[name][0] * 1e6)
            wall[name].append(measured[name][1] * 1e6)
            overheads[name].append((measured[name][0] - measured["bare app"][0]) * 1e6)
    return {name: (statistics.median(cpu[name]), statistics.median(overheads[name]),
                   statistics.median(wall[name])) for name in names}


def handles_gain(calls: int, rounds: int) -> dict[str, tuple[float, float]]:
    """What the value handles buy: (public API, handles) medians in us per operation, for a
    request's count and duration, and for a plain hit's two counters (cache outcome, L1 lookup)."""
    import timeit

    from prometheus_client import CollectorRegistry, Counter, Histogram

    from scalekit.metrics import handles
    from scalekit.metrics.instruments import DURATION_BUCKETS_SECONDS

    registry = CollectorRegistry()
    requests = Counter("gain_requests", "probe", ["route"], registry=registry).labels("/p")
    duration = Histogram("gain_seconds", "probe", ["route"], buckets=DURATION_BUCKETS_SECONDS,
                         registry=registry).labels("/p")
    outcome = Counter("gain_outcomes", "probe", ["o"], registry=registry)
    lookups = Counter("gain_lookups", "probe", ["o"], registry=registry)
    count, total, buckets, bounds = handles.histogram_handles(requests, duration)
    hit, lookup = outcome.labels("hit"), lookups.labels("hit")
    hit_handle, lookup_handle = handles.counter_handle(hit), handles.counter_handle(lookup)
    tally = handles.Tally((outcome, lookups), (hit_handle.inc, lookup_handle.inc))
    from bisect import bisect_left

    def public_request() -> None:
        requests.inc()
        duration.observe(0.0002)

    def handled_request() -> None:
        count.inc(1)
        total.inc(0.0002)
        buckets[bisect_left(bounds, 0.0002)].inc(1)

    def public_hit() -> None:
        hit.inc()
        lookup.inc()

    cases = {"a request's count and duration": (public_request, handled_request),
             "a plain hit's two counters": (public_hit, tally.tick)}
    return {name: tuple(statistics.median(timeit.timeit(fn, number=calls) for _ in range(rounds))
                        / calls * 1e6 for fn in pair)  # type: ignore[misc]
            for name, pair in cases.items()}


# --------------------------------------------------------------------------- over HTTP


def over_http(kind: str, seconds: int, connections: int) -> dict[str, float] | None:
    """variant -> requests per second under wrk, one server worker; None if not runnable."""
    wrk = shutil.which("wrk")
    server = "gunicorn" if kind == "wsgi" else "uvicorn"
    if wrk is None or not _importable(server):
        return None
    from tests.servers import run_server

    results: dict[str, float] = {}
    for name, key in VARIANTS.items():
        extra = ["--worker-class", "gthread", "--threads", "4"] if server == "gunicorn" else ["--no-access-log"]
        with run_server(server, f"bench.overhead:{key}_{kind}", extra_args=extra) as url:  # type: ignore[arg-type]
            subprocess.run([wrk, "-t1", "-c4", "-d1s", url + "/products/42"], capture_output=True, check=False)
            output = subprocess.run([wrk, "-t1", f"-c{connections}", f"-d{seconds}s", url + "/products/42"],
                                    capture_output=True, text=True, check=False).stdout
        match = re.search(r"Requests/sec:\s+([\d.]+)", output)
        results[name] = float(match.group(1)) if match else float("nan")
    return results


def _importable(module: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(module) is not None


# --------------------------------------------------------------------------- report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--requests", type=int, default=20_000, help="requests per round and variant")
    parser.add_argument("--no-http", action="store_true", help="skip the wrk runs")
    parser.add_argument("--http-seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--strict", action="store_true", help="exit 1 if an in-process target is missed")
    args = parser.parse_args()

    missed = False
    print(f"scalekit wrap() overhead; python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}")
    for kind in ("wsgi", "asgi"):
        results = in_process(kind, args.rounds, args.requests)
        print(f"\nin-process {kind.upper()} (median of {args.rounds} rounds x {args.requests} requests; "
              "CPU time, wall time in brackets)")
        for name, (per_request_us, overhead_us, wall_us) in results.items():
            line = f"  {name:<16} {per_request_us:8.2f} us/request ({wall_us:6.2f})"
            if name in TARGETS_US:
                target = TARGETS_US[name]
                verdict = "ok" if overhead_us <= target else "MISSED"
                missed |= overhead_us > target
                line += f"   overhead {overhead_us:6.2f} us   target <= {target:g} us   {verdict}"
            print(line)
    print("\nprometheus_client value handles (scalekit/metrics/handles.py), us per operation:")
    for name, (public_us, handled_us) in handles_gain(50_000, 7).items():
        print(f"  {name:<32} public API {public_us:5.2f}   handles {handled_us:5.2f}   "
              f"saves {public_us - handled_us:5.2f} us per request (metrics on: target <= 15 us; "
              "a plain hit: defaults <= 1.5x the cache alone, about 1-1.5 us of budget)")
    if not args.no_http:
        for kind in ("wsgi", "asgi"):
            server = "gunicorn (gthread, 1 worker)" if kind == "wsgi" else "uvicorn (1 worker)"
            rates = over_http(kind, args.http_seconds, args.connections)
            if rates is None:
                print(f"\nover HTTP {kind.upper()}: skipped (wrk or the server is not installed)")
                continue
            print(f"\nover HTTP {kind.upper()}: wrk -c{args.connections} -d{args.http_seconds}s against {server}")
            bare_us = 1e6 / rates["bare app"]
            for name, rate in rates.items():
                line = f"  {name:<16} {rate:10.0f} requests/s   {1e6 / rate:8.1f} us/request"
                if name != "bare app":
                    line += f"   overhead {1e6 / rate - bare_us:6.1f} us (no target; noisy on a shared machine)"
                print(line)
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main())
