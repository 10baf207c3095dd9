"""Cost of the cache on the miss path, beside the bare app in the same run.

Target: on an endpoint doing 1 ms of work, a miss through the default layers (metrics, CDN,
cache, pool; the disk tier off, as in bench/cache_hit.py) costs at most 5% more than the bare
app: the request is counted, keyed, looked up, forwarded, and the response stamped, analysed,
buffered and stored (``stored miss``), or passed through (``uncacheable miss``). The cache layer
alone is measured in the same rounds, for reference (no target); so, in rounds of its own
after them, is a miss (WSGI and ASGI) with the disk tier on, as a user's default config has it:
in the request's thread (what the response waits for) and in all threads (L3's writer included),
and a miss with Redis as L2 (the disk tier off), wall time and the request thread's CPU time, when
a Redis answers at ``SCALEKIT_BENCH_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``; the rounds
are skipped, saying so, when none does).

"stored miss": every request has its own URL, so each is a real miss that is then stored.
"uncacheable": one endpoint answering ``Cache-Control: no-store``, so every request misses.
The work is a fixed amount of pure-Python page rendering, calibrated once to about 1 ms, so
every variant does the same work (a deadline spin on the CPU clock would spend most of its
millisecond in clock syscalls, nothing like an endpoint). Times are this process's CPU time per
request, so other jobs on a shared machine count less than in wall time (they still cool the
CPU caches: on a loaded machine the layers' code runs cold after each 1 ms of work and the
figure grows several-fold). Requests are interleaved one by one (bare, cache alone, defaults,
bare, ...), each timed on its own, so drift and other jobs hit every variant alike; a
variant's overhead is the median of its requests' differences from the bare request just
before them, over the bare app's median (a median of thousands of pairs shrugs off the
requests an interrupt or a collection landed in). These rounds run in ``--processes`` fresh
processes (3 unless told), one after the other, and the median of the processes' figures is
judged, with their range beside it: where a process's code and data land in memory moves a
figure by more than a cut does (the same commit's ASGI stored miss measured +4.45 % to +5.14 %
in five processes), so one process is one draw, as pyperf, which spawns its own, knows.
Beside each figure, the Python and C function calls a request makes beyond the bare app's:
a count that load does not change, for telling a real cut from noise.

With ``--instructions`` (needs Debian's valgrind and gcc) the same requests are also run under
callgrind, and the instructions a request executes beyond the bare app's are printed beside the
times, counted with the 1 ms of work left out (it is the same in every variant, and its 13 M
instructions a request vary between runs by more than the layers' whole share) and the cyclic
garbage collector paused (one of its runs landing in a window by chance would move the figure):
one neither load nor a noisy neighbour changes, for telling a real cut from noise
(times on a shared virtual machine moved between +5 % and +20 % for the same commit). It is not
judged: what a miss costs is time, and code that runs cold costs more time per instruction.

With ``--layers`` the judged rounds are followed by the defaults with one outer layer off at a
time (metrics, CDN, pool), WSGI and ASGI, for telling which layer's code a miss pays for. On the
project's VM the three did not add up: with any one of them off, most of their combined cost
went (``bench/RESULTS.md``), as if the path's code and data had outgrown a CPU cache.

Run: ``python bench/cache_miss.py`` (``--quick`` for fewer repeats, ``--processes N``,
``--instructions``, ``--layers``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import os
import re
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

TARGET_OVERHEAD = 0.05
REDIS_URL = os.environ.get("SCALEKIT_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
WORK_SECONDS = 0.001
clock = time.process_time


ROWS = [{"id": i, "name": f"item {i}", "price": i * 1.25} for i in range(40)]


def render(rows: list[dict[str, Any]]) -> str:
    """A small table as HTML: the kind of work an endpoint does."""
    return "".join([f"<tr><td>{row['id']}</td><td>{row['name'].title()}</td>"
                    f"<td>{row['price']:.2f}</td></tr>" for row in rows])


def calibrate() -> int:
    """How many renders take about WORK_SECONDS of CPU here (median of five timings)."""
    reps = 1
    while True:
        started = clock()
        for _ in range(reps):
            render(ROWS)
        if clock() - started > 0.02:
            break
        reps *= 2
    timings = []
    for _ in range(5):
        started = clock()
        for _ in range(reps):
            render(ROWS)
        timings.append((clock() - started) / reps)
    return max(1, round(WORK_SECONDS / statistics.median(timings)))


RENDERS = 1


def work() -> None:
    """About 1 ms of CPU work (RENDERS renders), the same for every variant."""
    for _ in range(RENDERS):
        render(ROWS)


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


def cache_only(app: Any) -> Any:
    """``app`` behind the cache layer alone (memory tier)."""
    import scalekit

    return scalekit.wrap(app, metrics=False, cdn=False, pool=False,
                         cache={"disk": {"enabled": False}}, allowed_hosts=["bench.test"])


def defaults(app: Any) -> Any:
    """``app`` behind the default layers (metrics, CDN, cache, pool), the disk tier off."""
    import scalekit

    return scalekit.wrap(app, cache={"disk": {"enabled": False}}, allowed_hosts=["bench.test"])


def defaults_with_disk(app: Any, folder: str) -> Any:
    """``app`` behind the default layers with the disk tier on, as a user's default config has
    it (its file in ``folder``)."""
    import scalekit

    return scalekit.wrap(app, cache={"disk": {"path": folder}}, allowed_hosts=["bench.test"])


def added_us(times: list[float], bare_times: list[float]) -> float:
    """The median of a variant's requests' differences from the bare request timed beside each."""
    return statistics.median([t - b for t, b in zip(times, bare_times)])


OUTER_LAYERS = ("metrics", "cdn", "pool")


def layers_reference(n: int) -> None:
    """The defaults beside the defaults with each outer layer off, interleaved with the bare app
    and the cache alone in the same rounds, no target: where a miss's overhead comes from."""
    import scalekit

    for kind, bare, run in (("WSGI", wsgi_app, run_wsgi), ("ASGI", asgi_app, run_asgi)):
        stacks = [("cache alone", cache_only(bare)), ("defaults", defaults(bare))]
        stacks += [(f"no {layer}", scalekit.wrap(bare, cache={"disk": {"enabled": False}},
                                                 allowed_hosts=["bench.test"], **{layer: False}))
                   for layer in OUTER_LAYERS]
        for label, variant in VARIANTS:
            apps = [bare] + [app for _, app in stacks]
            run(apps, 50, variant)
            gc.collect()
            bare_times, *stack_times = run(apps, n, variant)
            figures = ", ".join(
                f"{name} {added_us(times, bare_times):+6.1f} us"
                for (name, _), times in zip(stacks, stack_times))
            print(f"{kind} {label:12s} layers: bare {statistics.median(bare_times):7.1f} us; {figures}   (reference)")


