"""The host's purge queue: an SQLite file under ``state_dir`` (``edge-purges.sqlite3``).

Used when no Redis is configured (then "the fleet" is this host: its app processes are the
consumers) and, with Redis, for purges queued while Redis could not be reached: they wait
here, durably, and this host's processes send them (later than usual, see
:class:`~.service.EdgePurger`). The same protocol as the Redis queue: one row per job and
target, waiting items in their own table, a consumer owns the rows it claimed and renews
``claimed_at`` while it holds them; rows whose owner went silent for
``reclaim_after_seconds`` are claimed by another process.

WAL and ``synchronous=NORMAL``: a committed purge survives the process crashing (what a
restart needs) without an fsync per invalidation.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ...cache.sqlite_connections import OwnedConnections, closed_on_failure
from .jobs import Job, TargetStatus

__all__ = ["LOCAL_QUEUE_FILE", "LocalJobSource", "LocalPurgeQueue"]

log = logging.getLogger("scalekit.cdn")

LOCAL_QUEUE_FILE = "edge-purges.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, target TEXT NOT NULL, items TEXT NOT NULL,
    source TEXT NOT NULL, enqueued_at REAL NOT NULL, due_at REAL NOT NULL,
    owner TEXT, claimed_at REAL);
CREATE INDEX IF NOT EXISTS jobs_by_target ON jobs(target, id);
CREATE TABLE IF NOT EXISTS waiting (
    target TEXT NOT NULL, item TEXT NOT NULL, job INTEGER NOT NULL, PRIMARY KEY (target, item));
CREATE TABLE IF NOT EXISTS failures (
    target TEXT PRIMARY KEY, at REAL NOT NULL, reason TEXT NOT NULL, count INTEGER NOT NULL);
"""


