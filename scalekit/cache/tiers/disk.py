"""L3: a local SQLite file bounded in bytes, shared by the processes of one host.

Why SQLite rather than a file per entry: a write is one transaction (atomic: a crash leaves the
old entry or the new one, never half of one), the byte total is kept in the same transaction as
the rows (so the bound holds across gunicorn workers writing at once), and LRU eviction is one
indexed query. Values are the codec's bytes (msgpack, compressed, optionally signed): a row
that does not decode is a miss, counted, and deleted. A database file that SQLite itself finds
malformed is moved aside and recreated.

The bound counts each row as its value, its key and a fixed per-row overhead; SQLite's page
slack comes on top (freed pages are returned with incremental vacuum).

>>> import tempfile
>>> from scalekit.cache.entry import CachedEntry
>>> tier = DiskTier(tempfile.mkdtemp(), max_bytes=1_000_000, clock=lambda: 10.0)
>>> tier.set("k", CachedEntry(200, (), b"body", 10.0, 10.0, 0.0, 60.0))
>>> tier.get("k")[0].body
b'body'
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ..codec import Codec
from ..entry import CachedEntry
from .base import TierMetrics, kept_until
from .breaker import CircuitBreaker

__all__ = ["DiskTier"]

ROW_OVERHEAD_BYTES = 64
SETUP_TIMEOUT_SECONDS = 5.0
SWEEP_EVERY_WRITES = 16
ENTRY_GAUGE_EVERY_WRITES = 64
BUSY_CODES = frozenset({5, 6})  # SQLITE_BUSY, SQLITE_LOCKED
DB_NAME = "l3.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    key TEXT PRIMARY KEY, value BLOB NOT NULL, size INTEGER NOT NULL,
    expires REAL NOT NULL, used REAL NOT NULL);
CREATE INDEX IF NOT EXISTS entries_used ON entries(used);
CREATE INDEX IF NOT EXISTS entries_expires ON entries(expires);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('total_bytes', 0);
"""