def defaults_with_redis(app: Any, prefix: str) -> Any:
    """``app`` behind the default layers with Redis as L2 (keys under ``prefix``), the disk
    tier off."""
    import scalekit

    return scalekit.wrap(app, cache={"disk": {"enabled": False}}, allowed_hosts=["bench.test"],
                         redis={"url": REDIS_URL, "key_prefix": prefix})


def redis_reference(n: int) -> None:
    """What Redis as L2 adds to a miss, WSGI and ASGI, in rounds of their own, no target: a
    stored miss asks Redis (a GET) and writes it (a SET), each a round trip the response waits
    for; an uncacheable miss asks it once, then its URL is marked hit-for-miss and only L1 is
    asked. Wall time and the request thread's CPU time, bare and both stacks interleaved."""
    import redis

    try:
        with redis.Redis.from_url(REDIS_URL, socket_timeout=1.0) as probe:
            probe.ping()
    except (redis.RedisError, OSError) as error:
        print(f"defaults+L2 rounds skipped: no Redis at {REDIS_URL} ({error})")
        return
    prefix = f"bench-miss-{time.time_ns()}:"  # no entry of an earlier run is found
    for kind, bare, run in (("WSGI", wsgi_app, run_wsgi), ("ASGI", asgi_app, run_asgi)):
        with_redis, without = defaults_with_redis(bare, f"{prefix}{kind}:"), defaults(bare)
        for label, variant in VARIANTS:
            run([bare, with_redis, without], 50, variant)
            gc.collect()
            figures = []
            for timer in (time.perf_counter, time.thread_time):
                bare_times, redis_times, plain_times = run([bare, with_redis, without], n, variant, timer=timer)
                bare_us = statistics.median(bare_times)
                redis_us = added_us(redis_times, bare_times)
                plain_us = added_us(plain_times, bare_times)
                figures.append((bare_us, redis_us, plain_us))
            (wall_bare, wall_redis, wall_plain), (cpu_bare, cpu_redis, cpu_plain) = figures
            print(f"{kind} {label:12s} defaults+L2: {wall_redis / wall_bare:+7.2%} over bare {wall_bare:7.1f} us "
                  f"wall ({wall_redis:6.1f} us; L2 off {wall_plain:5.1f} us, so L2 "
                  f"{wall_redis - wall_plain:+6.1f} us); request thread's CPU {cpu_redis / cpu_bare:+7.2%} "
                  f"({cpu_redis:6.1f} us; L2 off {cpu_plain:5.1f} us)   (reference)")


