"""One :class:`Database` per configured database: its SQLAlchemy engine (QueuePool), the
checkout/return accounting (waiting requests, shedding, timeouts), the session reset of every
returned connection the request used (on a background thread, see :mod:`.resetter`), fork
safety and the pool metrics.

Nothing connects until the first request uses the database; the engine itself is created then
too, so a bare ``wrap(app)`` never creates the SQLite file of an app that has no database.

>>> database = Database("default", DatabaseConfig(url="sqlite://"), state_dir=".scalekit")
>>> with database.engine.connect() as connection:
...     connection.exec_driver_sql("select 1").scalar()
1
"""

from __future__ import annotations

import ctypes
import logging
import math
import os
import select
import threading
import time
import weakref
from pathlib import Path
from typing import Any

import sqlalchemy.exc
from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.pool import QueuePool

from ..instruments import (
    POOL_CONNECTIONS,
    POOL_LEAKS,
    POOL_MAX,
    POOL_PENDING,
    POOL_SHED,
    POOL_TIMEOUTS,
    POOL_USE_TIME,
    POOL_WAIT_TIME,
)
from .accounting import ConnectionSlots, histogram_observer
from .config import DatabaseConfig
from .errors import DatabaseUnavailableError, PoolShedError, PoolTimeoutError
from .idle import DBAPI_SETTINGS, FRESH_KEYS, IdleRules, Verdict, dbapi_settings, renewed
from .policy import Admission, decide_admission, default_sqlite_url, resolve_reset_statement
from .resetter import BackgroundResetter, reset_session
from .tracking import detach, install_events

__all__ = ["Database", "engine_url", "postgres_socket_defaults"]

log = logging.getLogger("scalekit.pool")

_DATABASES: weakref.WeakSet[Database] = weakref.WeakSet()
# Idle stacks a parent process had when it forked. The child must neither use nor close those
# Connections (their sockets are the parent's), nor let garbage collection return them to a
# pool (which rolls back on the socket): they are kept, unused.
_PARENT_IDLE: list[list[Connection]] = []

# An idle connection whose socket stayed quiet is pinged anyway after this long (see
# install_liveness_check); recycle_seconds bounds its age regardless.
PING_WHEN_IDLE_SECONDS = 5.0
RETURNED_AT = "scalekit.returned_at"  # connection record info: when it was last given back
POLLER = "scalekit.poller"  # connection record info: (socket descriptor, poll object on it)
# Connection record info: the layer already reset this connection (or it needed none), so the
# pool "reset" hook, which resets connections checked out by other code, skips it once.
SESSION_RESET_DONE = "scalekit.session_reset_done"


def engine_url(config: DatabaseConfig, state_dir: str) -> URL:
    """The SQLAlchemy URL of a database (the default SQLite file when none is configured).

    A plain ``postgresql://`` URL means psycopg2 (the ``postgres`` extra), whatever SQLAlchemy's
    own default driver for it is.
    """
    url = make_url(config.url or default_sqlite_url(state_dir))
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg2")
    password = config.resolved_password()  # given apart from the URL: no encoding needed
    if password is not None:
        url = url.set(password=password)
    return url


# TCP keepalives on every pooled Postgres connection, and (libpq 12+) a bound on how long sent
# data may stay unacknowledged. Without them, a database host that vanishes without a reset
# (power loss, a partition, a dropped NAT entry) leaves each query waiting for the kernel's
# retransmission timeout, about 15 minutes, and the pool's connections with it. A long query
# is unaffected: the server acknowledges the probes while it works.
KEEPALIVE_IDLE_SECONDS = 30
KEEPALIVE_INTERVAL_SECONDS = 10
KEEPALIVE_COUNT = 3
TCP_USER_TIMEOUT_MILLISECONDS = 30_000


