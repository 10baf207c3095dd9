"""Connections kept between requests — the pool layer's one reach into SQLAlchemy internals.

Why it exists: giving a connection back to SQLAlchemy's QueuePool and taking it out again (a
Connection object built, the pool's fairy and record checked out and in, their events fired,
the queue's lock shared with the resetter thread) costs more than the rest of a request's pool
work together. ``python bench/pool.py`` prints both in the same run: a request that used its
connection costs 24 µs of pool work with kept connections and 43 µs through QueuePool, against
1.65 ms for a new psycopg2 connection — 69x and 38x, on either side of the ≥ 50x target
(quiet 2-core VM, Postgres on loopback). So, like pgbouncer keeping its server connections, a
database keeps the Connections its requests gave back (reset as before) on a LIFO stack of its
own and lends them again as they are: the hot ones stay hot, and the engine's pool sees them as
checked out all along.

What it reads and writes that SQLAlchemy does not document, all in this module (SQLAlchemy
2.0 and 2.1; ``tests/pool/test_reuse.py::test_the_sqlalchemy_internals_reuse_relies_on`` fails
loudly on a release that changes any of them, and ``pyproject.toml`` pins ``sqlalchemy<2.2``):

- a Connection's ``__dict__`` (its name-mangled ``_Connection__*`` keys included), to tell a
  Connection that is as a fresh one would be, and to build one (``object.__new__``) on a kept
  pooled connection without a pool checkout (:func:`renewed`);
- the pool record's ``finalize_callback`` (what undoes execution options such as an isolation
  level), ``starttime`` (recycle age), the fairy's ``_pool`` and ``_connection_record``, the
  pool's ``_invalidate_time`` (a disconnect seen since) and ``_invalidate()``, the dialect's
  ``_isolation_lookup``, the engine's ``_execution_options``;
- the listener lists of the pool's and engine's ``dispatch``, so that an app adding pool
  events gets every checkout through QueuePool again.

Should a release change the Connection's layout, the database logs it and keeps none (every
connection then goes through QueuePool, as with ``reuse_connections = false``).

A Connection is kept only when it is what a fresh ``engine.connect()`` would give
(:meth:`KeepRules.verdict`); otherwise it is closed (back to QueuePool, whose return resets
what it knows of) or, when the driver's own settings changed, invalidated. Whether one taken
from the stack may be lent is checked again at checkout (:meth:`KeepRules.is_current`: age,
pool invalidations, a disposed pool), then its liveness. The Connection object the app held
never outlives its request: the stack gets a new object carrying the same pooled DBAPI
connection, and the app's is left closed.

>>> KeepRules.fresh_layout_is_known(frozenset(FRESH_KEYS))
True
"""

from __future__ import annotations

import enum
import logging
import time
from typing import Any

from sqlalchemy.engine import Connection, Engine

from .engines import DBAPI_SETTING_NAMES, DBAPI_SETTINGS, dbapi_settings
from .liveness import PING_WHEN_IDLE_SECONDS, RETURNED_AT, is_quiet

__all__ = ["FRESH_KEYS", "KeepRules", "KeptConnections", "Verdict", "renewed"]

log = logging.getLogger("scalekit.pool")

# What SQLAlchemy (2.0 to 2.1) puts in a new Connection's __dict__: renewed() builds exactly
# this, and a database whose fresh connections look different keeps none.
FRESH_KEYS = frozenset({
    "engine", "dialect", "dispatch", "_dbapi_connection", "_transaction", "_nested_transaction",
    "_Connection__savepoint_seq", "_Connection__in_begin", "_Connection__can_reconnect",
    "_allow_autobegin", "_echo", "_execution_options",
})
# Attributes ordinary use leaves on a Connection, harmless at these values (the class's own).
# Anything else (``_has_events``: a listener on this Connection; ``_message_formatter``: a
# logging token; an attribute of the app's) means the Connection is not as a fresh one.
HARMLESS_LEFTOVERS: dict[str, Any] = {
    "_is_disconnect": False, "_trans_context_manager": None, "_reentrant_error": False,
}
# Connections a parent process had kept when it forked. The child must neither use nor close
# them (their sockets are the parent's), nor let garbage collection return them to a pool
# (which rolls back on the socket): they are kept, unused.
_PARENT_KEPT: list[list[Connection]] = []


class Verdict(enum.Enum):
    """What becomes of a Connection a request gave back (after its reset)."""

    KEEP = "keep"  # on the stack, lent again as it is
    CLOSE = "close"  # back to QueuePool (its return resets what SQLAlchemy changed)
    INVALIDATE = "invalidate"  # the DBAPI connection is closed: nobody may get it again


