"""The pool's process-wide service: databases, per-request handles, a small background worker.

One :class:`PoolService` per runtime (``runtime.services["pool"]``), shared by its WSGI and
ASGI shells. The background worker (a daemon thread started with the first request of each
process, so a forked worker starts its own) warns about leaked connections and gives back
connections of response bodies that were dropped without ``close()``, and samples the pool
gauges; the change-feed listener, when configured, starts with it.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
import weakref
from typing import Any

from ..context import RequestContext
from .changefeed import ChangeFeedListener
from .database import Database
from .handle import STATE_KEY, RequestDatabases
from .policy import is_leak
from .tables import set_parse_cache_size

__all__ = ["PoolService", "service_of"]

log = logging.getLogger("scalekit.pool")

SERVICE_KEY = "pool"
_MAX_TICK_SECONDS = 1.0


def service_of(runtime: Any) -> PoolService:
    """The runtime's pool service, created on first use."""
    service = runtime.services.get(SERVICE_KEY)
    if service is None:
        service = runtime.services[SERVICE_KEY] = PoolService(runtime)
    return service  # type: ignore[no-any-return]


class PoolService:
    """Databases of one runtime, the handles of each request, leak checks, abandoned bodies."""

    def __init__(self, runtime: Any) -> None:
        config = runtime.config.pool
        self.runtime = runtime
        self.config = config
        database_class = Database
        if runtime.config.tracing.enabled:  # checkouts as spans; off, nothing is imported
            from ..tracing.spans import traced_database_class
            database_class = traced_database_class()
        self.databases = {
            name: database_class(name, database, state_dir=runtime.config.state_dir,
                                 track_tables=config.track_tables)
            for name, database in config.databases.items()
        }
        set_parse_cache_size(config.parsed_statement_cache_size)
        thresholds = [d.leak_warning_seconds for d in config.databases.values()
                      if d.leak_warning_seconds is not None]
        self.tick_seconds = min([_MAX_TICK_SECONDS] + [t / 4 for t in thresholds])
        self._abandoned: collections.deque[RequestDatabases] = collections.deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self._worker_pid = 0
        # Whether this process runs the worker: read by every request, reset in forked children
        # (where the parent's thread is gone), so a request never asks the kernel its pid.
        self._running_here = False
        reference = weakref.ref(self)

        def forked() -> None:
            service = reference()
            if service is not None:
                service._running_here = False

        os.register_at_fork(after_in_child=forked)
        self._start_lock = threading.Lock()
        self.change_feed: ChangeFeedListener | None = None
        self.closed = False
        # Start the worker (and the change feed) with the runtime, or with the first request of
        # a process that never ran the start-up hooks (a forked worker).
        runtime.on_startup(self._start_background)
        runtime.on_shutdown(self.close)

    # ----------------------------------------------------------------- per request
    def begin_request(self, ctx: RequestContext) -> RequestDatabases:
        """Create the request's lazy handles and put them in its context."""
        if not self._running_here:
            self._start_background()
        # By position: a class called with keywords costs a dict (scalekit/records.py).
        requests = RequestDatabases(self.databases, ctx, self._invalidate_tables, self.config.track_tables,
                                    self.runtime.monotonic)
        ctx.state[STATE_KEY] = requests
        return requests

    def _invalidate_tables(self, tags: tuple[str, ...]) -> None:
        self.runtime.invalidate(tags, source="table")

    def release_later(self, requests: RequestDatabases) -> None:
        """Give back the connections of a response body dropped without close().

        Called from ``__del__``, which may run inside any code of this thread (even while it
        holds a pool lock), so the release itself happens on the background worker.
        """
        self._abandoned.append(requests)
        self._wake.set()

    def drain_abandoned(self) -> None:
        while self._abandoned:
            try:
                requests = self._abandoned.popleft()
            except IndexError:
                return
            requests.finish()

    # ----------------------------------------------------------------- background worker
    def _start_background(self) -> None:
        with self._start_lock:
            pid = os.getpid()
            if self._worker_pid == pid or self.closed:
                return
            # In a forked child the parent's thread and deque are gone or meaningless.
            self._abandoned = collections.deque()
            self._wake, self._stop = threading.Event(), threading.Event()
            self._worker = threading.Thread(target=self._run, name="scalekit-pool", daemon=True)
            self._worker.start()
            self._worker_pid = pid
            self._running_here = True
            feed = self.config.change_feed
            if feed.enabled:
                self.change_feed = ChangeFeedListener(
                    self.databases[feed.database].url, feed,
                    invalidate=lambda tags: self.runtime.invalidate(tags, source="change_feed"))
                self.change_feed.start()

    def _run(self) -> None:
        wake, stop = self._wake, self._stop
        while not stop.is_set():
            wake.wait(self.tick_seconds)
            wake.clear()
            try:
                self.drain_abandoned()
                self.check_leaks()
                self.update_gauges()
            except Exception:  # the worker must outlive one bad round
                log.exception("scalekit: pool background check failed")

    def check_leaks(self, now: float | None = None) -> list[Any]:
        """Warn (once per checkout) about connections held past leak_warning_seconds."""
        now = self.runtime.monotonic() if now is None else now
        leaked = []
        for database in self.databases.values():
            threshold = database.config.leak_warning_seconds
            for holder in list(database.holders.values()):
                if holder.leak_warned or not is_leak(checked_out_at=holder.checked_out_at, now=now,
                                                     threshold_seconds=threshold):
                    continue
                holder.leak_warned = True
                database.leaks.inc()
                leaked.append(holder)
                log.warning(
                    "scalekit: a connection to database %r has been held for %.1f s "
                    "(leak_warning_seconds=%s) by route %r; it was checked out at %s. It goes back "
                    "when the response ends: end long responses sooner, or call "
                    "scalekit.pool.release_at_response_start() for streams.",
                    database.name, now - holder.checked_out_at, threshold, holder.route,
                    holder.site or "an unknown place")
        return leaked

    def update_gauges(self) -> None:
        """Sample every database's used/idle connection gauges now."""
        for database in self.databases.values():
            database.update_gauges()

    # ----------------------------------------------------------------- status / shutdown
    def checked_out(self) -> int:
        """Connections of every database of this process not in their pool: lent to requests,
        or given back and still being reset (0 when all are back; see :meth:`wait_idle`)."""
        return sum(database.checked_out() for database in self.databases.values())

    def wait_idle(self, timeout_seconds: float = 10.0) -> bool:
        """Wait until every connection given back is reset and back in its pool.

        Responses end before the background reset of their connections does; tests (and
        anything else that counts connections) wait here instead of sleeping.
        """
        deadline = time.monotonic() + timeout_seconds
        return all(database.wait_idle(max(0.0, deadline - time.monotonic()))
                   for database in self.databases.values())

    def close(self) -> None:
        """Stop the worker and the change feed, close idle connections."""
        if self.closed:
            return
        self.closed = True
        self._stop.set()
        self._wake.set()
        if self.change_feed is not None:
            self.change_feed.stop()
        worker = self._worker
        if worker is not None and worker.is_alive() and self._worker_pid == os.getpid():
            worker.join(timeout=5)
        self.drain_abandoned()
        for database in self.databases.values():
            database.dispose()
