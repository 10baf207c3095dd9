"""What recording a cache hit's savings costs the hit (issue: "at most a few hundred
nanoseconds, measured"), in one process and in Prometheus multiprocess mode.

    python bench/savings.py

A hit appends ``(route, origin_seconds, db_seconds)`` to ``Savings.pending`` and checks its
length; every ``flush_at`` hits (1,024) the sums reach the three Prometheus counters.
"recording" is that, per hit, flushes included (amortised), over 50 route templates cycled;
"baseline" is the same loop with the tuple appended to a plain list that is cleared at the
same interval, measured in the same run. The figure is recording minus baseline, the median of
REPEATS runs. It is measured twice: in this process (in-memory counters), and in a subprocess
started with PROMETHEUS_MULTIPROC_DIR set to a temporary directory (prometheus_client picks its
file-backed values at import), where the counters are the mmap files another worker reads and
the process's flusher thread (scalekit/metrics/flusher.py) runs beside the hits, as under
gunicorn. "flush every hit" (flush_at = 1: what multiprocess mode did before the flusher, a
file write per hit) is printed for information, with no target. Also printed, for scale: three
Prometheus counter increments per hit, which the pending deque replaces. Target: <= 500 ns per
hit, in both modes. Exits 1 when either misses it.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prometheus_client import CollectorRegistry, Counter

from scalekit.metrics.handles import counter_handle
from scalekit.metrics.instruments import CACHE_ROUTE_HITS, Savings

TARGET_NS = 500.0   # "a few hundred nanoseconds"
REPEATS = 15
HITS = 200_000
HITS_RECORDED = [(f"/route/{index % 50}/{{id}}", 0.012, 0.004) for index in range(HITS)]


def recording(savings: Savings) -> Callable[[], None]:
    def run() -> None:
        pending, flush_at, flush = savings.pending, savings.flush_at, savings.flush
        for hit in HITS_RECORDED:
            pending.append(hit)
            if len(pending) >= flush_at:
                flush()
    return run


def baseline(flush_at: int) -> Callable[[], None]:
    def run() -> None:
        pending: list[tuple[str, float, float]] = []
        for hit in HITS_RECORDED:
            pending.append(hit)
            if len(pending) >= flush_at:
                pending.clear()
    return run


def three_increments() -> Callable[[], None]:
    registry = CollectorRegistry()
    hits, origin, database = (Counter(f"bench_{name}", name, ["route"], registry=registry).labels("/route/{id}")
                              for name in ("hits", "origin", "database"))

    def run() -> None:
        for _, origin_seconds, db_seconds in HITS_RECORDED:
            hits.inc()
            origin.inc(origin_seconds)
            database.inc(db_seconds)
    return run


def per_hit_ns(run: Callable[[], None]) -> float:
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter_ns()
        run()
        times.append((time.perf_counter_ns() - start) / HITS)
    return statistics.median(times)


def recording_figures() -> tuple[float, float, float]:
    """(baseline, recording, flush every hit), the last two minus their baselines, in ns per hit."""
    savings = Savings()
    savings.record("/route/0/{id}", 0.012, 0.004)  # in multiprocess mode, starts the flusher thread
    base = per_hit_ns(baseline(savings.flush_at))
    recorded = per_hit_ns(recording(savings)) - base
    savings.flush_at = 1
    every = per_hit_ns(recording(savings)) - per_hit_ns(baseline(1))
    savings.flush_at = savings.flush_every
    return base, recorded, every


def measure_multiprocess() -> tuple[float, float]:
    """:func:`recording_figures` in a subprocess with file-backed counters."""
    with tempfile.TemporaryDirectory(prefix="scalekit-bench-multiproc-") as metrics_dir:
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": metrics_dir}
        done = subprocess.run([sys.executable, __file__, "--multiprocess-child"], env=env, capture_output=True,
                              text=True, timeout=600, check=True)
    _, recorded, every = json.loads(done.stdout)
    return float(recorded), float(every)


def multiprocess_child() -> int:
    value = counter_handle(CACHE_ROUTE_HITS.labels("/bench"))
    if "Mmap" not in type(value).__name__:  # not the files: the figure would mean nothing
        print(f"expected file-backed counters, got {type(value).__name__}", file=sys.stderr)
        return 1
    print(json.dumps(recording_figures()))
    return 0


def main() -> int:
    if sys.argv[1:] == ["--multiprocess-child"]:
        return multiprocess_child()
    base, recorded, every = recording_figures()
    multiprocess, multiprocess_every = measure_multiprocess()
    print(f"{'':40}{'figure':>10}{'target':>10}")
    print(f"{'baseline loop (ns/hit)':40}{base:10.0f}")
    print(f"{'recording savings (ns/hit)':40}{recorded:10.0f}{TARGET_NS:10.0f}")
    print(f"{'recording savings, multiprocess (ns/hit)':40}{multiprocess:10.0f}{TARGET_NS:10.0f}")
    print(f"{'flush every hit (ns/hit)':40}{every:10.0f}{'info':>10}")
    print(f"{'flush every hit, multiprocess (ns/hit)':40}{multiprocess_every:10.0f}{'info':>10}")
    increments = per_hit_ns(three_increments()) - per_hit_ns(baseline(HITS + 1))
    print(f"{'three counter increments':40}{increments:10.0f}{'info':>10}")
    missed = [(name, figure) for name, figure in (("one process", recorded), ("multiprocess", multiprocess))
              if figure > TARGET_NS]
    for name, figure in missed:
        print(f"MISSED: recording a hit's savings ({name}) costs {figure:.0f} ns > {TARGET_NS:.0f} ns")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
