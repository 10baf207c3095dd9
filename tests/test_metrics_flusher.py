"""The queues a cache hit appends to (the savings, the plain hits' ledger, the hit tally) and the
multiprocess mode's background flusher: every record counted exactly once however flushes and
appends interleave across threads; under PROMETHEUS_MULTIPROC_DIR a hit writes no file, its
counts reach the files within a flush interval (in a forked child too, by the child's own
flusher), at exit, and before this process answers a scrape.

prometheus_client picks file-backed values at import, so the multiprocess tests run a script in
a subprocess whose environment names the directory before anything is imported.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from scalekit.config import load_config
from scalekit.metrics import instruments
from scalekit.metrics import layer as metrics_layer
from scalekit.metrics.handles import counter_handle
from scalekit.metrics.hits import HitLedger
from tests.servers import REPO_ROOT

ROUTES = itertools.count()


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _interleave(producers: list[int], flushers: int, append: Any, flush: Any) -> None:
    """``producers[i]`` appends from thread i while ``flushers`` threads flush until they are
    done; then one last flush (a scrape's)."""
    done = threading.Event()

    def produce(count: int) -> None:
        for _ in range(count):
            append()

    def keep_flushing() -> None:
        while not done.is_set():
            flush()
        flush()

    appending = [threading.Thread(target=produce, args=(count,)) for count in producers]
    flushing = [threading.Thread(target=keep_flushing) for _ in range(flushers)]
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # interleave the threads as often as the interpreter allows
    try:
        for thread in [*flushing, *appending]:
            thread.start()
        for thread in appending:
            thread.join()
        done.set()
        for thread in flushing:
            thread.join()
    finally:
        sys.setswitchinterval(switch)
    flush()


@settings(max_examples=25, deadline=None)
@given(producers=st.lists(st.integers(0, 3_000), min_size=1, max_size=4), flushers=st.integers(1, 3))
def test_savings_count_each_record_once_whatever_the_interleaving(producers: list[int], flushers: int) -> None:
    savings = instruments.Savings()
    route = f"/flush/savings/{next(ROUTES)}"
    record = (route, 0.5, 0.25)
    _interleave(producers, flushers, lambda: savings.pending.append(record), savings.flush)
    assert not savings.pending
    assert _sample("scalekit_cache_route_hits_total", route=route) == sum(producers)
    assert _sample("scalekit_cache_origin_seconds_saved_total", route=route) == 0.5 * sum(producers)


@settings(max_examples=25, deadline=None)
@given(producers=st.lists(st.integers(0, 3_000), min_size=1, max_size=4), flushers=st.integers(1, 3))
def test_the_ledger_counts_each_hit_once_whatever_the_interleaving(producers: list[int], flushers: int) -> None:
    """The flusher thread and a scrape flushing while hits append: nothing lost or doubled."""
    ledger = HitLedger(metrics_layer.MetricsPolicy(load_config({}, environ={}, cwd="/nonexistent").metrics))
    route = f"/flush/ledger/{next(ROUTES)}"
    line = ledger.line("GET", "/items/1", route, 200)
    assert line is not None
    _interleave(producers, flushers, lambda: line(0.0001), ledger.flush)
    assert _sample("scalekit_http_requests_total", method="GET", route=route, status="2xx") == sum(producers)
    assert _sample("scalekit_http_request_duration_seconds_count", method="GET", route=route) == sum(producers)


@settings(max_examples=25, deadline=None)
@given(producers=st.lists(st.integers(0, 3_000), min_size=1, max_size=4), flushers=st.integers(1, 3))
def test_a_tally_counts_each_event_once_whatever_the_interleaving(producers: list[int], flushers: int) -> None:
    outcome = f"flush-{next(ROUTES)}"
    tally = instruments.Tally((), (counter_handle(instruments.CACHE_STORES.labels("memory", outcome)).inc,))
    _interleave(producers, flushers, tally.tick, tally.flush)
    assert _sample("scalekit_cache_stores_total", tier="memory", outcome=outcome) == sum(producers)


# --------------------------------------------------------------------------- multiprocess mode

PRELUDE = """
import json, os, sys, time
from prometheus_client import CollectorRegistry
from scalekit.config import load_config
from scalekit.metrics import instruments
from scalekit.metrics.flusher import FLUSHER
from scalekit.metrics.handles import counter_handle
from scalekit.metrics.hits import HitLedger
from scalekit.metrics.layer import MetricsPolicy, WorkerFiles

SERIES = {
    "saved": ("scalekit_cache_origin_seconds_saved_total", {"route": "/mp"}),
    "route_hits": ("scalekit_cache_route_hits_total", {"route": "/mp"}),
    "requests": ("scalekit_http_requests_total", {"method": "GET", "route": "/mp", "status": "2xx"}),
    "tally": ("scalekit_cache_stores_total", {"tier": "memory", "outcome": "mp"}),
}

def in_files():
    '''What another process reads: every process's files, merged (as /metrics reads them: a
    file a forked child is creating may still be empty).'''
    registry = CollectorRegistry()
    registry.register(WorkerFiles(os.environ["PROMETHEUS_MULTIPROC_DIR"]))
    return {key: registry.get_sample_value(name, labels) or 0.0 for key, (name, labels) in SERIES.items()}

def poll(expected, seconds=30.0):
    deadline = time.monotonic() + seconds
    while (found := in_files()) != expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return found

savings = instruments.savings()
ledger = HitLedger(MetricsPolicy(load_config({}, environ={}, cwd="/nonexistent").metrics))
tally = instruments.Tally((instruments.CACHE_STORES,),
                          (counter_handle(instruments.CACHE_STORES.labels("memory", "mp")).inc,))

def hit():
    '''A hit as the cache's early path counts it, and one as its full path does.'''
    savings.pending.append(("/mp", 0.5, 0.25))
    savings.record("/mp", 0.5, 0.25)
    line = ledger.line("GET", "/items/1", "/mp", 200)
    line(0.0001)
    line(0.0001)
    tally.tick()
    tally.tick()

def in_child(work):
    '''Fork; the child runs work() and stays alive, without atexit, until release() (so only
    its flusher thread can have written what it counted).'''
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            os.close(writer)
            work()
            os.read(reader, 1)
        finally:
            os._exit(0)
    os.close(reader)

    def release():
        os.write(writer, b"x")
        os.waitpid(child, 0)
    return release
"""


def _run_multiprocess(tmp_path: Path, body: str) -> Any:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run([sys.executable, "-c", PRELUDE + textwrap.dedent(body)], capture_output=True,
                          text=True, env=env, timeout=90, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_in_multiprocess_mode_a_hit_writes_no_file_and_its_counts_arrive_within_the_interval(
        tmp_path: Path) -> None:
    found = _run_multiprocess(tmp_path, """
        with FLUSHER.lock:  # no flush can run: what is in the files now, the hits wrote themselves
            for _ in range(3):
                hit()
            at_once = in_files()
        print(json.dumps({"at_once": at_once, "later": poll({"saved": 3.0, "route_hits": 6.0,
                                                             "requests": 6.0, "tally": 6.0})}))
    """)
    assert found["at_once"] == {"saved": 0.0, "route_hits": 0.0, "requests": 0.0, "tally": 0.0}
    assert found["later"] == {"saved": 3.0, "route_hits": 6.0, "requests": 6.0, "tally": 6.0}


def test_in_multiprocess_mode_a_scrape_here_flushes_first(tmp_path: Path) -> None:
    found = _run_multiprocess(tmp_path, """
        from prometheus_client.parser import text_string_to_metric_families
        from scalekit.metrics.layer import render_exposition

        with FLUSHER.lock:  # the flusher thread waits; this thread's scrape flushes
            hit()
            body, _ = render_exposition()
        samples = {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
                   for family in text_string_to_metric_families(body.decode()) for sample in family.samples}
        print(json.dumps({key: samples.get((name, tuple(sorted(labels.items()))), 0.0)
                          for key, (name, labels) in SERIES.items()}))
    """)
    assert found == {"saved": 1.0, "route_hits": 2.0, "requests": 2.0, "tally": 2.0}


def test_in_multiprocess_mode_what_is_pending_is_flushed_at_exit(tmp_path: Path) -> None:
    first = _run_multiprocess(tmp_path, """
        FLUSHER.interval_seconds = 3600.0  # only the exit flush can write them
        hit()
        print(json.dumps(in_files()))
    """)
    assert first == {"saved": 0.0, "route_hits": 0.0, "requests": 0.0, "tally": 0.0}
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"), "PYTHONPATH": str(REPO_ROOT)}
    read = subprocess.run([sys.executable, "-c", PRELUDE + "print(json.dumps(in_files()))"], capture_output=True,
                          text=True, env=env, timeout=90, check=True)
    assert json.loads(read.stdout) == {"saved": 1.0, "route_hits": 2.0, "requests": 2.0, "tally": 2.0}


def test_a_forked_child_flushes_its_own_hits_and_none_of_its_parents(tmp_path: Path) -> None:
    """gunicorn forks its workers after the app is wrapped: threads do not survive a fork, so
    the child starts its own flusher; what the parent held pending stays the parent's."""
    found = _run_multiprocess(tmp_path, """
        hit()  # pending in the parent (its flusher thread is started) when it forks
        release = in_child(lambda: (hit(), hit()))
        FLUSHER.flush()  # the parent's own: one hit's worth
        seen = poll({"saved": 3.0, "route_hits": 6.0, "requests": 6.0, "tally": 6.0})
        release()
        print(json.dumps(seen))
    """)
    assert found == {"saved": 3.0, "route_hits": 6.0, "requests": 6.0, "tally": 6.0}


def test_a_forked_child_flushes_the_requests_it_records_of_a_kind_its_parent_had_seen(tmp_path: Path) -> None:
    """The layer's full path records requests by kind; a child that inherits its parent's kinds
    must still start its own flusher with its first request (no hit needs to arm it)."""
    found = _run_multiprocess(tmp_path, """
        ledger.record("GET", "/mp", 200, 0.001)  # the parent has seen this kind
        FLUSHER.flush()
        release = in_child(lambda: [ledger.record("GET", "/mp", 200, 0.001) for _ in range(2)])
        seen = poll({"saved": 0.0, "route_hits": 0.0, "requests": 3.0, "tally": 0.0}, seconds=10.0)
        release()
        print(json.dumps(seen))
    """)
    assert found == {"saved": 0.0, "route_hits": 0.0, "requests": 3.0, "tally": 0.0}