class KeepRules:
    """Which Connections a database may keep, for one engine.

    The engine's own pool checkout/checkin/reset and engine_connect listeners (scalekit's) are
    counted at start: a Connection kept on the stack skips those events, so once app code adds
    one, connections go back through QueuePool again and its listeners see every checkout.
    """

    __slots__ = ("_baseline", "engine", "recycle_seconds")

    def __init__(self, engine: Engine, recycle_seconds: float) -> None:
        self.engine = engine
        self.recycle_seconds = recycle_seconds
        self._baseline = self._listener_counts()

    @staticmethod
    def fresh_layout_is_known(keys: frozenset[str]) -> bool:
        """True when a new Connection has exactly the attributes :func:`renewed` builds."""
        return keys == FRESH_KEYS

    def _listener_counts(self) -> tuple[int, int, int, int]:
        pool_events, engine_events = self.engine.pool.dispatch, self.engine.dispatch
        return (len(pool_events.checkout), len(pool_events.checkin), len(pool_events.reset),
                len(engine_events.engine_connect))

    def verdict(self, connection: Connection, *, touched: bool = True) -> Verdict:
        """KEEP only if ``connection`` (rolled back and reset) is exactly as a fresh one.

        ``touched`` False: the request never reached the DBAPI connection (see
        tracking.ConnectionWatch.touched), so its driver settings are not read again.
        """
        state = connection.__dict__
        fairy = state.get("_dbapi_connection")
        if fairy is None or not fairy.is_valid:
            return Verdict.CLOSE  # closed or invalidated: nothing to keep
        record = fairy._connection_record
        restored_characteristics = bool(record.finalize_callback)
        while record.finalize_callback:
            # Execution options such as isolation_level left these to undo the driver settings
            # they changed; QueuePool's check-in would run them. Run now, so that the settings
            # compared below are those a check-in would leave.
            record.finalize_callback.pop()(fairy.dbapi_connection)
        if touched and not self._has_settings_as_opened(fairy):
            return Verdict.INVALIDATE  # QueuePool would lend it with the app's driver settings
        engine = self.engine
        same_as_fresh = (
            not restored_characteristics
            and state.get("_transaction") is None and state.get("_nested_transaction") is None
            and state.get("_execution_options") is engine._execution_options
            and state.get("_Connection__can_reconnect") is True
            and state.get("_Connection__in_begin") is False
            and state.get("_allow_autobegin") is True
            and all(key in FRESH_KEYS or (key in HARMLESS_LEFTOVERS and value == HARMLESS_LEFTOVERS[key])
                    for key, value in state.items())
        )
        if not same_as_fresh or self._listener_counts() != self._baseline:
            return Verdict.CLOSE
        return Verdict.KEEP if self.is_current(connection, time.time()) else Verdict.INVALIDATE

    def _has_settings_as_opened(self, fairy: Any) -> bool:
        settings = dbapi_settings(fairy.dbapi_connection)
        opened = fairy.info.get(DBAPI_SETTINGS)
        if settings == opened or opened is None:
            return bool(settings == opened)
        # SQLAlchemy undoes an isolation_level option by setting the dialect's default level
        # explicitly (psycopg2: READ COMMITTED where it was None, "the server's default"), which
        # is that same level (read from the server at the first connect).
        dialect = self.engine.dialect
        lookup = getattr(dialect, "_isolation_lookup", None)
        default = lookup.get(dialect.default_isolation_level) if isinstance(lookup, dict) else None
        index = DBAPI_SETTING_NAMES.index("isolation_level")
        if default is None or opened[index] is not None or settings[index] != default:
            return False
        return bool(settings[:index] + (None,) + settings[index + 1:] == opened)

    def is_current(self, connection: Connection, now: float) -> bool:
        """False when QueuePool would not lend this connection's DBAPI connection any more.

        Its pool was disposed (replaced) since, the engine's execution options changed (a
        fresh Connection would have the new ones), a disconnect seen on another connection
        invalidated every connection opened before it, or it is older than recycle_seconds
        (all three checked by QueuePool on its own checkouts, which kept ones skip).
        ``now`` is wall-clock time, as the pool's records use.
        """
        state = connection.__dict__
        fairy = state.get("_dbapi_connection")
        engine = self.engine
        pool = engine.pool
        if (fairy is None or fairy._pool is not pool
                or state.get("_execution_options") is not engine._execution_options):
            return False
        started = fairy._connection_record.starttime
        if pool._invalidate_time > started:
            return False
        return not (self.recycle_seconds > 0 and now - started > self.recycle_seconds)


def renewed(connection: Connection) -> Connection:
    """A new Connection object on ``connection``'s pooled DBAPI connection, fresh in every
    attribute; ``connection`` itself is left closed (without giving anything back).

    Costs a dict of a dozen entries instead of ``Connection.__init__`` and a pool checkout.
    The event dispatcher (the engine's, joined) moves to the new object: kept Connections have
    no listeners of their own (see KeepRules.verdict), and the old object gets a new, empty one
    should anything listen on it later.
    """
    state = connection.__dict__
    engine = state["engine"]
    fresh = object.__new__(type(connection))
    fresh.__dict__.update({
        "engine": engine,
        "dialect": state["dialect"],
        "dispatch": state.pop("dispatch"),
        "_dbapi_connection": state["_dbapi_connection"],
        "_transaction": None,
        "_nested_transaction": None,
        "_Connection__savepoint_seq": 0,
        "_Connection__in_begin": False,
        "_Connection__can_reconnect": True,
        "_allow_autobegin": True,
        "_echo": engine._should_log_info(),
        "_execution_options": engine._execution_options,
    })
    # What Connection.close() leaves: no DBAPI connection, and no reconnecting.
    state["_dbapi_connection"] = None
    state["_Connection__can_reconnect"] = False
    return fresh