def disk_reference(n: int) -> None:
    """What the disk tier adds to a miss, WSGI and ASGI, in rounds of its own after the judged
    ones, no target. A stored miss only queues its L3 write; the tier's writer thread writes it,
    so two figures: the request's own thread (what the response waits for: bare, defaults and
    defaults with L3 interleaved, timed with the thread's CPU clock), and every thread of the
    process (the writer's work included: blocks of requests, each variant's block timed whole)."""
    for kind, bare, run in (("WSGI", wsgi_app, run_wsgi), ("ASGI", asgi_app, run_asgi)):
        with tempfile.TemporaryDirectory(prefix="scalekit-bench-l3-") as folder:
            with_disk, without = defaults_with_disk(bare, folder), defaults(bare)
            for label, variant in VARIANTS:
                run([bare, with_disk, without], 50, variant)
                gc.collect()
                bare_times, disk_times, plain_times = run([bare, with_disk, without], n, variant,
                                                          timer=time.thread_time)
                bare_us = statistics.median(bare_times)
                disk_us = added_us(disk_times, bare_times)
                plain_us = added_us(plain_times, bare_times)
                process_us = process_cpu_added(run, bare, with_disk, n, variant)
                print(f"{kind} {label:12s} defaults+L3: {disk_us / bare_us:+7.2%} over bare {bare_us:7.1f} us "
                      f"in the request's thread ({disk_us:5.1f} us; L3 off {plain_us:5.1f} us, so L3 "
                      f"{disk_us - plain_us:+5.1f} us); all threads {process_us:5.1f} us   (reference)")


def process_cpu_added(run: Any, bare: Any, app: Any, n: int, variant: str, blocks: int = 6) -> float:
    """µs of the whole process's CPU (writer thread included) per request of ``app`` beyond the
    ``bare`` app's: the median over ``blocks`` pairs of blocks of requests, each block timed
    whole after the tier's queue was written (a block's writes are counted in its own time)."""
    added = []
    per_block = max(n // blocks, 50)
    store = app_store(app)
    for _ in range(blocks):
        started = time.process_time()
        run([bare], per_block, variant)
        bare_seconds = time.process_time() - started
        started = time.process_time()
        run([app], per_block, variant)
        if store is not None:
            store.flush()
        added.append((time.process_time() - started - bare_seconds) / per_block * 1e6)
    return statistics.median(added)


def app_store(app: Any) -> Any:
    """The TieredStore behind a wrapped app (None if it has none)."""
    runtime = getattr(app, "runtime", None)
    return None if runtime is None else runtime.services.get("cache.store")


COUNTER = itertools.count()


def wsgi_request(app: Any, query: str) -> None:
    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        return None

    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/page", "QUERY_STRING": query,
               "SERVER_NAME": "bench.test", "SERVER_PORT": "80", "HTTP_HOST": "bench.test",
               "wsgi.url_scheme": "http"}
    body = app(environ, start_response)
    for _chunk in body:
        pass
    getattr(body, "close", lambda: None)()


