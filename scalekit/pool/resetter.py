"""The session reset of a connection given back, and the thread that runs it off the request.

A request that used its connection leaves session state behind (an open transaction, SET,
PREPARE, temp tables, advisory locks, LISTEN). Before another request may have the connection
it is rolled back and reset (:func:`reset_session`). That costs a round trip or two, which the
request should not wait for: like pgbouncer running ``server_reset_query`` when a server
connection is released, the request hands the connection to a :class:`BackgroundResetter`
and is done. The connection stays checked out of the pool, and its slot taken, until the
reset has run and the resetter has checked it in, so no request can get a connection that
still carries another's state.

>>> reset_queries("DISCARD ALL", in_transaction=True)[0].startswith("ROLLBACK; CLOSE ALL")
True
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import Connection

from .policy import reset_queries

__all__ = ["BackgroundResetter", "reset_queries", "reset_session"]

log = logging.getLogger("scalekit.pool")

# Queues of connections a parent process had handed to its resetter when it forked. The child
# must neither reset nor close them (their sockets are the parent's), nor let garbage
# collection return them to a pool (which rolls back on the socket): they are kept, unused.
_PARENT_QUEUES: list[Any] = []


def reset_session(dbapi_connection: Any, statement: str | None) -> None:
    """Roll ``dbapi_connection`` back, then run ``statement`` outside any transaction.

    The driver's rollback() goes first because drivers track the transaction themselves:
    psycopg2 sends ROLLBACK only when it began a transaction (a free call otherwise), and a
    ROLLBACK sent as text would leave it believing one is still open, so it would neither
    send BEGIN for the next request nor let autocommit be switched on. The statement then
    runs with autocommit on (DISCARD ALL refuses a transaction block): one round trip, plus
    psycopg2's ROLLBACK when the request left its transaction open. Raises whatever the driver
    raises; the caller discards the connection then.
    """
    dbapi_connection.rollback()
    queries = reset_queries(statement, in_transaction=_server_in_transaction(dbapi_connection))
    if not queries:
        return
    has_autocommit = hasattr(dbapi_connection, "autocommit")
    previous = dbapi_connection.autocommit if has_autocommit else None
    if has_autocommit:
        dbapi_connection.autocommit = True  # psycopg2: a client-side flag, no round trip
    try:
        cursor = dbapi_connection.cursor()
        try:
            for query in queries:
                cursor.execute(query)
        finally:
            cursor.close()
    finally:
        if has_autocommit:
            dbapi_connection.autocommit = previous


def _server_in_transaction(dbapi_connection: Any) -> bool:
    # libpq's own view (psycopg2 and psycopg 3 expose it as info.transaction_status, read from
    # the last message the server sent: no round trip); 0 is IDLE in both. Other drivers: False.
    status = getattr(getattr(dbapi_connection, "info", None), "transaction_status", None)
    return status is not None and int(status) != 0


class BackgroundResetter:
    """A daemon thread that resets connections given back and then returns them to the pool.

    ``finish(connection)`` does the work (reset, check in, free the slot; it must not raise).
    The thread starts with the first connection submitted, and again in a forked child, which
    never sees the parent's queue. ``in_flight`` counts connections submitted and not yet
    finished: what :meth:`wait_idle` waits for.
    """

    def __init__(self, name: str, finish: Callable[[Connection], None]) -> None:
        self.name = name
        self._finish = finish
        self._pid = 0
        self._start_lock = threading.Lock()
        self._state = threading.Condition(threading.Lock())
        self._queue: queue.SimpleQueue[Connection | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.in_flight = 0
        self.finished = 0  # connections finished so far (waiters watch it move)
        self.closed = False

    def submit(self, connection: Connection) -> bool:
        """Queue ``connection`` for its reset; False when closed (the caller resets inline)."""
        if self._pid != os.getpid():
            self._start()
        with self._state:
            if self.closed:
                return False
            self.in_flight += 1
            # Under the lock, so that close() cannot slip its end marker in before it.
            self._queue.put(connection)
        return True

    def _start(self) -> None:
        with self._start_lock:
            pid = os.getpid()
            if self._pid == pid:
                return
            if self._pid:  # a forked child: the parent's queue and counts are not ours
                _PARENT_QUEUES.append(self._queue)
                self._queue = queue.SimpleQueue()
                self._state = threading.Condition(threading.Lock())
                self.in_flight = 0
            self._thread = threading.Thread(target=self._run, args=(self._queue,),
                                            name=f"scalekit-pool-reset-{self.name}", daemon=True)
            self._thread.start()
            self._pid = pid

    def forget_parent(self) -> None:
        """In a forked child, before anything else runs: drop the parent's thread and queue."""
        if self._pid and self._pid != os.getpid():
            self._start_lock = threading.Lock()  # may have been held by a parent thread
            self._start()

    def _run(self, connections: queue.SimpleQueue[Connection | None]) -> None:
        while True:
            connection = connections.get()
            if connection is None:
                return
            try:
                self._finish(connection)
            except BaseException:  # finish() must not raise; the thread must outlive it anyway
                log.exception("scalekit: resetting a connection to database %r failed", self.name)
            finally:
                with self._state:
                    self.in_flight -= 1
                    self.finished += 1
                    self._state.notify_all()

    def wait_idle(self, timeout_seconds: float | None) -> bool:
        """Wait until every submitted connection is back in the pool; False on timeout."""
        with self._state:
            return self._state.wait_for(lambda: self.in_flight == 0, timeout_seconds)

    def wait_for_progress(self, finished_seen: int, timeout_seconds: float) -> bool:
        """Wait until one more connection has been finished than ``finished_seen``, or none is
        in flight; False on timeout."""
        with self._state:
            return self._state.wait_for(
                lambda: self.finished != finished_seen or self.in_flight == 0, timeout_seconds)

    def close(self, timeout_seconds: float = 5.0) -> bool:
        """Finish what is queued, then stop the thread (later submits return False)."""
        with self._state:
            if self.closed:
                return True
            self.closed = True
            self._queue.put(None)  # after everything already queued
        thread = self._thread
        if thread is None or not thread.is_alive() or self._pid != os.getpid():
            return True
        thread.join(timeout_seconds)
        return not thread.is_alive()
