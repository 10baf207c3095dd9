"""The request's lazy database handles: ``scalekit.pool.db()``.

Each request gets one :class:`RequestDatabase` per configured database (created by the layer,
reachable as ``environ/scope["scalekit.db"]``, ``["scalekit.databases"]`` and :func:`db`).
Nothing is checked out until the app first asks for the connection; the same connection then
serves the whole request, and the layer gives it back when the response is over, rolled back
and reset. App code never closes it.

>>> from scalekit.pool import db                                    # doctest: +SKIP
>>> rows = db().connection().exec_driver_sql("select id from products").all()  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import Any, overload

from sqlalchemy.engine import Connection, Engine

from ..context import RequestContext, current
from .database import Database
from .errors import RequestDatabaseError
from .policy import CheckoutSite
from .tracking import ConnectionWatch, attach, mark_touched

__all__ = ["RequestDatabase", "RequestDatabases", "db", "release_at_response_start"]

STATE_KEY = "pool"  # ctx.state["pool"]: this request's RequestDatabases
_GUARD_MAKING = threading.Lock()  # held only while a handle makes its lock


def _new_guard_making() -> None:
    global _GUARD_MAKING
    _GUARD_MAKING = threading.Lock()  # another thread may have held it when the process forked


os.register_at_fork(after_in_child=_new_guard_making)


class _RequestShared:
    """What one request's handles share with its :class:`RequestDatabases`.

    Held by both, holding neither, and the request context only weakly (the context holds the
    RequestDatabases): a request leaves no reference cycle, so its objects are freed when its
    last reference goes, not whenever the cyclic collector next runs.
    """

    __slots__ = ("all_released", "context", "invalidate", "monotonic", "touched", "track_tables")

    def __init__(self, ctx: RequestContext, invalidate: Callable[[tuple[str, ...]], None],
                 track_tables: bool, monotonic: Callable[[], float]) -> None:
        self.context = weakref.ref(ctx)
        self.invalidate = invalidate
        self.track_tables = track_tables
        self.monotonic = monotonic
        # Most requests never use a database: until one tries to, a request has nothing to
        # confirm, fail or give back, and its end is one flag (all_released) instead of a
        # locked release per handle.
        self.touched = False
        self.all_released = False


class RequestDatabase:
    """One database, for one request: a connection checked out on first use, given back at the end.

    ``connection()`` is the SQLAlchemy Connection (commit with ``.commit()``); ``dbapi_connection()``
    the driver's own (psycopg2) connection for code written against it; ``engine`` the engine,
    for metadata and ORM sessions (``Session(bind=db().connection())``).
    """

    # Most requests never use a database, and each gets a handle per database: what only a
    # checkout changes is read from these class attributes until it does (three stores per
    # handle, no lock made; the lock is made by the first checkout, see _guard).
    _connection: Connection | None = None
    _watch: ConnectionWatch | None = None
    _lock: threading.Lock | None = None
    _released = False
    checked_out_at = 0.0
    site: CheckoutSite | None = None
    leak_warned = False
    failure: BaseException | None = None  # the 503-worthy PoolError, if any

    def __init__(self, database: Database, shared: _RequestShared) -> None:
        self.name = database.name
        self._database = database
        self._shared = shared

    def _guard(self) -> threading.Lock:
        """The lock between this handle's checkout and its release (threads of one request,
        the pool's worker), made once, by whichever gets here first."""
        lock = self._lock
        if lock is None:
            with _GUARD_MAKING:
                lock = self._lock
                if lock is None:
                    lock = self._lock = threading.Lock()
        return lock

    @property
    def engine(self) -> Engine:
        """The database's engine (shared by every request of the process)."""
        return self._database.engine

    @property
    def checked_out(self) -> bool:
        """True while this request holds a pooled connection."""
        return self._connection is not None

    @property
    def route(self) -> str:
        ctx = self._shared.context()
        return ctx.route if ctx is not None else "(request over)"

    def connection(self) -> Connection:
        """The request's SQLAlchemy Connection, checked out now if this is the first use.

        On an event loop's thread this never waits for a busy pool (that would stall every
        other request, the ones about to give connections back included): it sheds with 503.
        Async code should ``await aconnection()`` instead, which waits in a worker thread.
        """
        connection = self._connection
        if connection is not None:
            return connection
        return self._checkout(_caller_site(), may_wait=not _on_event_loop())

    async def aconnection(self) -> Connection:
        """``connection()`` for async code: a busy pool is waited for in a worker thread."""
        connection = self._connection
        if connection is not None:
            return connection
        site = _caller_site()
        if self._database.has_idle_connection():
            # An idle connection: taking it costs a socket poll, fine on the loop. (Opening a
            # new one, or waiting for one, happens in a worker thread below.)
            connection = self._checkout(site, may_wait=False, only_if_free=True)
            if connection is not None:
                return connection
        return await asyncio.to_thread(self._checkout, site, True)

    def dbapi_connection(self) -> Any:
        """The driver's connection (psycopg2 / sqlite3) behind :meth:`connection`.

        Statements run on it directly are not seen by table tracking: tag with
        ``scalekit.tag("table:NAME")`` and commit through :meth:`connection` to keep the
        automatic invalidation. Whatever is done with it, the connection is rolled back and
        reset before another request gets it.
        """
        connection = self.connection()
        mark_touched(connection)  # nothing run on it can be seen from here
        return connection.connection.dbapi_connection

    @overload
    def _checkout(self, site: CheckoutSite | None, may_wait: bool) -> Connection: ...

    @overload
    def _checkout(self, site: CheckoutSite | None, may_wait: bool, *,
                  only_if_free: bool) -> Connection | None: ...

    def _checkout(self, site: CheckoutSite | None, may_wait: bool, *,
                  only_if_free: bool = False) -> Connection | None:
        shared = self._shared
        # Written before the released flags are read, and release_all() writes its flag before
        # it reads this one: whichever runs second sees the other (see release_all).
        shared.touched = True
        ctx = shared.context()
        if self._released or shared.all_released or ctx is None:  # no context: the request is over
            raise self._released_error(context_gone=not (self._released or shared.all_released))
        database = self._database
        try:
            # Not under self._lock: the wait may be long and release() must never block on it.
            if only_if_free:
                connection = database.try_checkout()
                if connection is None:
                    return None
            else:
                connection = database.checkout(may_wait=may_wait)
        except Exception as exc:
            if getattr(exc, "status_hint", None) == 503:
                self.failure = exc
            raise
        watch = ConnectionWatch(ctx, shared.invalidate, track_tables=shared.track_tables)
        with self._guard():
            lost_race = self._released or self._connection is not None
            if not lost_race:
                self._connection = connection
                self._watch = watch
                self.checked_out_at = shared.monotonic()
                self.site = site
                attach(connection, watch)  # under the lock: release() detaches after this
                self._database.hold(self)
        if lost_race:
            # The request ended while this checkout waited (a cancelled ASGI task), or another
            # thread of the request got there first: this connection goes straight back.
            self._database.checkin(None, connection, 0.0, touched=False)
            if self._connection is not None and not self._released:
                return self._connection
            raise self._released_error()
        return connection

    def release(self, *, only_if_idle: bool = False) -> bool:
        """Give the connection back (rollback + reset); later use raises. True if released.

        ``only_if_idle``: leave it (to be released when the app returns) while a statement is
        running on it in another thread.
        """
        with self._guard():
            connection, watch = self._connection, self._watch
            if connection is None:
                self._released = True
                return True
            if watch is not None and not watch.start_release(only_if_idle=only_if_idle):
                return False
            self._released = True
            self._connection = self._watch = None
            held_seconds = self._shared.monotonic() - self.checked_out_at
        if watch is not None:
            watch.commit_confirmed()  # the request is past its last COMMIT
        # Still observed (and refusing statements: the watch says released) until the database
        # has closed this Connection object, so one kept by app code can never run a statement
        # on a connection that is being reset or already serves another request.
        # A transaction begun without a statement (begin()) counts too: if in doubt, reset.
        touched = watch is None or watch.touched or connection.in_transaction()
        self._database.checkin(self, connection, held_seconds, touched=touched)
        return True

    def confirm_commit(self) -> None:
        """The request has gone on past any COMMIT it sent: invalidate what that wrote."""
        watch = self._watch
        if watch is not None:
            watch.commit_confirmed()

    def _released_error(self, *, context_gone: bool = False) -> RequestDatabaseError:
        why = ("its request is over: nothing refers to its RequestContext any more (code that "
               "builds RequestDatabases itself must hold the context while it uses them)"
               if context_gone else
               "the response ended or started with release_at_response_start(), or the client "
               "disconnected")
        return RequestDatabaseError(
            f"the request's connection to database {self.name!r} was already given back ({why}); "
            "use the database during the request, or open your own with db().engine.connect() "
            "for work that outlives it.")

    def __repr__(self) -> str:
        state = "checked out" if self._connection is not None else (
            "released" if self._released else "idle")
        return f"<RequestDatabase {self.name!r} {state}>"