async def asgi_request(app: Any, query: str) -> None:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        return None

    scope = {"type": "http", "method": "GET", "path": "/page", "scheme": "http",
             "query_string": query.encode(), "server": ("bench.test", 80),
             "headers": [(b"host", b"bench.test")]}
    await app(scope, receive, send)


def query_for(variant: str) -> str:
    """``variant`` itself, or a URL of its own (a real miss) for the stored-miss variant."""
    return variant or f"i={next(COUNTER)}"


def run_wsgi(apps: list[Any], n: int, variant: str, timer: Any = None) -> list[list[float]]:
    """µs of CPU per request (``timer``: the process's CPU clock unless told), for ``n``
    requests to each of ``apps``, interleaved one by one."""
    timer = timer or clock
    times: list[list[float]] = [[] for _ in apps]
    for _ in range(n):
        for app, spent in zip(apps, times):
            query = query_for(variant)
            started = timer()
            wsgi_request(app, query)
            spent.append((timer() - started) * 1e6)
    return times


def run_asgi(apps: list[Any], n: int, variant: str, timer: Any = None) -> list[list[float]]:
    """:func:`run_wsgi` for ASGI apps, on one event loop in this thread."""
    timer = timer or clock

    async def loop() -> list[list[float]]:
        times: list[list[float]] = [[] for _ in apps]
        for _ in range(n):
            for app, spent in zip(apps, times):
                query = query_for(variant)
                started = timer()
                await asgi_request(app, query)
                spent.append((timer() - started) * 1e6)
        return times

    return asyncio.run(loop())


def skip_work() -> None:
    """The work left out: where a count must hold the layers' share alone."""


def calls_per_request(run: Any, app: Any, variant: str, n: int = 200) -> float:
    """Function calls (Python and C) per request of ``app``, counted by a profile hook."""
    calls = 0

    def count(frame: Any, event: str, arg: Any) -> None:
        nonlocal calls
        if event == "call" or event == "c_call":
            calls += 1

    global work
    timed, work = work, skip_work  # the work's own clock reads are the bare app's too
    try:
        run([app], 10, variant)
        sys.setprofile(count)
        try:
            run([app], n, variant)
        finally:
            sys.setprofile(None)
    finally:
        work = timed
    return calls / n


# Instrumentation is switched for every thread at once (collection would be per thread): a
# segment counts the work of L3's writer thread too (unless threads are separated, see below).
MARKERS_C = r"""#include <valgrind/callgrind.h>
void markers_start(void) { CALLGRIND_START_INSTRUMENTATION; CALLGRIND_ZERO_STATS; }
void markers_stop(const char *name) { CALLGRIND_DUMP_STATS_AT(name); CALLGRIND_STOP_INSTRUMENTATION; }
"""
COUNTED_REQUESTS = 50
VARIANTS = (("stored miss", ""), ("uncacheable", "nostore"))


