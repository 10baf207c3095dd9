"""Multiprocess mode's background flush: what cache hits queue reaches the counters' files soon.

A cache hit appends to a queue (:class:`~.instruments.Savings`, :class:`~.hits.HitLedger`,
:class:`~.handles.Tally`) instead of adding to the counters, and in one process the queues
are added before any read of the registry. Under ``PROMETHEUS_MULTIPROC_DIR`` (gunicorn with
several workers, ``scalekit serve --workers N``) another process reads the counters' files, so
each process runs a daemon thread that flushes its queues every :data:`FLUSH_INTERVAL_SECONDS`:
a hit costs what it costs in one process, and another worker's ``/metrics`` shows it within
that interval. The queues are also flushed at exit and before this process answers ``/metrics``
or the status page (:func:`~.layer.current_registry`).

The thread starts with the first record a queue holds (a gunicorn master that wraps the app
and forks never starts one) and is started again in a forked child, which also drops what it
inherited pending: the parent counts those, in its own files.

>>> from scalekit.metrics.flusher import FLUSHER
>>> FLUSHER.flush()
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Protocol

__all__ = ["FLUSHER", "FLUSH_INTERVAL_SECONDS", "Flusher", "Queue", "background_flush"]

# How long a hit may stay out of the files another worker's /metrics reads. Prometheus scrapes
# every 15 s or so; twice a second costs an idle process two wake-ups and a busy one a flush
# per 0.5 s instead of a locked file write per hit (bench/savings.py).
FLUSH_INTERVAL_SECONDS = 0.5

log = logging.getLogger("scalekit")


class Queue(Protocol):
    """What a hit path appends to and a flush adds to the counters."""

    def flush(self) -> None: ...

    def drop_inherited(self) -> None:
        """Forget what is pending (called in a forked child: the parent counts it)."""


class Flusher:
    """This process's flusher of the queues registered with :func:`background_flush`.

    :attr:`lock` is held by every flush of every queue (re-entrant: :meth:`flush` holds it
    around theirs), so the thread, a scrape and the hit path's own bound never flush one
    queue at once; the hit path itself only appends.
    """

    def __init__(self, interval_seconds: float = FLUSH_INTERVAL_SECONDS) -> None:
        self.interval_seconds = interval_seconds
        self.lock = threading.RLock()
        self._queues: weakref.WeakSet[Queue] = weakref.WeakSet()
        self._thread: threading.Thread | None = None

    def add(self, queue: Queue) -> None:
        """Flush ``queue`` (held weakly) in the background from its first record on."""
        with self.lock:
            self._queues.add(queue)

    def arm(self) -> None:
        """Start the thread unless it runs: a queue holds a record."""
        if self._thread is None:
            with self.lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="scalekit-metrics-flush", daemon=True)
                    self._thread.start()

    def flush(self) -> None:
        """Add every registered queue to its counters now."""
        with self.lock:
            queues = list(self._queues)
            for queue in queues:
                queue.flush()

    def _run(self) -> None:
        failed = False  # logged once: the next flushes would say the same every interval
        while True:
            time.sleep(self.interval_seconds)
            with self.lock:
                if not self._queues:  # every queue is gone: a new one arms a new thread
                    self._thread = None
                    return
                try:
                    self.flush()
                except Exception:  # a failing flush (a removed directory) must not end the flushing
                    if not failed:
                        log.exception("scalekit: flushing cache hit counts to the metrics files failed")
                    failed = True

    def _before_fork(self) -> None:
        self.lock.acquire()  # no flush of this process is half done in the child

    def _after_fork_in_parent(self) -> None:
        self.lock.release()

    def _after_fork_in_child(self) -> None:
        self.lock = threading.RLock()
        self._thread = None  # threads do not survive a fork: the next record starts one
        for queue in list(self._queues):
            queue.drop_inherited()


FLUSHER = Flusher()
os.register_at_fork(before=FLUSHER._before_fork, after_in_parent=FLUSHER._after_fork_in_parent,
                    after_in_child=FLUSHER._after_fork_in_child)
atexit.register(FLUSHER.flush)


def _nothing() -> None:
    pass


def background_flush(queue: Queue) -> Callable[[], None]:
    """In multiprocess mode, register ``queue`` with :data:`FLUSHER` and return what the
    queue calls when it holds a record (it starts the thread); in one process, a no-op."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return _nothing
    FLUSHER.add(queue)
    return FLUSHER.arm
