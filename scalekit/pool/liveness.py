"""The pre-ping of pooled connections: a socket poll first, a round trip only when in doubt.

SQLAlchemy's ``pool_pre_ping`` sends a query on every checkout, a round trip that would cost
more than the rest of a request's pool work together. A server that restarts, or a proxy that
drops the connection, leaves the socket readable (an error message, or end of file), so a
zero-timeout poll tells a dead connection from a live one for free; the query runs only then,
when the driver gives no socket to poll, or when the connection sat idle longer than
:data:`PING_WHEN_IDLE_SECONDS` (a peer that vanished silently). It is installed with
SQLAlchemy's public pool events (``checkin`` notes when a connection came back, ``checkout``
checks it), so connections the app takes with ``engine.connect()`` are checked too.

>>> import socket
>>> ours, theirs = socket.socketpair()
>>> class Driver:  # what the check reads of a DBAPI connection
...     closed = 0
...     def fileno(self): return ours.fileno()
>>> is_quiet(Driver(), {})
True
>>> theirs.close()  # the server went away: end of file
>>> is_quiet(Driver(), {}), ours.close()
(False, None)
"""

from __future__ import annotations

import select
import time
from typing import Any

import sqlalchemy.exc
from sqlalchemy import event
from sqlalchemy.engine import Engine

__all__ = ["PING_WHEN_IDLE_SECONDS", "install_liveness_check", "is_quiet"]

# An idle connection whose socket stayed quiet is pinged anyway after this long; the pool's
# recycle_seconds bounds its age regardless.
PING_WHEN_IDLE_SECONDS = 5.0
RETURNED_AT = "scalekit.returned_at"  # connection record info: when it was last given back
POLLER = "scalekit.poller"  # connection record info: (socket descriptor, poll object on it)

_poll = getattr(select, "poll", None)  # not on Windows


def install_liveness_check(engine: Engine) -> None:
    """Check every connection ``engine``'s pool lends: poll its socket, ping when in doubt.

    A failed ping raises ``InvalidatePoolError``, SQLAlchemy's public way for a checkout
    event to say so: the pool then invalidates every connection opened before this one (as
    its own pre-ping does) and retries with a fresh one, so one request pays for the discovery
    and the others get fresh connections.
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
        if time.monotonic() - returned_at < PING_WHEN_IDLE_SECONDS and is_quiet(dbapi_connection, info):
            return
        try:
            dialect.do_ping(dbapi_connection)
        except Exception as exc:  # whatever the failure, this one is dead
            raise sqlalchemy.exc.InvalidatePoolError(f"pre-ping failed: {exc}") from exc


def is_quiet(dbapi_connection: Any, info: dict[Any, Any]) -> bool:
    """True when an idle connection's socket has nothing to read (no error, no end of file).

    ``info`` (the pool record's) keeps a poll object registered on the socket's descriptor, so
    each check is one zero-timeout ``poll()``. poll() always reports POLLHUP and POLLERR, and
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
        poller = info.get(POLLER)
        if poller is None or poller[0] != descriptor:
            watcher = _poll()
            watcher.register(descriptor, select.POLLIN)
            poller = info[POLLER] = (descriptor, watcher)
        return not poller[1].poll(0)
    except (OSError, ValueError):
        return False