def counted_segments(markers: str, disk_only: bool) -> None:
    """Under callgrind: each (driver, variant, stack)'s requests, counted apart (the rest of
    the process, imports included, runs uninstrumented); ``disk_only``: the L3 stack alone."""
    import ctypes

    global work
    lib = ctypes.CDLL(markers)
    drivers = () if disk_only else (("WSGI", wsgi_app, run_wsgi), ("ASGI", asgi_app, run_asgi))
    rendering = work
    for kind, bare, run in drivers:
        stacks = (("bare+work", bare), ("bare", bare), ("cache alone", cache_only(bare)), ("defaults", defaults(bare)))
        for name, app in stacks:
            # The work left out of every segment but the first: its 13 M instructions a request
            # vary by more between segments than the layers' 0.2 M, which would drown them.
            work = rendering if name == "bare+work" else skip_work
            for _label, variant in VARIANTS:
                run([app], 20, variant)
                # The cyclic collector paused: whether one of its older-generation runs lands in
                # a 50-request window is chance, and one adds ~40 k instructions a request.
                gc.disable()
                lib.markers_start()
                run([app], COUNTED_REQUESTS, variant)
                lib.markers_stop(f"{kind}|{variant}|{name}".encode())
                gc.enable()
    work = skip_work
    for kind, bare, run in (("WSGI", wsgi_app, run_wsgi), ("ASGI", asgi_app, run_asgi)):
        with tempfile.TemporaryDirectory(prefix="scalekit-bench-l3-") as folder:
            app = defaults_with_disk(bare, folder)
            store = app_store(app)
            for _label, variant in VARIANTS:
                run([app], 20, variant)
                store.flush()
                lib.markers_start()
                run([app], COUNTED_REQUESTS, variant)
                store.flush()  # the writer thread's work for these requests, counted with them
                lib.markers_stop(f"{kind}|{variant}|defaults+L3".encode())
    work = rendering