class LocalPurgeQueue:
    """The SQLite queue file; one connection per process, serialised by a lock."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None
        self._owned = OwnedConnections()  # closed by close(); a forked child's parent's set aside
        self._pid = 0

    def exists(self) -> bool:
        return self.path.is_file()

    def _open(self) -> sqlite3.Connection:
        if self._connection is None or self._pid != os.getpid():
            self._pid = os.getpid()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(self.path, timeout=5.0, isolation_level=None,
                                         check_same_thread=False)
            with closed_on_failure(connection):
                connection.execute("PRAGMA journal_mode=WAL")
                connection.execute("PRAGMA synchronous=NORMAL")
                connection.executescript(_SCHEMA)
            self._connection = self._owned.add(connection)
        return self._connection

    def enqueue(self, items_by_target: Mapping[str, Sequence[str]], *, source: str, now: float,
                due: float) -> int:
        """Queue the items not already waiting, one row per target; rows added."""
        added = 0
        with self._lock:
            connection = self._open()
            connection.execute("BEGIN IMMEDIATE")
            try:
                for target, items in items_by_target.items():
                    fresh = [item for item in items if connection.execute(
                        "SELECT 1 FROM waiting WHERE target = ? AND item = ?", (target, item)
                    ).fetchone() is None]
                    if not fresh:
                        continue
                    job = connection.execute(
                        "INSERT INTO jobs (target, items, source, enqueued_at, due_at) "
                        "VALUES (?, ?, ?, ?, ?)", (target, json.dumps(fresh), source, now, due)
                    ).lastrowid
                    connection.executemany("INSERT INTO waiting VALUES (?, ?, ?)",
                                           [(target, item, job) for item in fresh])
                    added += 1
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
        return added

    def execute(self, statement: str, parameters: Sequence[object] = ()) -> list[Any]:
        """One statement in its own transaction (the consumers' small steps)."""
        with self._lock:
            return self._open().execute(statement, tuple(parameters)).fetchall()

    def executemany(self, statement: str, rows: Sequence[Sequence[object]]) -> None:
        with self._lock:
            connection = self._open()
            connection.execute("BEGIN IMMEDIATE")
            try:
                connection.executemany(statement, [tuple(row) for row in rows])
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise

    def status(self, targets: Sequence[str], *, now: float) -> list[TargetStatus]:
        """Per target: rows, rows claimed, distinct owners, oldest row's age, last failure."""
        out = []
        for target in targets:
            length, pending, owners, oldest = self.execute(
                "SELECT count(*), count(owner), count(DISTINCT owner), min(enqueued_at) "
                "FROM jobs WHERE target = ?", (target,))[0]
            failure_rows = self.execute(
                "SELECT at, reason, count FROM failures WHERE target = ?", (target,))
            failure: dict[str, object] = {}
            if failure_rows:
                at, reason, count = failure_rows[0]
                failure = {"at": at, "reason": reason, "count": count}
            out.append(TargetStatus(
                queue="local", target=target, length=int(length), pending=int(pending),
                consumers=int(owners),
                oldest_age_seconds=None if oldest is None else max(0.0, now - float(oldest)),
                last_failure=failure))
        return out

    def close(self) -> None:
        with self._lock:
            self._connection = None
            self._owned.close_all()


class LocalJobSource:
    """One consumer of one target's rows in the host's queue file."""

    name = "local"

    def __init__(self, queue: LocalPurgeQueue, target: str, *, consumer: str,
                 reclaim_after_seconds: float, clock: Callable[[], float]) -> None:
        self.queue = queue
        self.target = target
        self.consumer = consumer
        self.reclaim_after_seconds = reclaim_after_seconds
        self.clock = clock

    def _now(self) -> float:
        return self.clock()

    def take(self, *, block_seconds: float, count: int) -> list[Job]:
        # No blocking read in SQLite: the worker polls (block_seconds is its pause).
        if not self.queue.exists():
            return []
        return self._claim("owner IS NULL", (), count)

    def reclaim(self, *, count: int) -> list[Job]:
        if not self.queue.exists():
            return []
        # Its own rows too: a consumer that lost track of what it held (its loop restarted after
        # a fault) takes them back; rows it still holds are renewed well before this.
        stale = self._now() - self.reclaim_after_seconds
        return self._claim("owner IS NOT NULL AND claimed_at < ?", (stale,), count)

    def _claim(self, condition: str, parameters: tuple[object, ...], count: int) -> list[Job]:
        # Every process's consumers poll the file: a read first, so an empty queue costs no
        # write transaction (no lock the producers would wait for).
        if not self.queue.execute(f"SELECT 1 FROM jobs WHERE target = ? AND {condition} LIMIT 1",
                                  (self.target, *parameters)):
            return []
        rows = self.queue.execute(
            f"UPDATE jobs SET owner = ?, claimed_at = ? WHERE id IN (SELECT id FROM jobs "
            f"WHERE target = ? AND {condition} ORDER BY id LIMIT ?) "
            "RETURNING id, items, source, enqueued_at, due_at",
            (self.consumer, self._now(), self.target, *parameters, count))
        jobs = []
        for row_id, items, source, enqueued_at, due_at in rows:
            try:
                parsed = tuple(str(item) for item in json.loads(str(items)))
            except ValueError:
                log.warning("dropped a malformed purge row %s in %s", row_id, self.queue.path)
                self.queue.execute("DELETE FROM jobs WHERE id = ?", (row_id,))
                continue
            jobs.append(Job(target=self.target, id=str(row_id), items=parsed, source=str(source),
                            enqueued_at=float(enqueued_at), due_at=float(due_at)))
        return sorted(jobs, key=lambda job: int(job.id))

    def release(self, jobs: Sequence[Job]) -> None:
        self.queue.executemany("DELETE FROM waiting WHERE target = ? AND item = ? AND job = ?",
                               [(self.target, item, int(job.id)) for job in jobs for item in job.items])

    def touch(self, jobs: Sequence[Job]) -> None:
        if jobs:
            self.queue.executemany("UPDATE jobs SET claimed_at = ? WHERE id = ? AND owner = ?",
                                   [(self._now(), int(job.id), self.consumer) for job in jobs])

    def done(self, jobs: Sequence[Job]) -> None:
        if jobs:
            self.queue.executemany("DELETE FROM jobs WHERE id = ?", [(int(job.id),) for job in jobs])

    def record_failure(self, reason: str | None, *, now: float) -> None:
        if not self.queue.exists():
            return
        if reason is None:
            self.queue.execute("DELETE FROM failures WHERE target = ?", (self.target,))
            return
        self.queue.execute(
            "INSERT INTO failures VALUES (?, ?, ?, 1) ON CONFLICT(target) DO UPDATE SET "
            "at = excluded.at, reason = excluded.reason, count = count + 1",
            (self.target, now, reason))

    def close(self) -> None:
        """The queue file is shared by the process's consumers: the purger closes it."""
