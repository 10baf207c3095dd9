"""Cost of a memory cache hit, in process and over HTTP, beside the bare app in the same run:
the cache layer alone, and the layers a user gets by default (metrics and CDN around the cache).

Targets:
- in process: a memory hit with the cache alone costs <= 20 us per request, WSGI and ASGI (the
  bare app is shown beside it: a hit replaces the app, so it can even be cheaper than a trivial
  app); with the default layers it costs at most 1.5x the cache alone, with a plain WSGI and
  ASGI app and with Flask and Starlette apps (the outer layers must not run per hit);
- over HTTP with wrk, same server: the cached endpoint answers >= 90% of the requests/s of a
  constant "hello" app, with the cache alone and with the default layers (gunicorn for WSGI;
  uvicorn for ASGI, with its pure-Python HTTP stack and with httptools + uvloop).

Run: ``python bench/cache_hit.py`` (``--quick`` for fewer repeats, ``--no-http`` to skip wrk).
Exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

HIT_TARGET_US = 20.0
DEFAULTS_TARGET_RATIO = 1.5  # default layers / cache alone, per hit in process
HTTP_TARGET_RATIO = 0.90
BODY = b"hello, world\n"
HEADERS = [("content-type", "text/plain"), ("content-length", str(len(BODY))),
           ("cache-control", "max-age=3600")]


def wsgi_hello(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", list(HEADERS))
    return [BODY]


async def asgi_hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(k.encode(), v.encode()) for k, v in HEADERS]})
    await send({"type": "http.response.body", "body": BODY})


ALLOWED_HOSTS = ["bench.test", "127.0.0.1"]


def cache_only(app: Any) -> Any:
    """``app`` wrapped with the cache layer alone (memory tier), as scalekit.wrap would."""
    import scalekit

    return scalekit.wrap(app, metrics=False, cdn=False, pool=False,
                         cache={"disk": {"enabled": False}}, allowed_hosts=ALLOWED_HOSTS)


def defaults(app: Any) -> Any:
    """``app`` wrapped with the default layers (metrics, CDN, cache, pool); the disk tier off,
    as for :func:`cache_only` (a plain hit is answered from L1 either way)."""
    import scalekit

    return scalekit.wrap(app, cache={"disk": {"enabled": False}}, allowed_hosts=ALLOWED_HOSTS)


def flask_hello() -> Any:
    """The hello page as a Flask app (None when Flask is not installed)."""
    try:
        from flask import Flask
    except ImportError:
        return None
    app = Flask(__name__)
    app.add_url_rule("/hello", "hello", lambda: (BODY, 200, {"cache-control": "max-age=3600"}))
    return app


def starlette_hello() -> Any:
    """The hello page as a Starlette app (None when Starlette is not installed)."""
    try:
        from starlette.applications import Starlette
        from starlette.responses import Response
        from starlette.routing import Route
    except ImportError:
        return None

    async def hello(request: Any) -> Any:
        return Response(BODY, media_type="text/plain", headers={"cache-control": "max-age=3600"})

    return Starlette(routes=[Route("/hello", hello)])


# ------------------------------------------------------------------------------ in process

ENVIRON = {"REQUEST_METHOD": "GET", "PATH_INFO": "/hello", "QUERY_STRING": "", "SERVER_NAME": "bench.test",
           "SERVER_PORT": "80", "HTTP_HOST": "bench.test", "wsgi.url_scheme": "http",
           "HTTP_ACCEPT": "*/*", "HTTP_USER_AGENT": "bench", "HTTP_ACCEPT_ENCODING": "gzip"}
SCOPE = {"type": "http", "method": "GET", "path": "/hello", "query_string": b"", "scheme": "http",
         "server": ("bench.test", 80), "http_version": "1.1",
         "headers": [(b"host", b"bench.test"), (b"accept", b"*/*"), (b"user-agent", b"bench"),
                     (b"accept-encoding", b"gzip")]}


# CPU time of this process per request: on a machine shared with other jobs, wall time would
# count the time other processes held the CPU. (Single-threaded loop: CPU time = work done.)
clock = time.process_time


def per_request_wsgi(app: Any, n: int) -> float:
    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        return None

    started = clock()
    for _ in range(n):
        body = app(dict(ENVIRON), start_response)
        for _chunk in body:
            pass
        close = getattr(body, "close", None)
        if close is not None:
            close()
    return (clock() - started) / n * 1e6


def per_request_asgi(app: Any, n: int) -> float:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        return None

    async def loop() -> float:
        started = clock()
        for _ in range(n):
            await app(dict(SCOPE), receive, send)
        return (clock() - started) / n * 1e6

    return asyncio.run(loop())


def in_process(repeats: int, n: int) -> bool:
    ok = True
    for kind, make, measure in (("WSGI", lambda: wsgi_hello, per_request_wsgi),
                                ("Flask", flask_hello, per_request_wsgi),
                                ("ASGI", lambda: asgi_hello, per_request_asgi),
                                ("Starlette", starlette_hello, per_request_asgi)):
        bare = make()
        if bare is None:
            print(f"{kind:9s} skipped: not installed")
            continue
        alone, stack = cache_only(make()), defaults(make())
        measure(alone, 10)  # first request: the miss that fills the cache
        measure(stack, 10)
        # Interleaved rounds: load from anything else on the machine falls on all three alike.
        rounds = [(measure(bare, n), measure(alone, n), measure(stack, n)) for _ in range(repeats)]
        bare_us, hit_us, stack_us = (statistics.median(column) for column in zip(*rounds, strict=True))
        hit_ok, stack_ok = hit_us <= HIT_TARGET_US, stack_us <= DEFAULTS_TARGET_RATIO * hit_us
        ok = ok and hit_ok and stack_ok
        print(f"{kind:9s} memory hit, in process (CPU us/request): cache alone {hit_us:6.2f}   "
              f"target <= {HIT_TARGET_US:.0f}   {'OK' if hit_ok else 'MISSED'}   bare app {bare_us:6.2f}")
        print(f"{'':9s}   default layers {stack_us:6.2f} = {stack_us / hit_us:4.2f}x the cache alone   "
              f"target <= {DEFAULTS_TARGET_RATIO}x   {'OK' if stack_ok else 'MISSED'}")
    return ok


# ------------------------------------------------------------------------------ over HTTP

SERVER_MODULE = '''
import sys
sys.path.insert(0, {root!r})
sys.path.insert(0, {bench!r})
from cache_hit import asgi_hello, wsgi_hello, cache_only, defaults
wsgi_cached = cache_only(wsgi_hello)
asgi_cached = cache_only(asgi_hello)
wsgi_defaults = defaults(wsgi_hello)
asgi_defaults = defaults(asgi_hello)
'''


def server_cpu_seconds(port: str) -> float:
    """CPU seconds used so far by the server processes listening on ``port`` (master and
    workers: every process whose command line names the port)."""
    ticks = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if port not in (entry / "cmdline").read_bytes().decode(errors="replace"):
                continue
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime + stime
    return ticks / os.sysconf("SC_CLK_TCK")


def wrk_run(url: str, seconds: int, connections: int) -> tuple[float, float]:
    """(requests/s, requests per server CPU-second) of one wrk run."""
    port = url.rsplit(":", 1)[1].split("/")[0]
    cpu_before = server_cpu_seconds(port)
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", url],
                         capture_output=True, text=True, check=True).stdout
    cpu = max(server_cpu_seconds(port) - cpu_before, 1e-9)
    requests = next(int(line.split()[0]) for line in out.splitlines() if "requests in" in line)
    for line in out.splitlines():
        if line.startswith("Requests/sec:"):
            return float(line.split()[1]), requests / cpu
    raise RuntimeError(f"wrk printed no Requests/sec:\n{out}")


def wrk_rps(url: str, seconds: int, connections: int) -> float:
    return wrk_run(url, seconds, connections)[0]


# uvicorn twice: its pure-Python HTTP stack (h11 + asyncio, what `pip install uvicorn` runs) and
# its C one (httptools + uvloop, `uvicorn[standard]`), where the server's own cost per request is
# a quarter, so the same microseconds of cache work weigh four times as much.
SERVERS = (
    ("gunicorn", "gunicorn", "wsgi", ("--access-logfile", "/dev/null")),
    ("uvicorn h11", "uvicorn", "asgi", ("--no-access-log", "--http", "h11", "--loop", "asyncio")),
    ("uvicorn httptools", "uvicorn", "asgi", ("--no-access-log", "--http", "httptools", "--loop", "uvloop")),
)
# What each server runs side by side: the hello app, then the cached ones against it.
VARIANTS = (("hello", "bare hello"), ("cached", "cache alone"), ("defaults", "default layers"))


def over_http(rounds: int, seconds: int) -> bool:
    """The bare app and both cached forms run side by side under the same server; wrk
    alternates between them ``rounds`` times, so load from anything else on the machine hits
    them alike."""
    from tests.servers import has_httptools, run_server

    if shutil.which("wrk") is None:
        print("over HTTP: wrk not installed (apt-get install wrk), skipped")
        return True
    ok = True
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "bench_apps.py").write_text(
            SERVER_MODULE.format(root=str(ROOT), bench=str(ROOT / "bench")))
        env = {"PYTHONPATH": folder}
        for label, server, kind, extra in SERVERS:
            if server == "uvicorn" and "httptools" in extra and not has_httptools():
                print(f"{label:18s} skipped: httptools/uvloop not installed (uvicorn[standard])")
                continue
            rates: dict[str, list[float]] = {variant: [] for variant, _ in VARIANTS}
            per_cpu: dict[str, list[float]] = {variant: [] for variant, _ in VARIANTS}
            with contextlib.ExitStack() as servers:
                urls = {variant: servers.enter_context(run_server(
                    server, f"bench_apps:{kind}_{variant}", env=env, cwd=folder,  # type: ignore[arg-type]
                    extra_args=extra)) + "/hello" for variant, _ in VARIANTS}
                for url in urls.values():
                    wrk_rps(url, 1, 8)  # warm-up; fills the cache
                for _ in range(rounds):
                    for variant, url in urls.items():
                        rps, rps_per_cpu = wrk_run(url, seconds, 8)
                        rates[variant].append(rps)
                        per_cpu[variant].append(rps_per_cpu)
            ok = report_http(label, rounds, rates, per_cpu) and ok
    return ok


def report_http(label: str, rounds: int, rates: dict[str, list[float]],
                per_cpu: dict[str, list[float]]) -> bool:
    """Print each cached form's median against the bare app's; True when both meet the target."""
    ok = True
    bare_rps, bare_cpu = statistics.median(rates["hello"]), statistics.median(per_cpu["hello"])
    print(f"{label:18s} over HTTP (wrk -c8, median of {rounds}): bare hello {bare_rps:8.0f} req/s")
    for variant, name in VARIANTS[1:]:
        cached_rps, cached_cpu = statistics.median(rates[variant]), statistics.median(per_cpu[variant])
        ratio = cached_rps / bare_rps
        ok = ok and ratio >= HTTP_TARGET_RATIO
        # The same ratio per CPU-second the server got: on a shared machine the wall-clock
        # figure also measures how much CPU the other jobs left to each server.
        print(f"{'':18s}   {name:14s} {cached_rps:8.0f} req/s = {ratio:6.1%} of bare   target >= "
              f"{HTTP_TARGET_RATIO:.0%}   {'OK' if ratio >= HTTP_TARGET_RATIO else 'MISSED'}   "
              f"per server CPU-second {cached_cpu / bare_cpu:6.1%} "
              f"({1e6 / cached_cpu - 1e6 / bare_cpu:+.0f} us of server CPU per request)")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--no-http", action="store_true", help="skip the wrk runs")
    args = parser.parse_args()
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    repeats = 3 if args.quick else 7
    ok = in_process(repeats, 5_000 if args.quick else 20_000)
    if not args.no_http:
        ok = over_http(3 if args.quick else 7, 2 if args.quick else 3) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
