"""Cost of the cache on the miss path, beside the bare app in the same run.

Target: on an endpoint doing 1 ms of work, a miss through the cache costs at most 5%
more than the bare app: the request is keyed, looked up, forwarded, and the response analysed,
buffered and stored (``stored miss``), or passed through (``uncacheable miss``).

"stored miss": every request has its own URL, so each is a real miss that is then stored.
"uncacheable": one endpoint answering ``Cache-Control: no-store``, so every request misses.
Times are this process's CPU time per request (the work is CPU work), so other jobs on a
shared machine count less than in wall time (they still cool the CPU caches: on a loaded
machine the cache's code runs cold after each 1 ms of work and the figure grows several-fold).
Beside each figure, the Python and C function calls a request makes beyond the bare app's:
a count that load does not change, for telling a real cut from noise.

Run: ``python bench/cache_miss.py`` (``--quick`` for fewer repeats).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGET_OVERHEAD = 0.05
WORK_SECONDS = 0.001
clock = time.process_time


def work() -> None:
    """About 1 ms of CPU work, like rendering a small page."""
    deadline = clock() + WORK_SECONDS
    while clock() < deadline:
        pass


def response_headers(environ_query: str) -> list[tuple[str, str]]:
    policy = "no-store" if "nostore" in environ_query else "max-age=60"
    return [("content-type", "text/html"), ("cache-control", policy)]


BODY = b"<html><body>" + b"x" * 2000 + b"</body></html>"


def wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    work()
    start_response("200 OK", response_headers(environ.get("QUERY_STRING", "")))
    return [BODY]


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    work()
    headers = response_headers(scope["query_string"].decode())
    await send({"type": "http.response.start", "status": 200,
                "headers": [(k.encode(), v.encode()) for k, v in headers]})
    await send({"type": "http.response.body", "body": BODY})


def cached(app: Any) -> Any:
    import scalekit

    return scalekit.wrap(app, metrics=False, cdn=False, pool=False,
                         cache={"disk": {"enabled": False}}, allowed_hosts=["bench.test"])


COUNTER = itertools.count()


def run_wsgi(app: Any, n: int, variant: str) -> float:
    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        return None

    started = clock()
    for _ in range(n):
        query = variant or f"i={next(COUNTER)}"
        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/page", "QUERY_STRING": query,
                   "SERVER_NAME": "bench.test", "SERVER_PORT": "80", "HTTP_HOST": "bench.test",
                   "wsgi.url_scheme": "http"}
        body = app(environ, start_response)
        for _chunk in body:
            pass
        getattr(body, "close", lambda: None)()
    return (clock() - started) / n * 1e6


def run_asgi(app: Any, n: int, variant: str) -> float:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        return None

    async def loop() -> float:
        started = clock()
        for _ in range(n):
            query = variant or f"i={next(COUNTER)}"
            scope = {"type": "http", "method": "GET", "path": "/page", "scheme": "http",
                     "query_string": query.encode(), "server": ("bench.test", 80),
                     "headers": [(b"host", b"bench.test")]}
            await app(scope, receive, send)
        return (clock() - started) / n * 1e6

    return asyncio.run(loop())


def calls_per_request(run: Any, app: Any, variant: str, n: int = 200) -> float:
    """Function calls (Python and C) per request of ``app``, counted by a profile hook."""
    calls = 0

    def count(frame: Any, event: str, arg: Any) -> None:
        nonlocal calls
        if event == "call" or event == "c_call":
            calls += 1

    global work
    timed, work = work, lambda: None  # the work's own clock reads are the bare app's too
    try:
        run(app, 10, variant)
        sys.setprofile(count)
        try:
            run(app, n, variant)
        finally:
            sys.setprofile(None)
    finally:
        work = timed
    return calls / n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    args = parser.parse_args()
    repeats, n = (3, 300) if args.quick else (7, 1000)
    ok = True
    for kind, bare, run in (("WSGI", wsgi_app, run_wsgi), ("ASGI", asgi_app, run_asgi)):
        wrapped = cached(bare)
        for label, variant in (("stored miss", ""), ("uncacheable", "nostore")):
            bare_runs, wrapped_runs = [], []
            for _ in range(repeats):  # interleaved, so drift hits both alike
                bare_runs.append(run(bare, n, variant))
                wrapped_runs.append(run(wrapped, n, variant))
            bare_us, wrapped_us = statistics.median(bare_runs), statistics.median(wrapped_runs)
            overhead = wrapped_us / bare_us - 1
            ok = ok and overhead <= TARGET_OVERHEAD
            calls = calls_per_request(run, wrapped, variant) - calls_per_request(run, bare, variant)
            print(f"{kind} {label:16s}: {wrapped_us:7.1f} us/request (CPU) vs bare {bare_us:7.1f} us = "
                  f"{overhead:+6.2%} ({wrapped_us - bare_us:5.1f} us, {calls:4.0f} calls)   "
                  f"target <= +{TARGET_OVERHEAD:.0%}   {'OK' if overhead <= TARGET_OVERHEAD else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
