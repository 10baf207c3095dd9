"""Connections kept between requests: the idle stack of a :class:`~.engines.Database`.

Giving a connection back to SQLAlchemy's QueuePool and taking it out again cost more than the
rest of a request's pool work together: a Connection object built, the pool's fairy and
record checked out and in, their events fired. So, like pgbouncer keeping its server
connections, a database keeps the SQLAlchemy Connections its requests gave back (reset as
before) on a LIFO stack of its own and lends them again as they are: the hot ones stay hot,
and the engine's pool sees them as checked out all along.

A Connection is kept only when it is what a fresh ``engine.connect()`` would give
(:meth:`IdleRules.verdict`); otherwise it is closed (back to QueuePool, whose return resets
what it knows of) or, when the driver's own settings changed, invalidated. Whether one taken
from the stack may be lent is checked again at checkout (:meth:`IdleRules.is_current`: age,
pool invalidations, a disposed pool), before the liveness check.

The Connection object the app held never outlives its request: the stack gets a new object
carrying the same pooled DBAPI connection (:func:`renewed`), and the app's is left closed, so
a reference kept past the response raises "This Connection is closed", as it did when
connections went back to QueuePool.

>>> IdleRules.fresh_layout_is_known(frozenset(FRESH_KEYS))
True
"""

from __future__ import annotations

import enum
import time
from typing import Any

from sqlalchemy.engine import Connection, Engine

__all__ = ["DBAPI_SETTINGS", "FRESH_KEYS", "IdleRules", "Verdict", "dbapi_settings", "renewed"]

# Pool record info: the DBAPI connection's client-side settings when it was opened.
DBAPI_SETTINGS = "scalekit.dbapi_settings"

# What SQLAlchemy (1.4 to 2.1) puts in a new Connection's __dict__: renewed() builds exactly
# this, and a database whose fresh connections look different keeps none (IdleRules).
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

# Client-side settings of the DBAPI connection that outlive a session reset (DISCARD ALL
# cannot reach them): psycopg2's, then sqlite3's. Missing ones read as None.
_SETTING_NAMES = ("autocommit", "isolation_level", "readonly", "deferrable", "encoding",
                  "cursor_factory", "row_factory", "text_factory")
_UNREADABLE = ("unreadable",)


def dbapi_settings(dbapi_connection: Any) -> tuple[Any, ...]:
    """The client-side settings of a DBAPI connection, to compare with those it was opened with.

    Typecasters registered on a psycopg2 connection count too (by number). A connection whose
    settings cannot be read (closed by the app) gets a value no open connection has.
    """
    try:
        values = tuple(getattr(dbapi_connection, name, None) for name in _SETTING_NAMES)
        casters = tuple(len(getattr(dbapi_connection, name, ())) for name in ("string_types", "binary_types"))
    except Exception:  # noqa: BLE001  (psycopg2: InterfaceError on a closed connection)
        return _UNREADABLE
    return values + casters


class Verdict(enum.Enum):
    """What becomes of a Connection a request gave back (after its reset)."""

    KEEP = "keep"  # on the idle stack, lent again as it is
    CLOSE = "close"  # back to QueuePool (its return resets what SQLAlchemy changed)
    INVALIDATE = "invalidate"  # the DBAPI connection is closed: nobody may get it again


class IdleRules:
    """Which Connections a database may keep, for one engine.

    ``listener_counts`` are the engine's own pool checkout/checkin/reset listeners (scalekit's):
    a Connection kept on the stack skips those events, so once app code adds one, connections
    go back through QueuePool again and its listeners see every checkout.
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
        index = _SETTING_NAMES.index("isolation_level")
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
    no listeners of their own (see IdleRules.verdict), and the old object gets a new, empty one
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