class KeptConnections:
    """The stack of one database's kept Connections, newest last.

    Each push and pop is one list operation, atomic under the GIL. A kept Connection holds no
    slot of the database: it is pushed before its slot is freed and popped after one is taken,
    so kept + lent never exceed max_connections. At most ``pool_size`` connections are idle
    (kept, or in QueuePool): like QueuePool with an overflow connection, one more is closed.
    """

    def __init__(self, name: str, engine: Engine, *, recycle_seconds: float, pool_size: int,
                 check_liveness: bool) -> None:
        self.name = name
        self.rules = KeepRules(engine, recycle_seconds)
        self.pool_size = pool_size
        self.check_liveness = check_liveness
        self.stack: list[Connection] = []

    def __len__(self) -> int:
        return len(self.stack)

    def accepts(self, connection: Connection) -> bool:
        """Whether connections like ``connection`` (just built by the engine) can be kept.

        False, logged, for a Connection layout :func:`renewed` does not rebuild (another
        SQLAlchemy release, or an engine_connect listener adding attributes).
        """
        keys = frozenset(connection.__dict__)
        if KeepRules.fresh_layout_is_known(keys):
            return True
        log.warning("scalekit: database %r: SQLAlchemy's Connection has attributes %s; "
                    "connections go back to the engine's pool instead of being kept",
                    self.name, sorted(keys ^ FRESH_KEYS))
        return False

    def take(self) -> Connection | None:
        """The newest kept connection that may still be lent, or None; the others met on the
        way are discarded (never raising)."""
        stack = self.stack
        while stack:
            try:
                connection = stack.pop()
            except IndexError:  # another thread took the last one
                return None
            if self._is_lendable(connection):
                return connection
        return None

    def _is_lendable(self, connection: Connection) -> bool:
        """The checks QueuePool's checkout would run, which a kept connection skips: the
        pool's (age, invalidation, disposal), then the liveness check (pre_ping)."""
        rules = self.rules
        if not rules.is_current(connection, time.time()):
            discard(connection)
            return False
        if not self.check_liveness:
            return True
        proxied = connection.__dict__["_dbapi_connection"]
        info = proxied.info
        dbapi_connection = proxied.dbapi_connection
        returned_at = info.get(RETURNED_AT)
        if (returned_at is not None and time.monotonic() - returned_at < PING_WHEN_IDLE_SECONDS
                and is_quiet(dbapi_connection, info)):
            return True
        try:
            rules.engine.dialect.do_ping(dbapi_connection)
            return True
        except Exception as exc:  # noqa: BLE001  (whatever the failure, this one is dead)
            log.info("scalekit: an idle connection to database %r failed its liveness check "
                     "(%s); discarding it", self.name, exc)
            # As SQLAlchemy's pre-ping does: every connection opened before it is suspect.
            rules.engine.pool._invalidate(proxied, exc, _checkin=False)
            discard(connection)
            return False

    def keep(self, connection: Connection, *, touched: bool) -> Verdict:
        """Keep ``connection`` (already reset) if it is as a fresh one and fewer than
        ``pool_size`` are idle. KEEP: it is on the stack (the app's object is closed from here
        on); CLOSE or INVALIDATE: the caller does that."""
        verdict = self.rules.verdict(connection, touched=touched)
        if verdict is not Verdict.KEEP:
            return verdict
        # self.rules.engine: this runs on the resetter thread, which must never be the one to
        # act on a fork (the database's engine property would).
        if len(self.stack) + self.rules.engine.pool.checkedin() >= self.pool_size:  # type: ignore[attr-defined]
            # pool_size connections are idle already: this one is to be closed for good
            # (detached: its socket closes, its pool record goes back empty and connects again
            # when needed), as QueuePool closes an overflow connection.
            connection.detach()
            return Verdict.CLOSE
        kept = renewed(connection)
        kept.__dict__["_dbapi_connection"].info[RETURNED_AT] = time.monotonic()
        self.stack.append(kept)
        return Verdict.KEEP

    def close_all(self) -> None:
        """Give every kept connection back to the pool (shutdown: the pool then closes them)."""
        stack = self.stack
        while stack:
            try:
                connection = stack.pop()
            except IndexError:
                return
            try:
                connection.close()
            except Exception:
                log.debug("scalekit: closing an idle connection failed", exc_info=True)
                discard(connection)

    def forget_parent(self) -> None:
        """In a forked child: the parent's kept connections are neither used nor closed here."""
        _PARENT_KEPT.append(self.stack)
        self.stack = []


def discard(connection: Connection) -> None:
    """Invalidate and close ``connection``, whatever state it is in (never raising)."""
    for step in (connection.invalidate, connection.close):
        try:
            step()
        except Exception:
            log.debug("scalekit: discarding a broken connection", exc_info=True)