class RequestDatabases(Mapping[str, RequestDatabase]):
    """Every database's handle for one request (``environ/scope["scalekit.databases"]``)."""

    __slots__ = ("_handles", "_shared", "default", "finished", "release_at_start")

    def __init__(self, databases: Mapping[str, Database], ctx: RequestContext,
                 invalidate: Callable[[tuple[str, ...]], None], track_tables: bool,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._shared = shared = _RequestShared(ctx, invalidate, track_tables, monotonic)
        self.release_at_start = False
        self.finished = False  # the response is over: db() no longer answers with these
        handles: dict[str, RequestDatabase] = {}
        self._handles = handles
        for name, database in databases.items():  # a loop, not a comprehension: one frame less
            handles[name] = RequestDatabase(database, shared)
        self.default = handles["default"]

    @property
    def touched(self) -> bool:
        """True once a handle of the request began a checkout (see :class:`_RequestShared`)."""
        return self._shared.touched

    def __getitem__(self, name: str) -> RequestDatabase:
        return self._handles[name]  # KeyError, as a Mapping should (db() explains it)

    def handle(self, name: str) -> RequestDatabase:
        """The handle of database ``name``, or a RequestDatabaseError saying what exists."""
        try:
            return self._handles[name]
        except KeyError:
            raise RequestDatabaseError(
                f"no database named {name!r}; configured: {', '.join(self._handles)}. Add it "
                f"under [pool.databases.{name}] in scalekit.toml.") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._handles)

    def __len__(self) -> int:
        return len(self._handles)

    def any_checked_out(self) -> bool:
        return self._shared.touched and any(handle.checked_out for handle in self._handles.values())

    def failure(self) -> BaseException | None:
        """The first pool failure (timeout, shed, unavailable) a handle met, if any."""
        if not self._shared.touched:
            return None
        for handle in self._handles.values():
            if handle.failure is not None:
                return handle.failure
        return None

    def confirm_commits(self) -> None:
        """The response starts: every COMMIT the request sent has succeeded by now, so the
        tables they wrote are invalidated before the client sees the answer."""
        if not self._shared.touched:
            return
        for handle in self._handles.values():
            handle.confirm_commit()

    def finish_if_untouched(self) -> bool:
        """:meth:`finish` for the usual request, that never tried a database: two flags, no
        release (True); False if a checkout began (:meth:`release_all` must run, and
        ``all_released`` is already set, so no further checkout starts)."""
        shared = self._shared
        if shared.touched:
            return False
        shared.all_released = True  # set before touched is read again, as release_all() does
        if shared.touched:
            return False
        self.finished = True
        return True

    def finish(self) -> None:
        """The response is over: give everything back for good."""
        self.finished = True
        self.release_all()

    def release_all(self, *, only_if_idle: bool = False) -> bool:
        """Give every connection back; False if one stayed because a statement was running.
        Either way no handle checks out another connection after this."""
        shared = self._shared
        shared.all_released = True
        if not shared.touched:  # no checkout began, and none can now (see _checkout)
            return True
        released = True
        for handle in self._handles.values():
            released = handle.release(only_if_idle=only_if_idle) and released
        return released