class DiskTier:
    """L3 store; the async face runs the same code in a worker thread."""

    name = "disk"

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        max_bytes: int = 512 * 1024 * 1024,
        max_entry_bytes: int = 64 * 1024 * 1024,
        codec: Codec | None = None,
        clock: Callable[[], float] = time.time,
        retain_stale_seconds: float = 300.0,
        breaker: CircuitBreaker | None = None,
        busy_timeout_seconds: float = 0.2,
    ) -> None:
        self.path = Path(directory) / DB_NAME
        self.max_bytes = max_bytes
        self.max_entry_bytes = min(max_entry_bytes, max_bytes)
        self.codec = codec or Codec()
        self.clock = clock
        self.retain_stale_seconds = retain_stale_seconds
        self.breaker = breaker or CircuitBreaker("disk")
        self.busy_timeout_seconds = busy_timeout_seconds
        self._metrics = TierMetrics(self.name)
        self._local = threading.local()  # one connection per thread: sqlite3 objects are not shared
        self._generation = 0  # bumped when the file is recreated, to drop stale connections
        self._pid = os.getpid()
        self._writes = 0

    # ----------------------------------------------------------------- connection
    def _connection(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if (connection is not None and self._local.generation == self._generation
                and self._pid == os.getpid()):
            return connection
        if self._pid != os.getpid():  # forked: never reuse the parent's connections
            self._pid = os.getpid()
            self._generation += 1
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Workers of one host start together: set-up may wait longer than a request would.
        connection = sqlite3.connect(self.path, timeout=SETUP_TIMEOUT_SECONDS,
                                     isolation_level=None, check_same_thread=False)
        connection.execute("PRAGMA auto_vacuum=INCREMENTAL")  # only effective on a new file
        _switch_to_wal(connection)
        connection.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: atomic, durable enough
        connection.executescript(_SCHEMA)
        connection.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_seconds * 1000)}")
        self._local.connection = connection
        self._local.generation = self._generation
        return connection

    def _fault(self, error: BaseException, counter: object) -> None:
        counter.inc()  # type: ignore[attr-defined]
        if getattr(error, "sqlite_errorcode", None) in BUSY_CODES:
            return  # another process holds the write lock: skip this write, the disk is fine
        self.breaker.failure(error)
        if isinstance(error, sqlite3.DatabaseError) and not isinstance(error, sqlite3.OperationalError):
            self._recreate()  # "file is not a database", "malformed": start over

    def _recreate(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None
        for suffix in ("", "-wal", "-shm"):
            try:
                os.replace(f"{self.path}{suffix}", f"{self.path}{suffix}.corrupt")
            except OSError:
                pass
        self._generation += 1

    # ----------------------------------------------------------------- sync face
    def get(self, key: str) -> tuple[CachedEntry, str] | None:
        if not self.breaker.allow():
            self._metrics.bypass.inc()
            return None
        now = self.clock()
        try:
            connection = self._connection()
            row = connection.execute(
                "SELECT value, expires FROM entries WHERE key = ?", (key,)).fetchone()
            if row is not None and row[1] > now:
                self._touch(connection, key, now)
        except Exception as error:  # noqa: BLE001 - a disk fault never fails a request
            self._fault(error, self._metrics.error)
            return None
        self.breaker.success()
        if row is None or row[1] <= now:
            self._metrics.miss.inc()
            return None
        entry, _outcome = self.codec.decode(key, row[0])
        if entry is None:
            self._metrics.corrupt.inc()
            self.delete(key)
            return None
        self._metrics.hit.inc()
        return entry, self.name

    @staticmethod
    def _touch(connection: sqlite3.Connection, key: str, now: float) -> None:
        """Refresh recency for LRU; a disk that refuses writes can still serve reads."""
        try:
            connection.execute("UPDATE entries SET used = ? WHERE key = ?", (now, key))
        except sqlite3.OperationalError:
            pass

    def set(self, key: str, entry: CachedEntry) -> None:
        self.try_set(key, entry)

    def try_set(self, key: str, entry: CachedEntry) -> bool:
        """Store ``entry`` within the byte bound (evicting least recently used rows)."""
        now = self.clock()
        expires = kept_until(entry, retain_stale_seconds=self.retain_stale_seconds)
        if expires <= now:
            return False
        value = self.codec.encode(key, entry)
        size = len(value) + len(key.encode("utf-8", "surrogatepass")) + ROW_OVERHEAD_BYTES
        if size > self.max_entry_bytes:
            self._metrics.too_large.inc()
            self.try_delete(key)
            return False
        if not self.breaker.allow():
            return False
        try:
            self._write(key, value, size, expires, now)
        except Exception as error:  # noqa: BLE001 - a disk fault never fails a request
            self._fault(error, self._metrics.store_error)
            return False
        self.breaker.success()
        self._metrics.stored.inc()
        return True

    def _write(self, key: str, value: bytes, size: int, expires: float, now: float) -> None:
        connection = self._connection()
        connection.execute("BEGIN IMMEDIATE")
        try:
            total = self._total(connection)
            old = connection.execute("SELECT size FROM entries WHERE key = ?", (key,)).fetchone()
            if old is not None:
                connection.execute("DELETE FROM entries WHERE key = ?", (key,))
                total -= old[0]
            if self._writes % SWEEP_EVERY_WRITES == 0:
                # Expired rows go in batches now and then (eviction frees room whenever the
                # bound needs it): a query and a delete fewer on most writes of a miss.
                total -= self._drop(connection, "SELECT key, size FROM entries WHERE expires <= ? "
                                                "LIMIT 256", (now,))
            evicted: list[tuple[str, int]] = []
            if total + size > self.max_bytes:
                # Least recently used first, only as many as the new entry needs.
                for victim, victim_size in connection.execute(
                        "SELECT key, size FROM entries ORDER BY used"):
                    evicted.append((victim, victim_size))
                    total -= victim_size
                    if total + size <= self.max_bytes:
                        break
                connection.executemany("DELETE FROM entries WHERE key = ?",
                                       [(victim,) for victim, _ in evicted])
            connection.execute("INSERT INTO entries VALUES (?, ?, ?, ?, ?)",
                               (key, value, size, expires, now))
            total += size
            connection.execute("UPDATE meta SET value = ? WHERE name = 'total_bytes'", (total,))
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        if evicted:
            self._metrics.evicted.inc(len(evicted))
            connection.execute("PRAGMA incremental_vacuum(64)")
        self._metrics.bytes.set(total)
        self._writes += 1
        if self._writes % ENTRY_GAUGE_EVERY_WRITES == 1:  # COUNT(*) scans: not on every write
            self._metrics.entries.set(
                connection.execute("SELECT COUNT(*) FROM entries").fetchone()[0])

    @staticmethod
    def _total(connection: sqlite3.Connection) -> int:
        return int(connection.execute(
            "SELECT value FROM meta WHERE name = 'total_bytes'").fetchone()[0])

    @staticmethod
    def _drop(connection: sqlite3.Connection, query: str, args: tuple[object, ...]) -> int:
        rows = connection.execute(query, args).fetchall()
        if rows:
            connection.executemany("DELETE FROM entries WHERE key = ?", [(key,) for key, _ in rows])
        return sum(size for _key, size in rows)

    def delete(self, key: str) -> None:
        self.try_delete(key)

    def try_delete(self, key: str) -> bool:
        if not self.breaker.allow():
            return False
        try:
            connection = self._connection()
            connection.execute("BEGIN IMMEDIATE")
            try:
                row = connection.execute("SELECT size FROM entries WHERE key = ?", (key,)).fetchone()
                if row is not None:
                    connection.execute("DELETE FROM entries WHERE key = ?", (key,))
                    connection.execute(
                        "UPDATE meta SET value = value - ? WHERE name = 'total_bytes'", (row[0],))
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
        except Exception as error:  # noqa: BLE001 - a disk fault never fails a request
            self._fault(error, self._metrics.store_error)
            return False
        self.breaker.success()
        return True

    def clear(self) -> bool:
        """Drop every entry (the fleet's invalidation state they were checked against was
        lost); False if the file could not be written."""
        try:
            connection = self._connection()
            connection.execute("BEGIN IMMEDIATE")
            try:
                connection.execute("DELETE FROM entries")
                connection.execute("UPDATE meta SET value = 0 WHERE name = 'total_bytes'")
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
        except Exception as error:  # noqa: BLE001 - a disk fault never fails a request
            self._fault(error, self._metrics.store_error)
            return False
        return True

    # ----------------------------------------------------------------- async face
    async def aget(self, key: str) -> tuple[CachedEntry, str] | None:
        return await asyncio.to_thread(self.get, key)

    async def aset(self, key: str, entry: CachedEntry) -> None:
        await asyncio.to_thread(self.try_set, key, entry)

    async def atry_set(self, key: str, entry: CachedEntry) -> bool:
        return await asyncio.to_thread(self.try_set, key, entry)

    async def adelete(self, key: str) -> None:
        await asyncio.to_thread(self.try_delete, key)

    async def atry_delete(self, key: str) -> bool:
        return await asyncio.to_thread(self.try_delete, key)

    # ----------------------------------------------------------------- introspection
    @property
    def current_bytes(self) -> int:
        try:
            return self._total(self._connection())
        except sqlite3.Error:
            return 0

    def __len__(self) -> int:
        try:
            return int(self._connection().execute("SELECT COUNT(*) FROM entries").fetchone()[0])
        except sqlite3.Error:
            return 0

    def close(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None


def _switch_to_wal(connection: sqlite3.Connection) -> None:
    """``PRAGMA journal_mode=WAL``, retried while SQLITE_BUSY: connections opening a new file
    together race for the switch, and SQLite answers the losers BUSY at once, without waiting
    on the busy timeout. The mode is stored in the file, so the first switch settles it."""
    deadline = time.monotonic() + SETUP_TIMEOUT_SECONDS
    delay = 0.001
    while True:
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if getattr(error, "sqlite_errorcode", None) not in BUSY_CODES or time.monotonic() >= deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
