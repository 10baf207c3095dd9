"""Tag generations persisted in a file shared by the processes of one host.

See :class:`HostGenerations`; the in-process base and the numbering are in
:mod:`scalekit.cache.generations`, the doorbells between processes in :mod:`.hostpeers`.

>>> import tempfile, os
>>> generations = HostGenerations(os.path.join(tempfile.mkdtemp(), "generations.sqlite3"))
>>> stamp = generations.stamp(["product:42"], generations.sequence())
>>> generations.invalidate(["product:42"]).reach
'host'
>>> generations.is_current(stamp)
False
>>> generations.close()
"""

from __future__ import annotations

import asyncio
import logging
import os
import select
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from ..forks import pid
from .generations import LocalGenerations, restart_in_forked_children
from .hostpeers import HostPeers
from .invalidation import InvalidationResult
from .sqlite_connections import OwnedConnections, closed_on_failure

__all__ = ["HostGenerations"]

log = logging.getLogger("scalekit.cache")


class HostGenerations(LocalGenerations):
    """Generations persisted in an SQLite file shared by every process of one host.

    Why: L3 outlives the process and is shared by gunicorn workers, so the generations that
    guard it must too. An invalidation in one worker (or ``scalekit invalidate`` without
    Redis) is committed here; the writer then rings every other registered process
    (:class:`~.hostpeers.HostPeers`), each loads the file and answers, and the writer waits up
    to ``ack_timeout_seconds`` for the answers (read-your-writes across the host's workers).
    Each watcher also polls the file every ``poll_interval_seconds``, so a lost ring only
    delays. A restarted process loads the file before serving, so an L3 entry whose tags were
    invalidated while it was down is never current again.
    Reads stay plain dict lookups: the file is only touched by writers and the watcher.
    """

    spans_processes = True

    def __init__(self, path: str | os.PathLike[str], *, poll_interval_seconds: float = 0.05,
                 ack_timeout_seconds: float = 0.05) -> None:
        super().__init__()
        self.path = Path(path)
        self.poll_interval_seconds = poll_interval_seconds
        self.ack_timeout_seconds = ack_timeout_seconds
        self._persist_lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None
        self._connection_pid = 0
        self._owned = OwnedConnections()  # this one and the watcher's, closed by close()
        self._seen = 0  # the file's write counter as of the last read
        self._watcher: threading.Thread | None = None
        self._watcher_pid = 0
        self._peers: HostPeers | None = None
        self._stop = threading.Event()
        restart_in_forked_children(self, "_forked")
        try:
            self._load(self._open())
        except (sqlite3.Error, OSError) as error:
            log.warning("tag generations file %s unreadable (%s); invalidations stay in this "
                        "process until it is writable", self.path, error)

    def _open(self) -> sqlite3.Connection:
        if self._connection is None or self._connection_pid != pid():
            self._connection_pid = pid()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(self.path, timeout=1.0, isolation_level=None,
                                         check_same_thread=False)
            with closed_on_failure(connection):
                _use_wal(connection)
                # WAL + NORMAL: a commit survives the process crashing (what a restart needs)
                # without an fsync per invalidation.
                connection.execute("PRAGMA synchronous=NORMAL")
                connection.executescript(_GENERATIONS_SCHEMA)
            self._connection = self._owned.add(connection)
        return self._connection

    def _load(self, connection: sqlite3.Connection) -> int:
        """Adopt what other processes wrote; the file's write counter now applied here."""
        # One read transaction, so the rows and the counters agree.
        connection.execute("BEGIN")
        try:
            rows = connection.execute(
                "SELECT tag, generation, written FROM generations WHERE written > ?",
                (self._seen,)).fetchall()
            sequence, writes = connection.execute(
                "SELECT (SELECT value FROM meta WHERE name = 'sequence'), "
                "(SELECT value FROM meta WHERE name = 'writes')").fetchone()
        finally:
            connection.execute("COMMIT")
        with self._lock:
            for tag, generation, _ in rows:
                if self._generations.get(tag, 0) < generation:
                    self._generations[tag] = generation
            self._seen = max(self._seen, int(writes))
            self._sequence = max(self._sequence, int(sequence))
            return self._seen

    # ----------------------------------------------------------------- writes
    def invalidate(self, tags: Iterable[str]) -> InvalidationResult:
        """Invalidate ``tags`` for every process of this host; wait (briefly) until they have."""
        tag_list = [tag for tag in tags if tag]
        if not tag_list:
            return InvalidationResult(tags=(), reach="host", acknowledged=True)
        try:
            with self._persist_lock:
                connection = self._open()
                connection.execute("BEGIN IMMEDIATE")
                try:
                    stored = connection.execute(
                        "SELECT value FROM meta WHERE name = 'sequence'").fetchone()[0]
                    sequence = max(int(stored), self._sequence) + 1
                    written = self._write(connection, sequence, tag_list)
                    connection.execute("COMMIT")
                except BaseException:
                    connection.execute("ROLLBACK")
                    raise
                followers = dict(connection.execute("SELECT address, pid FROM doorbells"))
        except (sqlite3.Error, OSError) as error:
            log.warning("could not persist invalidation of %s to %s (%s); applied in this "
                        "process only", tag_list, self.path, error)
            super().apply_here(tag_list)
            return InvalidationResult(
                tags=tuple(tag_list), reach="process",
                detail=f"the host's generations file {self.path} is not writable: {error}")
        super().apply(sequence, tag_list)
        missing = self._await_followers(followers, written)
        return InvalidationResult(tags=tuple(tag_list), reach="host", acknowledged=not missing,
                                  unacknowledged=tuple(f"pid {followers[address]}"
                                                       for address in missing),
                                  sequence=sequence)

    async def ainvalidate(self, tags: Iterable[str]) -> InvalidationResult:
        return await asyncio.to_thread(self.invalidate, tags)

    def _await_followers(self, followers: dict[str, int], written: int) -> list[str]:
        """Ring the other followers of the file about ``written``; those that did not answer."""
        if not followers:
            return []
        self.start()  # the watcher receives the answers (the CLI has none running otherwise)
        peers = self._peers
        others = [address for address in followers if peers is None or address != peers.address]
        if peers is None or not others:
            return others
        rung, gone = peers.ring(others, written)
        if gone:
            self._unregister(gone)
        if not rung:
            return []
        return peers.wait(rung, written, timeout_seconds=self.ack_timeout_seconds)

    def apply(self, sequence: int, tags: Iterable[str]) -> bool:
        tag_list = list(tags)
        changed = super().apply(sequence, tag_list)
        if changed:
            try:
                with self._persist_lock:
                    connection = self._open()
                    connection.execute("BEGIN IMMEDIATE")
                    try:
                        self._write(connection, sequence, tag_list)
                        connection.execute("COMMIT")
                    except BaseException:
                        connection.execute("ROLLBACK")
                        raise
            except (sqlite3.Error, OSError) as error:
                log.warning("could not persist generations to %s (%s)", self.path, error)
        return changed

    @staticmethod
    def _write(connection: sqlite3.Connection, sequence: int, tags: list[str]) -> int:
        # "written" orders changes for the watchers (generations need not arrive in order).
        written: int = connection.execute(
            "UPDATE meta SET value = value + 1 WHERE name = 'writes' RETURNING value").fetchone()[0]
        connection.executemany(
            "INSERT INTO generations VALUES (?, ?, ?) ON CONFLICT(tag) DO UPDATE SET "
            "generation = max(generation, excluded.generation), written = excluded.written",
            [(tag, sequence, written) for tag in tags])
        connection.execute("UPDATE meta SET value = max(value, ?) WHERE name = 'sequence'",
                           (sequence,))
        return written

    # ----------------------------------------------------------------- fleet bookkeeping
    def remember_unpublished(self, tags: Iterable[str]) -> None:
        """Record tags invalidated while the fleet could not be told, so a restart before
        Redis comes back still replays them (see FleetGenerations)."""
        self._execute_many("INSERT OR IGNORE INTO unpublished VALUES (?)", [(tag,) for tag in tags])

    def forget_unpublished(self, tags: Iterable[str]) -> None:
        self._execute_many("DELETE FROM unpublished WHERE tag = ?", [(tag,) for tag in tags])

    def unpublished(self) -> set[str]:
        return {str(tag) for (tag,) in self._select("SELECT tag FROM unpublished")}

    def fleet_epoch(self) -> str | None:
        """The Redis state the generations in this file last followed (kept across restarts:
        entries on disk were stamped under it)."""
        rows = self._select("SELECT value FROM labels WHERE name = 'fleet_epoch'")
        return str(rows[0][0]) if rows else super().fleet_epoch()

    def record_fleet_epoch(self, epoch: str) -> None:
        super().record_fleet_epoch(epoch)
        self._execute_many("INSERT OR REPLACE INTO labels VALUES ('fleet_epoch', ?)", [(epoch,)])

    def _select(self, query: str) -> list[tuple[object, ...]]:
        try:
            with self._persist_lock:
                return list(self._open().execute(query).fetchall())
        except (sqlite3.Error, OSError):
            return []

    def _execute_many(self, statement: str, rows: list[tuple[object, ...]]) -> None:
        try:
            with self._persist_lock:
                self._open().executemany(statement, rows)
        except (sqlite3.Error, OSError) as error:
            log.warning("could not record fleet state in %s (%s)", self.path, error)

    def _unregister(self, addresses: Iterable[str]) -> None:
        self._execute_many("DELETE FROM doorbells WHERE address = ?",
                           [(address,) for address in addresses])

    # ----------------------------------------------------------------- watcher
    def sequence(self) -> int:
        if self._watcher_pid != pid():
            self.start()
        return self._sequence

    def start(self) -> None:
        """Start (or, after a fork, restart) the thread that follows other processes' writes
        and answers their rings; registers this process in the file."""
        if self._watcher_pid == pid():
            return
        with self._persist_lock:
            if self._watcher_pid == pid():
                return
            if self._peers is not None:
                self._peers.close()  # inherited from the parent process
            self._peers = None
            try:
                self._peers = HostPeers(self.path)
            except OSError as error:
                log.warning("no doorbell for the processes sharing %s (%s); they learn of "
                            "invalidations every %.2f s", self.path, error, self.poll_interval_seconds)
            self._watcher_pid = pid()
            self._connection = None
            self._stop = threading.Event()
            self._watcher = threading.Thread(target=self._watch, args=(self._stop, self._peers),
                                             name="scalekit-generations", daemon=True)
            self._watcher.start()
        if self._peers is not None:
            self._execute_many("INSERT OR REPLACE INTO doorbells VALUES (?, ?)",
                               [(self._peers.address, pid())])

    def _forked(self) -> None:
        """In a forked child: follow the file again if the parent did, with new locks (one
        another thread of the parent held at the fork, a write waiting for SQLite say, would
        never be released here)."""
        self.renew_locks_after_fork()
        self._persist_lock = threading.Lock()
        if self._watcher_pid not in (0, pid()):
            self.start()

    def _watch(self, stop: threading.Event, peers: HostPeers | None) -> None:
        version = None
        connection: sqlite3.Connection | None = None

        def applied(written: int) -> int:
            nonlocal connection
            if connection is None:
                connection = self._owned.add(sqlite3.connect(self.path, timeout=1.0, isolation_level=None),
                                              this_thread_only=True)
            return self._load(connection)

        while not stop.is_set():
            if peers is not None:
                readable, _, _ = select.select([peers], [], [], self.poll_interval_seconds)
            else:
                readable = []
                stop.wait(self.poll_interval_seconds)
            if stop.is_set():
                break
            try:
                if readable and peers is not None:
                    peers.receive(applied)
                if connection is None:
                    connection = self._owned.add(sqlite3.connect(self.path, timeout=1.0, isolation_level=None),
                                              this_thread_only=True)
                # data_version changes when another connection commits to the file.
                current = connection.execute("PRAGMA data_version").fetchone()[0]
                if current != version:
                    version = current
                    self._load(connection)
            except (sqlite3.Error, OSError):
                if connection is not None:
                    self._owned.discard(connection)
                connection = None  # retried on the next tick
        if connection is not None:
            self._owned.discard(connection)

    def close(self) -> None:
        self._stop.set()
        if self._peers is not None:
            self._peers.wake()  # out of its select() now, not at the next poll
        if self._watcher is not None and self._watcher is not threading.current_thread():
            self._watcher.join(timeout=1.0)
        if self._peers is not None:
            if self._watcher_pid == pid():
                self._unregister([self._peers.address])
            self._peers.close()
            self._peers = None
        self._watcher_pid = 0
        self._connection = None
        self._owned.close_all()


def _use_wal(connection: sqlite3.Connection) -> None:
    """Switch the file to WAL. Processes creating the file together race for the switch, and
    SQLite answers the losers SQLITE_BUSY at once (the busy timeout does not apply), so the
    switch is retried for a few seconds: the first one to win settles it for the file."""
    pause = 0.001
    deadline = time.monotonic() + 5.0
    while True:
        try:
            connection.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError as error:
            busy = getattr(error, "sqlite_errorcode", None) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
            if not busy or time.monotonic() > deadline:
                raise
            time.sleep(pause)
            pause = min(2 * pause, 0.05)
        else:
            return


_GENERATIONS_SCHEMA = """
CREATE TABLE IF NOT EXISTS generations (
    tag TEXT PRIMARY KEY, generation INTEGER NOT NULL, written INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS generations_by_write ON generations(written);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('sequence', 0);
INSERT OR IGNORE INTO meta VALUES ('writes', 0);
CREATE TABLE IF NOT EXISTS unpublished (tag TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS labels (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS doorbells (address TEXT PRIMARY KEY, pid INTEGER NOT NULL);
"""
