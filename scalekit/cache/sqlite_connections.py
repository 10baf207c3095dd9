"""SQLite connections owned by one object, whichever threads opened them, closed by it.

The disk tier opens a connection per thread and the host's generations file one per process;
both must close every one of them when they close (or are collected), not leave them to the
garbage collector: a connection closed by the collector is a leak Python 3.13 reports
(``ResourceWarning: unclosed database``), and a test suite run with warnings as errors fails on
it. A connection only its opening thread uses is closed, once that thread has ended, at the
next opening; one threads share stays open until its owner closes.

A connection whose set-up statements fail (a file that is not a database, a lock held past the
timeout) is closed there and then (:func:`closed_on_failure`): left to the collector, it would stay
open, file descriptor and all, as long as the error's traceback lives.

After a fork the parent's connections are set aside and kept open, never used nor closed by the
child: SQLite forbids carrying a connection across ``fork()``, and closing one may checkpoint
the parent's write-ahead log.

>>> import sqlite3
>>> owned = OwnedConnections()
>>> connection = owned.add(sqlite3.connect(":memory:"))
>>> owned.close_all()
>>> connection.execute("SELECT 1")
Traceback (most recent call last):
  ...
sqlite3.ProgrammingError: Cannot operate on a closed database.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import weakref
from collections.abc import Iterator

from ..forks import pid

__all__ = ["OwnedConnections", "closed_on_failure"]

# A connection, and the thread it belongs to (None: any thread may use it).
Owned = tuple["weakref.ref[threading.Thread] | None", sqlite3.Connection]

# The connections a forked child inherited: referenced so the collector never closes them there.
_INHERITED: list[sqlite3.Connection] = []


@contextlib.contextmanager
def closed_on_failure(connection: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``connection`` while its set-up statements run: closed at once if one of them fails."""
    try:
        yield connection
    except BaseException:
        connection.close()
        raise


class OwnedConnections:
    """The connections an object opened, each with the thread it belongs to, if one (see the module)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: list[Owned] = []
        self._pid = [pid()]  # a cell the finalizer shares: whose connections these are
        # Collected without close_all(): still closed, explicitly (set aside in a forked child).
        weakref.finalize(self, _close_owned, self._open, self._pid)

    def add(self, connection: sqlite3.Connection, *, this_thread_only: bool = False) -> sqlite3.Connection:
        """Own ``connection`` until :meth:`close_all`. ``this_thread_only``: only the current
        thread uses it, so it is closed once that thread has ended (at a later call here).
        Closes the connections of ended threads."""
        ended: list[Owned] = []
        with self._lock:
            self._set_aside_after_fork()
            kept: list[Owned] = []
            for thread, owned in self._open:
                alive = thread() if thread is not None else None
                (ended if thread is not None and (alive is None or not alive.is_alive())
                 else kept).append((thread, owned))
            self._open[:] = kept
            opener = weakref.ref(threading.current_thread()) if this_thread_only else None
            self._open.append((opener, connection))
        _close(ended)
        return connection

    def discard(self, connection: sqlite3.Connection) -> None:
        """Close ``connection`` and forget it (one being replaced, or found broken)."""
        with self._lock:
            self._open[:] = [item for item in self._open if item[1] is not connection]
        connection.close()

    def close_all(self) -> None:
        """Close every connection owned (those a forked child inherited are only set aside)."""
        with self._lock:
            self._set_aside_after_fork()
            owned = list(self._open)
            self._open.clear()
        _close(owned)

    def _set_aside_after_fork(self) -> None:
        _set_aside(self._open, self._pid)


def _set_aside(owned: list[Owned], owner_pid: list[int]) -> None:
    if owner_pid[0] != pid():
        owner_pid[0] = pid()
        _INHERITED.extend(connection for _, connection in owned)
        owned.clear()


def _close_owned(owned: list[Owned], owner_pid: list[int]) -> None:
    _set_aside(owned, owner_pid)
    _close(owned)
    owned.clear()


def _close(owned: list[Owned]) -> None:
    for _, connection in owned:
        try:
            connection.close()
        except sqlite3.Error:
            pass  # closing is all that was left to do with it
