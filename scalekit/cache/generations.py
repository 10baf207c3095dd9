"""Tag generations in one process: invalidation is O(number of tags), never O(entries).

Every invalidation advances a sequence number and sets each of its tags' generation to it. An
entry records ``(tag, generation)`` pairs when its origin call started; it is current while each
of its tags still has that generation. The fleet-wide version (Redis + pub/sub) is
:class:`scalekit.cache.tiers.fleet.FleetGenerations`; all satisfy ``store.Generations``.
:class:`HostGenerations` persists them in a file shared by the processes of one host.

>>> generations = LocalGenerations()
>>> since = generations.sequence()
>>> stamp = generations.stamp(["product:42"], since)
>>> generations.is_current(stamp)
True
>>> generations.invalidate(["product:42"])
>>> generations.is_current(stamp), generations.stamp(["product:42"], since)
(False, None)
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path

from .store import TagStamp

__all__ = ["HostGenerations", "LocalGenerations"]

log = logging.getLogger("scalekit.cache")


class LocalGenerations:
    """In-process generations: a dict of tag -> generation and a sequence counter.

    Reads (``is_current``, ``stamp``) take no lock: each reads a dict that is only ever mutated
    by single assignments, which are atomic under the GIL, and a generation only moves forward,
    so a reader sees either the old or the new value. Writers serialise on a lock.
    """

    def __init__(self) -> None:
        self._sequence = 0
        self._generations: dict[str, int] = {}
        self._lock = threading.Lock()

    # ----------------------------------------------------------------- reads (hit path)
    def sequence(self) -> int:
        """The sequence number of the latest invalidation this instance knows of."""
        return self._sequence

    def stamp(self, tags: Iterable[str], since: int) -> TagStamp | None:
        """Current generations of ``tags``, or None if any moved after ``since``."""
        generations = self._generations
        out = []
        for tag in tags:
            generation = generations.get(tag, 0)
            if generation > since:
                return None
            out.append((tag, generation))
        return tuple(out)

    def is_current(self, stamp: TagStamp) -> bool:
        """Whether no tag of ``stamp`` was invalidated since it was taken (dict lookups only)."""
        generations = self._generations
        for tag, generation in stamp:
            if generations.get(tag, 0) != generation:
                return False
        return True

    def generation(self, tag: str) -> int:
        return self._generations.get(tag, 0)

    # ----------------------------------------------------------------- writes
    def invalidate(self, tags: Iterable[str]) -> None:
        """Make every entry stamped with any of ``tags`` not current, in O(len(tags))."""
        tag_list = [tag for tag in tags if tag]
        if not tag_list:
            return
        with self._lock:
            self._sequence += 1
            for tag in tag_list:
                self._generations[tag] = self._sequence

    def apply(self, sequence: int, tags: Iterable[str]) -> bool:
        """Adopt generation ``sequence`` for ``tags`` (from another process); generations only
        move forward. Returns True if anything changed."""
        changed = False
        with self._lock:
            for tag in tags:
                if self._generations.get(tag, 0) < sequence:
                    self._generations[tag] = sequence
                    changed = True
            self._sequence = max(self._sequence, sequence)
        return changed

    def advance_to(self, sequence: int) -> None:
        """Raise the sequence number to at least ``sequence`` (after a resync)."""
        with self._lock:
            self._sequence = max(self._sequence, sequence)

    def snapshot(self) -> dict[str, int]:
        """A copy of every tag's generation (for persistence and resync)."""
        with self._lock:
            return dict(self._generations)

    # ----------------------------------------------------------------- async twins
    async def asequence(self) -> int:
        return self._sequence

    async def astamp(self, tags: Iterable[str], since: int) -> TagStamp | None:
        return self.stamp(tags, since)

    async def ainvalidate(self, tags: Iterable[str]) -> None:
        self.invalidate(tags)

    def close(self) -> None:
        """Nothing to release; present so every Generations can be closed alike."""


