"""One :class:`Database` per configured database: the checkout and return of the request
handles' connections (slots, waiting, shedding, timeouts), the hand-off of a used connection
to its session reset (on a background thread, see :mod:`.resetter`), leak bookkeeping, fork
safety and the pool metrics. Its engine (:mod:`.engines`) is SQLAlchemy's QueuePool; a
connection given back is kept for the next request (:mod:`.reuse`) when it is as a fresh one
would be, else it goes back into QueuePool.

Nothing connects until the first request uses the database; the engine itself is created then
too, so a bare ``wrap(app)`` never creates the SQLite file of an app that has no database.

>>> database = Database("default", DatabaseConfig(url="sqlite://"), state_dir=".scalekit")
>>> connection = database.checkout()
>>> connection.exec_driver_sql("select 1").scalar()
1
>>> database.checkin(None, connection, 0.0)
>>> database.checked_out()
0
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from typing import Any, cast

import sqlalchemy.exc
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import QueuePool

from ..context import wait_budget
from ..metrics.instruments import (
    POOL_CONNECTIONS,
    POOL_LEAKS,
    POOL_MAX,
    POOL_PENDING,
    POOL_SHED,
    POOL_TIMEOUTS,
    POOL_USE_TIME,
    POOL_WAIT_TIME,
)
from .config import DatabaseConfig
from .engines import (
    DBAPI_SETTINGS,
    SESSION_RESET_DONE,
    create_pool_engine,
    dbapi_settings,
    engine_url,
)
from .errors import DatabaseUnavailableError, PoolShedError, PoolTimeoutError
from .policy import Admission, decide_admission, shed_message, timeout_message
from .resetter import BackgroundResetter, reset_session
from .reuse import KeptConnections, Verdict, discard
from .slots import ConnectionSlots
from .tracking import TrackedConnection, detach

__all__ = ["Database"]

log = logging.getLogger("scalekit.pool")

_DATABASES: weakref.WeakSet[Database] = weakref.WeakSet()


class Database:
    """A configured database: engine, accounting of the requests using it, metrics."""

    def __init__(self, name: str, config: DatabaseConfig, *, state_dir: str,
                 track_tables: bool = True) -> None:
        self.name = name
        self.config = config
        self.url = engine_url(config, state_dir)
        self.track_tables = track_tables
        self.max_connections = config.max_connections
        self._engine: Engine | None = None
        self._pid = os.getpid()
        # Guards the waiting count; re-entrant so that nothing that runs inside it (a gauge, a
        # log handler) can deadlock this thread by coming back in.
        self._lock = threading.RLock()
        self.pending = 0
        self._slots = ConnectionSlots(self.max_connections)
        # id(handle) -> handle holding a connection. Each change is one dict operation and the
        # leak check copies the values in one C call (list(...values())), both atomic under
        # the GIL (and per-dict locked without it), so no lock of ours is taken for them.
        self.holders: dict[int, Any] = {}
        # Set with the engine (it depends on the driver); None: the rollback is the whole reset.
        self._reset_statement: str | None = None
        # SQLite's rollback is a call into the library, not a round trip: nothing to move away.
        self.background_reset = config.reset_in_background and self.url.get_backend_name() != "sqlite"
        self._resetter = BackgroundResetter(name, self._reset_and_return)
        self._kept: KeptConnections | None = None  # set with the engine when reuse is on
        self._used_gauge = POOL_CONNECTIONS.labels(name, "used")
        self._idle_gauge = POOL_CONNECTIONS.labels(name, "idle")
        self._pending_gauge = POOL_PENDING.labels(name)
        self._observe_wait_time = POOL_WAIT_TIME.labels(name).observe
        self._observe_use_time = POOL_USE_TIME.labels(name).observe
        self._timeouts = POOL_TIMEOUTS.labels(name)
        self._shed = POOL_SHED.labels(name)
        self.leaks = POOL_LEAKS.labels(name)
        _DATABASES.add(self)

    @property
    def engine(self) -> Engine:
        """The engine, created on first use (and replaced in a forked child)."""
        if self._pid != os.getpid():
            self.forget_parent_pool()
        engine = self._engine
        if engine is None:
            with self._lock:
                engine = self._engine
                if engine is None:
                    engine = self._create_engine()
        return engine

    def _create_engine(self) -> Engine:
        config = self.config
        engine, self._reset_statement = create_pool_engine(config, self.url,
                                                           track_tables=self.track_tables)
        if config.reuse_connections:
            self._kept = KeptConnections(
                self.name, engine, recycle_seconds=config.recycle_seconds,
                pool_size=config.pool_size,
                check_liveness=config.pre_ping and self.url.get_backend_name() != "sqlite")
        POOL_MAX.labels(self.name).set(self.max_connections)
        self._engine = engine
        return engine

    # ----------------------------------------------------------------- checkout
    def checkout(self, *, may_wait: bool = True) -> Connection:
        """A connection; raises a 503-hinted PoolError instead of hanging.

        A request first takes one of ``max_connections`` slots (a semaphore), so the pool
        itself never makes it wait: with a slot, there is an idle connection or room to open
        one. Waiting happens on the slots, where it is counted, capped (``max_waiting``) and
        timed out. ``may_wait=False`` (a sync call on an event loop) never waits: blocking the
        loop would also block the requests about to give connections back.
        """
        started = time.perf_counter()
        if not self._slots.try_take():
            self._wait_for_slot(may_wait)
        return self._connect(started)

    def try_checkout(self) -> Connection | None:
        """A connection if one is free right now, else None (nothing waits, nothing is shed)."""
        started = time.perf_counter()
        if not self._slots.try_take():
            return None
        return self._connect(started)

    def _connect(self, started: float) -> Connection:
        """A kept connection that is still good, else one out of the engine's pool; the caller
        holds a slot."""
        engine = self.engine  # first: in a forked child, this forgets the parent's
        kept = self._kept
        if kept is not None:
            connection = kept.take()
            if connection is not None:
                self._observe_wait_time(time.perf_counter() - started)
                return connection
        try:
            # What engine.connect() builds, made a TrackedConnection (see tracking).
            connection = TrackedConnection(engine)
        except sqlalchemy.exc.TimeoutError:
            # Only when something else took connections from this engine (engine.connect()
            # in app code): the slots cannot see those.
            self._slots.give()
            self._timeouts.inc()
            raise self._timeout_error() from None
        except sqlalchemy.exc.DBAPIError as exc:
            self._slots.give()
            raise DatabaseUnavailableError(
                f"cannot connect to database {self.name!r} ({self.url.render_as_string()}): "
                f"{exc.orig}; check that it is running and reachable.",
                database=self.name, retry_after_seconds=self.config.retry_after_seconds) from exc
        except BaseException:
            self._slots.give()
            raise
        if kept is not None and not kept.accepts(connection):
            self._kept = None  # every connection goes through QueuePool from now on
        self._observe_wait_time(time.perf_counter() - started)
        return connection

    def _wait_for_slot(self, may_wait: bool) -> None:
        with self._lock:
            admission = decide_admission(pending=self.pending, max_waiting=self.config.max_waiting,
                                         may_wait=may_wait, resetting=self._resetter.in_flight)
            if admission in (Admission.SHED_QUEUE_FULL, Admission.SHED_ON_EVENT_LOOP):
                self._shed.inc()
                raise PoolShedError(self._shed_message(admission), database=self.name,
                                    retry_after_seconds=self.config.retry_after_seconds)
            self.pending += 1
            self._pending_gauge.set(self.pending)
        try:
            if admission is Admission.WAIT_FOR_RESET:
                acquired = self._acquire_after_resets()
            else:
                # Less whatever the request already waited (a coalesced miss): never stacked.
                acquired = self._slots.take(wait_budget(self.config.pool_timeout_seconds))
        finally:
            with self._lock:
                self.pending -= 1
                self._pending_gauge.set(self.pending)
        if acquired:
            return
        if admission is Admission.WAIT_FOR_RESET:
            self._shed.inc()
            raise PoolShedError(self._shed_message(Admission.SHED_ON_EVENT_LOOP), database=self.name,
                                retry_after_seconds=self.config.retry_after_seconds)
        self._timeouts.inc()
        raise self._timeout_error()

    def _acquire_after_resets(self) -> bool:
        """A slot freed by the resetter, waited for only while resets are in flight.

        Used on an event loop: the resetter frees slots without the loop's help, so this wait
        ends within the resets' round trips (or pool_timeout_seconds), never on requests that
        need the loop to give their connections back.
        """
        resetter = self._resetter
        deadline = time.monotonic() + wait_budget(self.config.pool_timeout_seconds)
        while resetter.in_flight:
            finished = resetter.finished
            if self._slots.try_take():
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not resetter.wait_for_progress(finished, remaining):
                return False
        return self._slots.try_take()

    def _timeout_error(self) -> PoolTimeoutError:
        return PoolTimeoutError(timeout_message(self.name, self.config), database=self.name,
                                retry_after_seconds=self.config.retry_after_seconds)

    def _shed_message(self, admission: Admission) -> str:
        return shed_message(self.name, self.config, admission)

    # ----------------------------------------------------------------- return
    def hold(self, holder: Any) -> None:
        """Register a request holding a connection (for leak warnings)."""
        self.holders[id(holder)] = holder

    def checkin(self, holder: Any | None, connection: Connection, held_seconds: float, *,
                touched: bool = True) -> None:
        """The request gives ``connection`` back; its use (holder, use-time histogram) ends now.

        ``touched``: the request may have left session state on it (see
        ConnectionWatch.touched). Such a connection is rolled back and reset before it goes back
        into the pool: by the resetter thread when ``background_reset`` is on, so the request
        does not wait for those round trips (the slot stays taken until then, so nobody gets it
        unreset), else right here. An untouched one goes straight back, sending nothing.
        """
        try:
            if holder is not None:
                self.holders.pop(id(holder), None)
            self._observe_use_time(held_seconds)
        finally:
            if not (touched and self.background_reset and not connection.invalidated
                    and self._resetter.submit(connection)):
                self._reset_and_return(connection, reset=touched)

    def _reset_and_return(self, connection: Connection, reset: bool = True) -> None:
        """Reset ``connection`` (if ``reset``), keep it or check it into the pool, free its slot.

        Never raises an Exception: a connection whose reset or return fails is discarded (the
        pool opens a fresh one when needed), and a broken connection must still leave.
        """
        try:
            if reset and not connection.invalidated:
                if connection.in_transaction():
                    connection.rollback()  # SQLAlchemy's transaction too, not only the driver's
                reset_session(connection.connection.dbapi_connection, self._reset_statement)
            kept = self._kept
            verdict = Verdict.CLOSE if kept is None else kept.keep(connection, touched=reset)
            if verdict is Verdict.CLOSE:
                # The keep rules compared the driver settings already (undoing what SQLAlchemy
                # undoes at check-in first); without them, compare before the check-in.
                self._close(connection, check_settings=reset and kept is None)
            elif verdict is Verdict.INVALIDATE:
                discard(connection)
        except Exception:
            log.warning("scalekit: resetting or returning a connection to database %r failed; "
                        "discarding it", self.name, exc_info=True)
            discard(connection)
        finally:
            detach(connection)  # the request's object is closed now: nothing left to refuse
            self._slots.give()

    def _close(self, connection: Connection, *, check_settings: bool) -> None:
        """Check ``connection`` (reset already, or untouched) into the engine's pool."""
        if not connection.invalidated:
            proxied = connection.connection
            if check_settings and (dbapi_settings(proxied.dbapi_connection)
                                   != proxied.info.get(DBAPI_SETTINGS)):
                # The app changed the driver's own settings (autocommit, read only, ...), which
                # no reset undoes: the pool would lend it so.
                discard(connection)
                return
            if self._reset_statement is not None:
                proxied.info[SESSION_RESET_DONE] = True  # the pool's reset hook skips it
        connection.close()

    # ----------------------------------------------------------------- status
    def _pool(self) -> QueuePool | None:
        engine = self._engine
        return None if engine is None else cast(QueuePool, engine.pool)

    def _kept_count(self) -> int:
        kept = self._kept
        return 0 if kept is None else len(kept)

    def has_idle_connection(self) -> bool:
        """True when a checkout would not have to open or wait for a connection."""
        pool = self._pool()
        return pool is not None and (self._kept_count() > 0 or pool.checkedin() > 0)

    def checked_out(self) -> int:
        """Connections of this process's pool lent to requests, or given back and still
        waiting for their reset (see :meth:`resetting`, :meth:`wait_idle`); kept ones (idle,
        see :mod:`.reuse`) are not counted, though the engine's pool sees them checked out."""
        pool = self._pool()
        return 0 if pool is None else pool.checkedout() - self._kept_count()

    def idle_count(self) -> int:
        """Connections open and free for the next request: kept ones and the pool's own."""
        pool = self._pool()
        return 0 if pool is None else self._kept_count() + pool.checkedin()

    def resetting(self) -> int:
        """Connections given back by requests whose background reset has not finished yet."""
        return self._resetter.in_flight

    def wait_idle(self, timeout_seconds: float | None = 10.0) -> bool:
        """Wait until every connection given back has been reset and is back in the pool.

        For tests and shutdown: after a response, ``checked_out()`` may still count its
        connection for a round trip or two. True when idle, False on timeout.

        >>> Database("doc", DatabaseConfig(url="sqlite://"), state_dir=".scalekit").wait_idle(1)
        True
        """
        return self._resetter.wait_idle(timeout_seconds)

    def update_gauges(self) -> None:
        """Sample the used/idle gauges (the pool's background worker does it every tick).

        Like OpenTelemetry's asynchronous db.client.connection.count, the value is read from
        the pool rather than moved on every checkout, which keeps the checkout path short;
        Prometheus scrapes far less often than the worker ticks (at most once a second).
        """
        if self._engine is None:
            return
        self._used_gauge.set(self.checked_out())
        self._idle_gauge.set(self.idle_count())

    # ----------------------------------------------------------------- lifecycle
    def forget_parent_pool(self) -> None:
        """In a forked child: never touch the parent's connections (their sockets are shared)."""
        self._lock = threading.RLock()  # the parent's lock may have been held at fork time
        self.pending = 0
        self._slots = ConnectionSlots(self.max_connections)  # the parent's are not ours
        self.holders = {}
        self._resetter.forget_parent()
        if self._kept is not None:
            self._kept.forget_parent()
        self._pid = os.getpid()
        if self._engine is not None:
            # close=False: closing would send Terminate on sockets the parent still uses.
            self._engine.dispose(close=False)
            self.update_gauges()
            POOL_MAX.labels(self.name).set(self.max_connections)

    def dispose(self) -> None:
        """Shutdown: finish the resets in flight, stop the resetter, close idle connections.

        Connections still lent out close on return. A later use starts a fresh resetter.
        """
        if self._pid != os.getpid():
            return
        resetter = self._resetter
        self._resetter = BackgroundResetter(self.name, self._reset_and_return)
        resetter.close()
        if self._kept is not None:
            self._kept.close_all()  # back to the pool, which dispose() then closes
        if self._engine is not None:
            self._engine.dispose()
            self.update_gauges()


def _after_fork_in_child() -> None:
    for database in list(_DATABASES):
        database.forget_parent_pool()


os.register_at_fork(after_in_child=_after_fork_in_child)