def instructions_per_request() -> dict[str, float]:
    """``driver|variant|stack`` -> instructions per request, counted by callgrind in all the
    process's threads (``...|thread``: the L3 stack's in the requests' own thread alone)."""
    if shutil.which("valgrind") is None or shutil.which("gcc") is None:
        raise SystemExit("--instructions needs valgrind and gcc (Debian: apt-get install valgrind gcc)")
    counts: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as folder:
        source, markers = Path(folder, "markers.c"), Path(folder, "markers.so")
        source.write_text(MARKERS_C)
        subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", str(markers), str(source)], check=True)
        # A dump of separated threads holds the dumping thread's alone: a second, shorter run
        # separates them, for the L3 stack only.
        for run_name, options, suffix in (("all", [], ""), ("thread", ["--separate-threads=yes"], "|thread")):
            subprocess.run(["valgrind", "--tool=callgrind", "--instr-atstart=no", *options,
                            f"--callgrind-out-file={folder}/{run_name}.%p", sys.executable, __file__,
                            "--counted-segments", str(markers), "--renders", str(RENDERS),
                            *(["--disk-only"] if suffix else [])],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for dump in Path(folder).glob(f"{run_name}.*.*"):
                text = dump.read_text(errors="replace")
                name = re.search(r"^desc: Trigger: Client Request: (.*)$", text, re.MULTILINE)
                total = re.search(r"^totals: (\d+)$", text, re.MULTILINE)
                if name and total:
                    counts[name.group(1) + suffix] = int(total.group(1)) / COUNTED_REQUESTS
    return counts


STACKS = ("cache alone", "defaults")


def judged_rounds(n: int) -> list[dict[str, Any]]:
    """One process's judged rounds: for each driver and variant, ``n`` interleaved requests to
    the bare app, the cache alone and the defaults; what each stack added to the bare app."""
    figures = []
    for kind, bare, run in (("WSGI", wsgi_app, run_wsgi), ("ASGI", asgi_app, run_asgi)):
        stacks = (cache_only(bare), defaults(bare))
        for label, variant in VARIANTS:
            run([bare, *stacks], 50, variant)  # warm up
            gc.collect()
            bare_times, *stack_times = run([bare, *stacks], n, variant)
            bare_us = statistics.median(bare_times)
            for name, times in zip(STACKS, stack_times):
                added = added_us(times, bare_times)
                figures.append({"kind": kind, "label": label, "name": name, "bare": bare_us,
                                "added": added, "overhead": added / bare_us})
    return figures


def judged_in_processes(processes: int, n: int) -> list[list[dict[str, Any]]]:
    """:func:`judged_rounds` in ``processes`` fresh processes, one after the other (each one
    draw of the memory layout and hash seeds; see the module's docstring)."""
    runs = []
    for _ in range(processes):
        done = subprocess.run([sys.executable, __file__, "--judged-rounds", str(n), "--renders", str(RENDERS)],
                              check=True, capture_output=True, text=True)
        runs.append(json.loads(done.stdout))
    return runs


def main() -> int:
    global RENDERS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--processes", type=int, default=3,
                        help="fresh processes the judged rounds run in, the median judged (default 3)")
    parser.add_argument("--instructions", action="store_true", help="also count instructions (callgrind)")
    parser.add_argument("--layers", action="store_true", help="also the defaults with each outer layer off")
    parser.add_argument("--counted-segments", metavar="MARKERS", help=argparse.SUPPRESS)
    parser.add_argument("--judged-rounds", type=int, metavar="N", help=argparse.SUPPRESS)
    parser.add_argument("--renders", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--disk-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.counted_segments:  # the child run under callgrind
        RENDERS = args.renders
        counted_segments(args.counted_segments, args.disk_only)
        return 0
    if args.judged_rounds:  # one of the processes the judged rounds run in
        RENDERS = args.renders
        print(json.dumps(judged_rounds(args.judged_rounds)))
        return 0
    if args.processes < 1:
        parser.error("--processes must be at least 1")
    n = 1500 if args.quick else 6000
    RENDERS = calibrate()
    for _ in range(3):  # the bare app as measured below, not the render alone, takes 1 ms
        bare_us = statistics.median(run_wsgi([wsgi_app], 300, "")[0])
        RENDERS = max(1, round(RENDERS * WORK_SECONDS * 1e6 / bare_us))
    counts = instructions_per_request() if args.instructions else {}
    pairs = max(300, n // args.processes)
    runs = judged_in_processes(args.processes, pairs)
    ok = True
    for index, figure in enumerate(runs[0]):
        kind, label, name = figure["kind"], figure["label"], figure["name"]
        drawn = [run[index] for run in runs]
        overhead = statistics.median([f["overhead"] for f in drawn])
        added = statistics.median([f["added"] for f in drawn])
        bare_us = statistics.median([f["bare"] for f in drawn])
        spread = f"{min(f['overhead'] for f in drawn):+.2%} to {max(f['overhead'] for f in drawn):+.2%}"
        run, bare = (run_wsgi, wsgi_app) if kind == "WSGI" else (run_asgi, asgi_app)
        variant = dict(VARIANTS)[label]
        app = cache_only(bare) if name == "cache alone" else defaults(bare)
        calls = calls_per_request(run, app, variant) - calls_per_request(run, bare, variant)
        judged = name == "defaults"
        verdict = ("OK" if overhead <= TARGET_OVERHEAD else "MISSED") if judged else "(reference)"
        ok = ok and (overhead <= TARGET_OVERHEAD or not judged)
        print(f"{kind} {label:12s} {name:11s}: {overhead:+7.2%} over bare {bare_us:7.1f} us (CPU, median of "
              f"{len(runs)} processes' medians of {pairs} interleaved pairs, {spread}; {added:5.1f} us, "
              f"{calls:4.0f} calls)   target <= +{TARGET_OVERHEAD:.0%}   {verdict}")
        if counts:
            base = counts[f"{kind}|{variant}|bare+work"]
            extra = counts[f"{kind}|{variant}|{name}"] - counts[f"{kind}|{variant}|bare"]
            print(f"{'':29s}{extra / base:+7.2%} instructions over bare's {base / 1e6:.2f} M "
                  f"({extra / 1e3:.1f} k per request, counted without the work; callgrind, not judged)")
    if args.layers:
        layers_reference(n)
    disk_reference(n // 2)
    redis_reference(n // 3)
    for kind in ("WSGI", "ASGI") if counts else ():
        for label, variant in VARIANTS:
            plain, with_disk = counts[f"{kind}|{variant}|defaults"], f"{kind}|{variant}|defaults+L3"
            print(f"{kind} {label:12s} defaults+L3: L3 adds "
                  f"{(counts[f'{with_disk}|thread'] - plain) / 1e3:4.0f} k instructions in the request's "
                  f"thread, {(counts[with_disk] - plain) / 1e3:4.0f} k in all threads (callgrind; the "
                  f"writer's ticks included)   (reference)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
