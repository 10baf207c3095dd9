"""Cost of a memory cache hit, in process and over HTTP, beside the bare app in the same run.

Targets:
- in process: a memory hit costs <= 20 us per request, WSGI and ASGI (the bare app is shown
  beside it: a hit replaces the app, so it can even be cheaper than a trivial app);
- over HTTP with wrk, same server: the cached endpoint answers >= 90% of the requests/s of a
  constant "hello" app (gunicorn for WSGI; uvicorn for ASGI, with its pure-Python HTTP stack and
  with httptools + uvloop).

Run: ``python bench/cache_hit.py`` (``--quick`` for fewer repeats, ``--no-http`` to skip wrk).
"""

from __future__ import annotations

import argparse
import asyncio
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


def cache_only(app: Any) -> Any:
    """``app`` wrapped with the cache layer alone (memory tier), as scalekit.wrap would."""
    import scalekit

    return scalekit.wrap(app, metrics=False, cdn=False, pool=False,
                         cache={"disk": {"enabled": False}}, allowed_hosts=["bench.test", "127.0.0.1"])


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
    results = {}
    for kind, bare, measure in (("WSGI", wsgi_hello, per_request_wsgi), ("ASGI", asgi_hello, per_request_asgi)):
        wrapped = cache_only(bare)
        measure(wrapped, 10)  # first request: the miss that fills the cache
        bare_us = statistics.median(measure(bare, n) for _ in range(repeats))
        hit_us = statistics.median(measure(wrapped, n) for _ in range(repeats))
        results[kind] = (bare_us, hit_us)
        ok = hit_us <= HIT_TARGET_US
        print(f"{kind} memory hit, in process:  {hit_us:6.2f} us/request (CPU)   target <= {HIT_TARGET_US:.0f} us"
              f"   bare app {bare_us:5.2f} us   {'OK' if ok else 'MISSED'}")
    return all(hit <= HIT_TARGET_US for _, hit in results.values())


# ------------------------------------------------------------------------------ over HTTP

SERVER_MODULE = '''
import sys
sys.path.insert(0, {root!r})
sys.path.insert(0, {bench!r})
from cache_hit import asgi_hello, wsgi_hello, cache_only
wsgi_cached = cache_only(wsgi_hello)
asgi_cached = cache_only(asgi_hello)
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
    ("gunicorn", "gunicorn", "wsgi_hello", "wsgi_cached", ("--access-logfile", "/dev/null")),
    ("uvicorn h11", "uvicorn", "asgi_hello", "asgi_cached",
     ("--no-access-log", "--http", "h11", "--loop", "asyncio")),
    ("uvicorn httptools", "uvicorn", "asgi_hello", "asgi_cached",
     ("--no-access-log", "--http", "httptools", "--loop", "uvloop")),
)


def over_http(rounds: int, seconds: int) -> bool:
    """Bare and cached apps run side by side under the same server; wrk alternates between
    them ``rounds`` times, so load from anything else on the machine hits both alike."""
    from tests.servers import has_httptools, run_server

    if shutil.which("wrk") is None:
        print("over HTTP: wrk not installed, skipped")
        return True
    ok = True
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "bench_apps.py").write_text(
            SERVER_MODULE.format(root=str(ROOT), bench=str(ROOT / "bench")))
        env = {"PYTHONPATH": folder}
        for label, server, bare, cached, extra in SERVERS:
            if server == "uvicorn" and "httptools" in extra and not has_httptools():
                print(f"{label:18s} skipped: httptools/uvloop not installed (uvicorn[standard])")
                continue
            rates: dict[str, list[float]] = {bare: [], cached: []}
            per_cpu: dict[str, list[float]] = {bare: [], cached: []}
            with run_server(server, f"bench_apps:{bare}", env=env, cwd=folder,  # type: ignore[arg-type]
                            extra_args=extra) as bare_url, \
                    run_server(server, f"bench_apps:{cached}", env=env, cwd=folder,  # type: ignore[arg-type]
                               extra_args=extra) as cached_url:
                urls = {bare: bare_url + "/hello", cached: cached_url + "/hello"}
                for url in urls.values():
                    wrk_rps(url, 1, 8)  # warm-up; fills the cache
                for _ in range(rounds):
                    for target, url in urls.items():
                        rps, rps_per_cpu = wrk_run(url, seconds, 8)
                        rates[target].append(rps)
                        per_cpu[target].append(rps_per_cpu)
            bare_rps, cached_rps = statistics.median(rates[bare]), statistics.median(rates[cached])
            ratio = cached_rps / bare_rps
            ok = ok and ratio >= HTTP_TARGET_RATIO
            print(f"{label:18s} over HTTP (wrk -c8, median of {rounds}): cached {cached_rps:8.0f} req/s = "
                  f"{ratio:6.1%} of bare hello {bare_rps:8.0f} req/s   target >= {HTTP_TARGET_RATIO:.0%}   "
                  f"{'OK' if ratio >= HTTP_TARGET_RATIO else 'MISSED'}")
            # The same ratio per CPU-second the server got: on a shared machine the wall-clock
            # figure also measures how much CPU the other jobs left to each server.
            bare_cpu, cached_cpu = statistics.median(per_cpu[bare]), statistics.median(per_cpu[cached])
            print(f"{'':18s}   per server CPU-second: cached {cached_cpu:8.0f} req = "
                  f"{cached_cpu / bare_cpu:6.1%} of bare {bare_cpu:8.0f} req "
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