def postgres_socket_defaults() -> dict[str, int]:
    """libpq connection parameters scalekit sets unless the database URL sets them."""
    defaults = {"keepalives": 1, "keepalives_idle": KEEPALIVE_IDLE_SECONDS,
                "keepalives_interval": KEEPALIVE_INTERVAL_SECONDS, "keepalives_count": KEEPALIVE_COUNT}
    import psycopg2  # type: ignore[import-untyped]

    if psycopg2.__libpq_version__ >= 120000:  # tcp_user_timeout is a libpq 12 parameter
        defaults["tcp_user_timeout"] = TCP_USER_TIMEOUT_MILLISECONDS
    return defaults


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
        # Connections given back and kept for the next request (see .idle), newest last. Each
        # push and pop is one list operation, atomic under the GIL. A kept Connection holds no
        # slot: it is pushed before its slot is freed and popped after one is taken, so kept +
        # lent never exceed max_connections.
        self._idle: list[Connection] = []
        self._idle_rules: IdleRules | None = None  # set with the engine when reuse is on
        self._check_liveness = config.pre_ping and self.url.get_backend_name() != "sqlite"
        self._used_gauge = POOL_CONNECTIONS.labels(name, "used")
        self._idle_gauge = POOL_CONNECTIONS.labels(name, "idle")
        self._pending_gauge = POOL_PENDING.labels(name)
        self._observe_wait_time = histogram_observer(POOL_WAIT_TIME.labels(name))
        self._observe_use_time = histogram_observer(POOL_USE_TIME.labels(name))
        self._timeouts = POOL_TIMEOUTS.labels(name)
        self._shed = POOL_SHED.labels(name)
        self.leaks = POOL_LEAKS.labels(name)
        _DATABASES.add(self)

    # ----------------------------------------------------------------- engine
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
                    engine = self._engine = self._create_engine()
        return engine

    def _create_engine(self) -> Engine:
        config, url = self.config, self.url
        connect_args: dict[str, Any] = {}
        if url.get_backend_name() == "sqlite":
            database = url.database
            if database and database != ":memory:" and not database.startswith("file:"):
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            connect_args["timeout"] = config.pool_timeout_seconds  # wait on a locked file
        elif url.get_backend_name() == "postgresql" and url.get_driver_name() == "psycopg2":
            connect_args["connect_timeout"] = max(1, math.ceil(config.connect_timeout_seconds))
            if "application_name" not in url.query:
                connect_args["application_name"] = "scalekit"  # findable in pg_stat_activity
            for name, value in postgres_socket_defaults().items():
                if name not in url.query:  # a libpq parameter in the URL wins
                    connect_args[name] = value
        engine = create_engine(
            url,
            poolclass=QueuePool,
            pool_size=config.pool_size,
            max_overflow=config.max_overflow,
            pool_timeout=config.pool_timeout_seconds,
            pool_pre_ping=False,  # ours below: a socket poll first, a round trip only if needed
            pool_recycle=config.recycle_seconds if config.recycle_seconds > 0 else -1,
            connect_args=connect_args,
        )
        if self._check_liveness:  # a file cannot disconnect
            install_liveness_check(engine)
        event.listen(engine, "connect", _record_dbapi_settings)
        if config.url is None:
            event.listen(engine, "connect", _tune_default_sqlite)
        reset = resolve_reset_statement(config.reset_statement, dialect=engine.dialect.name,
                                        driver=engine.dialect.driver)
        self._reset_statement = reset
        if reset is not None:
            event.listen(engine, "reset", _resetter(reset))
        install_events(engine, track_tables=self.track_tables)
        if config.reuse_connections:
            self._idle_rules = IdleRules(engine, config.recycle_seconds)
        POOL_MAX.labels(self.name).set(self.max_connections)
        return engine

    # ----------------------------------------------------------------- checkout / return
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
        """A kept connection that is still good, else one checked out of the engine's pool;
        the caller holds a slot."""
        engine = self.engine  # first: in a forked child, this drops the parent's stack
        idle = self._idle
        while idle:
            try:
                connection = idle.pop()
            except IndexError:  # another thread took the last one
                break
            if self._is_lendable(connection):
                self._observe_wait_time(time.perf_counter() - started)
                return connection
        try:
            connection = engine.connect()
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
        if self._idle_rules is not None and not IdleRules.fresh_layout_is_known(frozenset(connection.__dict__)):
            # Not the Connection layout renewed() rebuilds (another SQLAlchemy release, or an
            # engine_connect listener adding attributes): keep none, as with reuse off.
            log.warning("scalekit: database %r: SQLAlchemy's Connection has attributes %s; "
                        "connections go back to the engine's pool instead of being kept",
                        self.name, sorted(set(connection.__dict__) ^ FRESH_KEYS))
            self._idle_rules = None
        self._observe_wait_time(time.perf_counter() - started)
        return connection

    def _is_lendable(self, connection: Connection) -> bool:
        """Whether a kept connection may be lent (else it is discarded here, never raising).

        The checks QueuePool's checkout would run, which a kept connection skips: the pool's
        (age, invalidation, disposal), then the liveness check (pre_ping).
        """
        rules = self._idle_rules
        if rules is None or not rules.is_current(connection, time.time()):
            _discard(connection)
            return False
        if not self._check_liveness:
            return True
        proxied = connection._dbapi_connection
        assert proxied is not None  # kept connections are open (IdleRules.verdict)
        info = proxied.info
        dbapi_connection = proxied.dbapi_connection
        assert dbapi_connection is not None  # a valid pool proxy has one
        returned_at = info.get(RETURNED_AT)
        if (returned_at is not None and time.monotonic() - returned_at < PING_WHEN_IDLE_SECONDS
                and _is_quiet(dbapi_connection, info)):
            return True
        try:
            rules.engine.dialect.do_ping(dbapi_connection)
            return True
        except Exception as exc:  # noqa: BLE001  (whatever the failure, this one is dead)
            log.info("scalekit: an idle connection to database %r failed its liveness check "
                     "(%s); discarding it", self.name, exc)
            # As SQLAlchemy's pre-ping does: every connection opened before it is suspect.
            rules.engine.pool._invalidate(proxied, exc, _checkin=False)
            _discard(connection)
            return False

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
                acquired = self._slots.take(self.config.pool_timeout_seconds)
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
        deadline = time.monotonic() + self.config.pool_timeout_seconds
        while resetter.in_flight:
            finished = resetter.finished
            if self._slots.try_take():
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not resetter.wait_for_progress(finished, remaining):
                return False
        return self._slots.try_take()

    def _timeout_error(self) -> PoolTimeoutError:
        return PoolTimeoutError(
            f"no connection to database {self.name!r} became free within "
            f"pool_timeout_seconds={self.config.pool_timeout_seconds} (all pool_size="
            f"{self.config.pool_size} + max_overflow={self.config.max_overflow} in use); raise "
            f"pool.databases.{self.name}.pool_size or max_overflow, or shorten how long "
            "requests hold connections.",
            database=self.name, retry_after_seconds=self.config.retry_after_seconds)

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
            if self._idle_rules is not None:
                self._reset_and_keep(connection, reset)
            else:
                self._reset_and_close(connection, reset)
        except Exception:
            log.warning("scalekit: resetting or returning a connection to database %r failed; "
                        "discarding it", self.name, exc_info=True)
            _discard(connection)
        finally:
            detach(connection)  # the request's object is closed now: nothing left to refuse
            self._slots.give()

    def _reset_and_keep(self, connection: Connection, reset: bool) -> None:
        """Reset ``connection`` (if ``reset``), then keep it for the next request if it is as
        a fresh one would be, else close or invalidate it (see :class:`.idle.IdleRules`)."""
        rules = self._idle_rules
        assert rules is not None  # the caller checked
        statement = self._reset_statement
        if reset and not connection.invalidated:
            if connection.in_transaction():
                connection.rollback()  # SQLAlchemy's transaction too, not only the driver's
            proxied = connection._dbapi_connection
            assert proxied is not None  # not invalidated, and only the layer closes it
            reset_session(proxied.dbapi_connection, statement)
        verdict = rules.verdict(connection, touched=reset)
        # rules.engine, not self.engine: this runs on the resetter thread, which must never be
        # the one to act on a fork (forget_parent_pool).
        idle_in_pool = rules.engine.pool.checkedin()  # type: ignore[attr-defined]
        if verdict is Verdict.KEEP and len(self._idle) + idle_in_pool >= self.config.pool_size:
            # pool_size connections are idle already: like QueuePool with an overflow
            # connection, close this one (detached: its socket closes, its pool record goes
            # back empty and connects again when needed).
            connection.detach()
            connection.close()
        elif verdict is Verdict.KEEP:
            kept = renewed(connection)  # the app's object is closed from here on
            proxied = kept._dbapi_connection
            assert proxied is not None  # KEEP: open and valid
            proxied.info[RETURNED_AT] = time.monotonic()
            self._idle.append(kept)
        elif verdict is Verdict.INVALIDATE:
            _discard(connection)
        else:
            proxied = connection._dbapi_connection
            if proxied is not None and statement is not None:
                proxied.info[SESSION_RESET_DONE] = True  # reset above, or untouched
            connection.close()

    def _reset_and_close(self, connection: Connection, reset: bool) -> None:
        """The path without reuse: reset ``connection`` (if ``reset``), check it into the pool."""
        statement = self._reset_statement
        if not connection.invalidated and (reset or statement is not None):
            proxied = connection.connection
            if reset and statement is not None:
                reset_session(proxied.dbapi_connection, statement)
            if dbapi_settings(proxied.dbapi_connection) != proxied.info.get(DBAPI_SETTINGS):
                _discard(connection)  # the pool would lend it with the app's driver settings
                return
            if statement is not None:
                proxied.info[SESSION_RESET_DONE] = True
        # Without a statement the reset is the rollback close() does; after reset_session,
        # psycopg2's rollback() there is a no-op (no round trip), as is SQLAlchemy's own
        # reset-on-return rollback that follows.
        connection.close()

    def has_idle_connection(self) -> bool:
        """True when a checkout would not have to open or wait for a connection."""
        return bool(self._idle) or (self._engine is not None
                                    and self._engine.pool.checkedin() > 0)  # type: ignore[attr-defined]

    def checked_out(self) -> int:
        """Connections of this process's pool lent to requests, or given back and still
        waiting for their reset (see :meth:`resetting`, :meth:`wait_idle`); kept ones (idle,
        see :mod:`.idle`) are not counted, though the engine's pool sees them checked out."""
        if self._engine is None:
            return 0
        return int(self._engine.pool.checkedout()) - len(self._idle)  # type: ignore[attr-defined]

    def idle_count(self) -> int:
        """Connections open and free for the next request: kept ones and the pool's own."""
        if self._engine is None:
            return 0
        return len(self._idle) + int(self._engine.pool.checkedin())  # type: ignore[attr-defined]

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

    def _shed_message(self, admission: Admission) -> str:
        if admission is Admission.SHED_ON_EVENT_LOOP:
            return (f"database {self.name!r}: every connection is in use and waiting would block "
                    "the event loop; in async code use `await db().aconnection()`, which waits "
                    "in a worker thread.")
        return (f"database {self.name!r}: every connection is in use and max_waiting="
                f"{self.config.max_waiting} requests already wait; shed at once. Raise "
                f"pool.databases.{self.name}.max_waiting or the pool size.")

    # ----------------------------------------------------------------- lifecycle
    def forget_parent_pool(self) -> None:
        """In a forked child: never touch the parent's connections (their sockets are shared)."""
        self._lock = threading.RLock()  # the parent's lock may have been held at fork time
        self.pending = 0
        self._slots = ConnectionSlots(self.max_connections)  # the parent's are not ours
        self.holders = {}
        self._resetter.forget_parent()
        _PARENT_IDLE.append(self._idle)  # neither used nor closed here (nor collected)
        self._idle = []
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
        idle = self._idle
        while idle:
            try:
                connection = idle.pop()
            except IndexError:
                break
            try:
                connection.close()  # back to the pool, which dispose() then closes
            except Exception:
                log.debug("scalekit: closing an idle connection failed", exc_info=True)
                _discard(connection)
        if self._engine is not None:
            self._engine.dispose()
            self.update_gauges()