def db(name: str = "default") -> RequestDatabase:
    """The current request's handle on database ``name`` (checked out on first use).

    Raises :class:`RequestDatabaseError` outside a request wrapped by scalekit's pool layer.
    """
    ctx = current()
    requests: RequestDatabases | None = ctx.state.get(STATE_KEY) if ctx is not None else None
    if requests is None or requests.finished:
        raise RequestDatabaseError(
            "scalekit.pool.db() was called outside a request handled by scalekit.wrap() with the "
            "pool layer on; inside a request it returns that request's connection handle. "
            "Scripts and background jobs should use their own engine.connect().")
    return requests.default if name == "default" else requests.handle(name)


def release_at_response_start() -> None:
    """Give this request's connections back as soon as its response starts, not at its end.

    For streams, server-sent events and long downloads whose body needs no database: a slow
    client then never pins a connection. The body must not use the database after that (it
    raises :class:`RequestDatabaseError`; open your own with ``db().engine.connect()``).
    Under ASGI the connections go back when the app sends ``http.response.start``; under WSGI
    once ``start_response`` has been called and the app has returned, so code in between
    (Flask's teardown) may still use them. Bodies that are whole when the app is done (a WSGI
    list, an ASGI response's last body message, Flask's and Django's non-streaming responses
    through their adapters) need no call: their connections go back before the transfer.

    >>> def events(environ, start_response):                           # doctest: +SKIP
    ...     rows = db().connection().exec_driver_sql("select id from jobs").all()
    ...     release_at_response_start()
    ...     start_response("200 OK", [("content-type", "text/event-stream")])
    ...     return (f"data: {row.id}\n\n".encode() for row in rows)
    """
    ctx = current()
    requests = ctx.state.get(STATE_KEY) if ctx is not None else None
    if requests is None or requests.finished:
        raise RequestDatabaseError("release_at_response_start() needs a request handled by "
                                   "scalekit.wrap() with the pool layer on.")
    requests.release_at_start = True


def _on_event_loop() -> bool:
    # asyncio._get_running_loop() (in asyncio's __all__, implemented in C) answers None off the
    # loop; get_running_loop() would raise and catch an exception on every sync checkout.
    return asyncio._get_running_loop() is not None


def _caller_site() -> CheckoutSite | None:
    """The first stack frame outside scalekit and its adapters (``scalekit_flask``, ...): where
    app code asked for the connection."""
    frame = sys._getframe(2)
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if not module.startswith("scalekit"):
            code = frame.f_code
            return CheckoutSite(code.co_filename, frame.f_lineno, code.co_name)
        frame = frame.f_back  # type: ignore[assignment]
    return None