class HostGenerations(LocalGenerations):
    """Generations persisted in an SQLite file shared by every process of one host.

    Why: L3 outlives the process and is shared by gunicorn workers, so the generations that
    guard it must too. An invalidation in one worker (or ``scalekit invalidate`` without
    Redis) is committed here and picked up by the other processes' watcher threads within
    ``poll_interval_seconds``; a restarted process loads the file before serving, so an L3
    entry whose tags were invalidated while it was down is never current again.
    Reads stay plain dict lookups: the file is only touched by writers and the watcher.
    """

    def __init__(self, path: str | os.PathLike[str], *, poll_interval_seconds: float = 0.05) -> None:
        super().__init__()
        self.path = Path(path)
        self.poll_interval_seconds = poll_interval_seconds
        self._persist_lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None
        self._connection_pid = 0
        self._seen = 0  # the file's write counter as of the last read
        self._watcher: threading.Thread | None = None
        self._watcher_pid = 0
        self._stop = threading.Event()
        try:
            self._load(self._open())
        except (sqlite3.Error, OSError) as error:
            log.warning("tag generations file %s unreadable (%s); invalidations stay in this "
                        "process until it is writable", self.path, error)

    def _open(self) -> sqlite3.Connection:
        if self._connection is None or self._connection_pid != os.getpid():
            self._connection_pid = os.getpid()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(self.path, timeout=1.0, isolation_level=None,
                                         check_same_thread=False)
            connection.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL: a commit survives the process crashing (what a restart needs)
            # without an fsync per invalidation.
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.executescript(_GENERATIONS_SCHEMA)
            self._connection = connection
        return self._connection

    def _load(self, connection: sqlite3.Connection) -> None:
        # One read transaction, so the rows and the counters agree.
        connection.execute("BEGIN")
        try:
            rows = connection.execute(
                "SELECT tag, generation, written FROM generations WHERE written > ?",
                (self._seen,)).fetchall()
            sequence = connection.execute(
                "SELECT value FROM meta WHERE name = 'sequence'").fetchone()[0]
        finally:
            connection.execute("COMMIT")
        with self._lock:
            for tag, generation, written in rows:
                if self._generations.get(tag, 0) < generation:
                    self._generations[tag] = generation
                self._seen = max(self._seen, written)
            self._sequence = max(self._sequence, int(sequence))

    # ----------------------------------------------------------------- writes
    def invalidate(self, tags: Iterable[str]) -> None:
        tag_list = [tag for tag in tags if tag]
        if not tag_list:
            return
        try:
            with self._persist_lock:
                connection = self._open()
                connection.execute("BEGIN IMMEDIATE")
                try:
                    stored = connection.execute(
                        "SELECT value FROM meta WHERE name = 'sequence'").fetchone()[0]
                    sequence = max(int(stored), self._sequence) + 1
                    self._write(connection, sequence, tag_list)
                    connection.execute("COMMIT")
                except BaseException:
                    connection.execute("ROLLBACK")
                    raise
        except (sqlite3.Error, OSError) as error:
            log.warning("could not persist invalidation of %s to %s (%s); applied in this "
                        "process only", tag_list, self.path, error)
            super().invalidate(tag_list)
            return
        super().apply(sequence, tag_list)

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
    def _write(connection: sqlite3.Connection, sequence: int, tags: list[str]) -> None:
        # "written" orders changes for the watchers (generations need not arrive in order).
        written = connection.execute(
            "UPDATE meta SET value = value + 1 WHERE name = 'writes' RETURNING value").fetchone()[0]
        connection.executemany(
            "INSERT INTO generations VALUES (?, ?, ?) ON CONFLICT(tag) DO UPDATE SET "
            "generation = max(generation, excluded.generation), written = excluded.written",
            [(tag, sequence, written) for tag in tags])
        connection.execute("UPDATE meta SET value = max(value, ?) WHERE name = 'sequence'",
                           (sequence,))

    # ----------------------------------------------------------------- fleet outbox
    def remember_unpublished(self, tags: Iterable[str]) -> None:
        """Record tags invalidated while the fleet could not be told, so a restart before
        Redis comes back still replays them (see FleetGenerations)."""
        self._outbox("INSERT OR IGNORE INTO unpublished VALUES (?)", tags)

    def forget_unpublished(self, tags: Iterable[str]) -> None:
        self._outbox("DELETE FROM unpublished WHERE tag = ?", tags)

    def unpublished(self) -> set[str]:
        try:
            with self._persist_lock:
                rows = self._open().execute("SELECT tag FROM unpublished").fetchall()
        except (sqlite3.Error, OSError):
            return set()
        return {tag for (tag,) in rows}

    def _outbox(self, statement: str, tags: Iterable[str]) -> None:
        try:
            with self._persist_lock:
                self._open().executemany(statement, [(tag,) for tag in tags])
        except (sqlite3.Error, OSError) as error:
            log.warning("could not record unpublished invalidations in %s (%s)", self.path, error)

    # ----------------------------------------------------------------- watcher
    def sequence(self) -> int:
        if self._watcher_pid != os.getpid():
            self.start()
        return self._sequence

    def start(self) -> None:
        """Start (or, after a fork, restart) the thread that follows other processes' writes."""
        with self._persist_lock:
            if self._watcher_pid == os.getpid():
                return
            self._watcher_pid = os.getpid()
            self._connection = None
            self._stop = threading.Event()
            self._watcher = threading.Thread(target=self._watch, args=(self._stop,),
                                             name="scalekit-generations", daemon=True)
            self._watcher.start()

    def _watch(self, stop: threading.Event) -> None:
        version = None
        connection: sqlite3.Connection | None = None
        while not stop.wait(self.poll_interval_seconds):
            try:
                if connection is None:
                    connection = sqlite3.connect(self.path, timeout=1.0, isolation_level=None)
                # data_version changes when another connection commits to the file.
                current = connection.execute("PRAGMA data_version").fetchone()[0]
                if current != version:
                    version = current
                    self._load(connection)
            except (sqlite3.Error, OSError):
                connection = None  # retried on the next tick
        if connection is not None:
            connection.close()

    def close(self) -> None:
        self._stop.set()
        if self._watcher is not None and self._watcher is not threading.current_thread():
            self._watcher.join(timeout=1.0)
        self._watcher_pid = 0
        if self._connection is not None:
            self._connection.close()
            self._connection = None


_GENERATIONS_SCHEMA = """
CREATE TABLE IF NOT EXISTS generations (
    tag TEXT PRIMARY KEY, generation INTEGER NOT NULL, written INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS generations_by_write ON generations(written);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('sequence', 0);
INSERT OR IGNORE INTO meta VALUES ('writes', 0);
CREATE TABLE IF NOT EXISTS unpublished (tag TEXT PRIMARY KEY);
"""