def install_liveness_check(engine: Engine) -> None:
    """Pre-ping that costs a round trip only when there is a reason to doubt the connection.

    SQLAlchemy's pre-ping sends a query on every checkout. A server that restarts, or a proxy
    that drops the connection, leaves the socket readable (an error message, or end of file),
    so a zero-timeout poll tells a dead connection from a live one for free; the query runs
    only then, when the driver gives no socket to poll, or when the connection sat idle longer
    than PING_WHEN_IDLE_SECONDS (a peer that vanished silently). A failed ping invalidates
    every pooled connection opened before it, as SQLAlchemy's pre-ping does, so one request
    pays for the discovery and the others get fresh connections.
    """
    dialect = engine.dialect

    @event.listens_for(engine, "checkin")
    def _returned(dbapi_connection: Any, record: Any) -> None:
        if dbapi_connection is not None:
            record.info[RETURNED_AT] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _check_alive(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        info = record.info
        returned_at = info.get(RETURNED_AT)
        if returned_at is None:
            return  # opened for this checkout
        if time.monotonic() - returned_at < PING_WHEN_IDLE_SECONDS and _is_quiet(dbapi_connection, info):
            return
        try:
            dialect.do_ping(dbapi_connection)
        except Exception as exc:  # whatever the failure, this one is dead
            raise sqlalchemy.exc.InvalidatePoolError(f"pre-ping failed: {exc}") from exc


_poll = getattr(select, "poll", None)  # not on Windows


def _is_quiet(dbapi_connection: Any, info: dict[Any, Any]) -> bool:
    """True when an idle connection's socket has nothing to read (no error, no end of file).

    ``info`` (the pool record's) keeps a poll object registered on the socket's descriptor, so
    each check is one zero-timeout poll() call. poll() always reports POLLHUP and POLLERR, and
    POLLNVAL for a closed descriptor, so "no event" means what an unreadable select() means
    (without select()'s limit on descriptor numbers). The descriptor is asked for every time,
    and the poll object replaced when it changed, so the socket polled is always the
    connection's current one.
    """
    fileno = getattr(dbapi_connection, "fileno", None)
    if fileno is None or _poll is None or getattr(dbapi_connection, "closed", False):
        return False  # nothing to poll: ping
    try:
        descriptor = fileno()
        if descriptor < 0:
            return False  # poll() would skip it and report nothing
        if _held_poll is not None:
            watched = info.get(POLLER)
            if not isinstance(watched, _PollFd) or watched.fd != descriptor:
                watched = info[POLLER] = _PollFd(descriptor, select.POLLIN, 0)
            return bool(_held_poll(ctypes.byref(watched), 1, 0) == 0)
        poller = info.get(POLLER)
        if poller is None or poller[0] != descriptor:
            watcher = _poll()
            watcher.register(descriptor, select.POLLIN)
            poller = info[POLLER] = (descriptor, watcher)
        return not poller[1].poll(0)
    except (OSError, ValueError):
        return False


class _PollFd(ctypes.Structure):
    """``struct pollfd``."""

    _fields_ = [("fd", ctypes.c_int), ("events", ctypes.c_short), ("revents", ctypes.c_short)]


def _poll_holding_the_gil() -> Any:
    """libc's poll() called without releasing the GIL, or None where there is none.

    select.poll() lets other threads run during its (zero-timeout) system call; the resetter
    thread then takes the GIL for a stretch of its own work, and the request checking out
    waits for it, which doubled a checkout. A zero-timeout poll never blocks, so holding the
    GIL through it costs nothing.
    """
    try:
        function = ctypes.PyDLL(None).poll  # PyDLL: the call keeps the GIL
    except (AttributeError, OSError):
        return None
    function.argtypes = [ctypes.POINTER(_PollFd), ctypes.c_ulong, ctypes.c_int]
    function.restype = ctypes.c_int
    return function


_held_poll = _poll_holding_the_gil() if os.name == "posix" else None


def _resetter(statement: str) -> Any:
    """The pool "reset" hook, for connections checked out by other code than the request
    handles (``db().engine.connect()``): roll back, then run ``statement``. The handles'
    connections were reset already (or needed no reset) and are flagged so."""

    def reset(dbapi_connection: Any, record: Any, reset_state: Any) -> None:
        if reset_state.terminate_only:
            return  # the connection is being closed, nothing to clean
        if record.info.pop(SESSION_RESET_DONE, False):
            return
        reset_session(dbapi_connection, statement)
        # An exception here makes SQLAlchemy discard the connection rather than reuse it.

    return reset


def _record_dbapi_settings(dbapi_connection: Any, record: Any) -> None:
    # After the dialect's own on-connect setup (registered first): what a fresh one looks like.
    record.info[DBAPI_SETTINGS] = dbapi_settings(dbapi_connection)


def _tune_default_sqlite(dbapi_connection: Any, record: Any) -> None:
    # The default demo database only (a configured file is left as its owner set it): WAL lets
    # readers proceed while one request writes, and NORMAL syncs at checkpoints instead of at
    # every COMMIT, which survives an app crash (not a power cut) at a fraction of the cost.
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


def _discard(connection: Connection) -> None:
    for step in (connection.invalidate, connection.close):
        try:
            step()
        except Exception:  
            log.debug("scalekit: discarding a broken connection", exc_info=True)


def _after_fork_in_child() -> None:
    for database in list(_DATABASES):
        database.forget_parent_pool()


os.register_at_fork(after_in_child=_after_fork_in_child)
