"""L3: a local SQLite file bounded in bytes, shared by the processes of one host.

Why SQLite rather than a file per entry: a write is one transaction (atomic: a crash leaves the
old entry or the new one, never half of one), the byte total is kept in the same transaction as
the rows (so the bound holds across gunicorn workers writing at once), and LRU eviction is one
indexed query. Values are the codec's bytes (msgpack, compressed, optionally signed): a row
that does not decode is a miss, counted, and deleted. A database file that SQLite itself finds
malformed is moved aside and recreated.

A request does not write the file itself: it queues the entry (and an L3 hit its row's recency)
for the tier's writer thread (``writebehind.py``), which writes what was queued meanwhile in one
transaction; this process reads its queued entries back at once, and another process finds them
once written (``flush()`` waits for that). Deletes and clears run in the caller's thread, after
the batch being written and never overtaken by an earlier write; a write the queue has no room
for is made by its caller, as before.

The bound is on the bytes the files take. ``max_bytes`` covers the database (rows, indexes,
SQLite's pages and their slack), its write-ahead log and the log's index: each write evicts
least recently used rows until the pages in use fit the database's share, and free pages past
it go back to the file system. The log is checkpointed every 32nd of the bound (at least 64 KiB,
at most 4 MiB, as SQLite's default) and cut back to that much; twice that is set aside for it
(a full log, then the pages of one write). The slack: a bound smaller than SQLite's own pages
(``MIN_DATABASE_BYTES`` plus the log's share, about 288 KiB) is raised to them, and a log whose
checkpoint a slow reader holds up may pass its share until the next write can cut it. Rows are
kept in insertion order under a 64-bit hash of the key (the key itself is inside the value, where
the codec checks it): a key is stored once, and evicting old rows frees whole pages. Whatever the
shape of the rows, the estimate of their sizes (``current_bytes``) stays within ``max_bytes``
too; it is what the bytes gauge reports.

>>> import tempfile
>>> from scalekit.cache.entry import CachedEntry
>>> tier = DiskTier(tempfile.mkdtemp(), max_bytes=1_000_000, clock=lambda: 10.0)
>>> tier.set("k", CachedEntry(status=200, headers=(), body=b"body", request_time=10.0, response_time=10.0,
...                            corrected_initial_age_seconds=0.0, freshness_lifetime_seconds=60.0))
>>> tier.get("k")[0].body
b'body'
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ...forks import pid
from ...metrics.instruments import CACHE_LOOKUPS, Tally, counter_handle
from ..codec import Codec
from ..entry import CachedEntry
from ..sqlite_connections import OwnedConnections
from .base import KeyMask, SizedTierMetrics, kept_until
from .breaker import CircuitBreaker
from .presence import REFRESH_SECONDS, TRUSTED_SECONDS, Presence
from .sqlite_file import (
    BUSY_CODES,
    DB_NAME,
    MIN_DATABASE_BYTES,
    key_hash,
    open_database,
    page_counts,
)
from .writebehind import Pending, WriteBehind

__all__ = ["DB_NAME", "MIN_DATABASE_BYTES", "DiskTier", "key_hash"]

# A row's cost beyond its value: its id, hash, times and size, and its three index entries.
ROW_OVERHEAD_BYTES = 128
_ASK_FILE = object()  # a lookup this process cannot answer without reading the file
SWEEP_EVERY_WRITES = 16
MAX_QUEUED_BYTES = 8 * 1024 * 1024  # of bodies waiting for the writer thread, per process
ENTRY_GAUGE_EVERY_WRITES = 64
_WAL_SHARE = 32
_MIN_WAL_BYTES = 64 * 1024
_MAX_WAL_BYTES = 4 * 1024 * 1024
_SHM_BYTES = 32 * 1024  # the log's shared-memory index, per 4,096 logged pages
_HASHES_PER_QUERY = 256  # well under SQLite's limit on a statement's parameters


def queued_size(entry: CachedEntry) -> int:
    """What ``entry`` holds in memory while queued, roughly: its body, and 64 bytes a header
    line (a guess: summing them cost more than the rest of the queueing)."""
    return len(entry.body) + 64 * len(entry.headers) + 256


@contextlib.contextmanager
def _write_transaction(connection: sqlite3.Connection) -> Iterator[None]:
    """One write transaction, taking the write lock up front (other workers wait their busy
    timeout for it, rather than failing at COMMIT); rolled back on any error."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise


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
        background_writes: bool = True,
    ) -> None:
        self.path = Path(directory) / DB_NAME
        self.max_bytes = max_bytes
        self.max_entry_bytes = min(max_entry_bytes, max_bytes)
        self.codec = codec or Codec()
        self.clock = clock
        self.retain_stale_seconds = retain_stale_seconds
        self.breaker = breaker or CircuitBreaker("disk")
        self.busy_timeout_seconds = busy_timeout_seconds
        # The log's share of the bound (twice: a full log and one write), the database's the rest.
        self.wal_bytes = min(max(max_bytes // _WAL_SHARE, _MIN_WAL_BYTES), _MAX_WAL_BYTES)
        self.database_bytes = max(max_bytes - 2 * self.wal_bytes - _SHM_BYTES, MIN_DATABASE_BYTES)
        self._metrics = SizedTierMetrics(self.name)
        # Most lookups are misses: counted with one C call, added before any read. The tally is
        # kept (the registry holds it weakly): its tick alone would outlive it, counting nothing.
        self._miss_tally = Tally((CACHE_LOOKUPS,), (counter_handle(self._metrics.miss).inc,))
        self._count_miss = self._miss_tally.tick
        self._local = threading.local()  # one connection per thread: sqlite3 objects are not shared
        self._owned = OwnedConnections()  # every thread's, closed by close()
        self._generation = 0  # bumped when the file is recreated, to drop stale connections
        self._pid = pid()
        self._writes_since_sweep = SWEEP_EVERY_WRITES  # the first write sweeps
        self._writes_since_count = ENTRY_GAUGE_EVERY_WRITES  # and counts the rows
        # Keys whose write or delete failed in the writer thread: the file may hold an older
        # entry for them (a failure in the caller's thread is the caller's to mask).
        self._unsure = KeyMask()
        self._behind = WriteBehind(
            self._write_batch, max_bytes=min(MAX_QUEUED_BYTES, max(self.max_bytes // 16, 1)),
            tick=self._tick, tick_seconds=REFRESH_SECONDS,
        ) if background_writes else None
        # The rows the file may hold, loaded and refreshed by the writer thread (None: ask the file).
        self._presence: Presence | None = None

    # ----------------------------------------------------------------- connection
    def _connection(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if (connection is not None and self._local.generation == self._generation
                and self._pid == pid()):
            return connection
        if self._pid != pid():  # forked: never reuse the parent's connections (nor close them)
            self._pid = pid()
            self._generation += 1
        elif connection is not None:  # of a file since recreated
            self._owned.discard(connection)
        connection, self._local.page_size = open_database(
            self.path, wal_bytes=self.wal_bytes, busy_timeout_seconds=self.busy_timeout_seconds)
        self._local.connection = self._owned.add(connection, this_thread_only=True)
        self._local.generation = self._generation
        return connection

    def _fault(self, error: BaseException, counter: object) -> None:
        counter.inc()  # type: ignore[attr-defined]
        if getattr(error, "sqlite_errorcode", None) in BUSY_CODES:
            return  # another process holds the write lock: skip this write, the disk is fine
        self.breaker.failure(error)
        if isinstance(error, sqlite3.DatabaseError) and not isinstance(
                error, (sqlite3.OperationalError, sqlite3.ProgrammingError)):  # closed is not corrupt
            self._recreate()  # "file is not a database", "malformed": start over

    def _recreate(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            self._owned.discard(connection)
            self._local.connection = None
        for suffix in ("", "-wal", "-shm"):
            try:
                os.replace(f"{self.path}{suffix}", f"{self.path}{suffix}.corrupt")
            except OSError:
                pass
        self._generation += 1
        self._presence = None

    # ----------------------------------------------------------------- sync face
    def get(self, key: str) -> tuple[CachedEntry, str] | None:
        now = self.clock()
        known = self._known(key, now)
        return self._get_from_file(key, now) if known is _ASK_FILE else known

    def _known(self, key: str, now: float) -> Any:
        """The lookup's answer when this process knows it without the file (its own queued
        write, or a row the file cannot hold), else ``_ASK_FILE``."""
        behind = self._behind
        if behind is None:
            return _ASK_FILE
        queued = behind.pending(key)
        if queued is not None:  # written by this process, not yet on disk
            if queued.expires > now:
                self._metrics.hit.inc()
                return queued.entry, self.name
            self._count_miss()
            return None
        if self._unsure and key in self._unsure:
            return _ASK_FILE
        presence = self._presence
        if presence is None or presence.pid != pid() or time.monotonic() > presence.fresh_until:
            behind.start()  # its writer thread loads (or refreshes) what the file holds
            return _ASK_FILE
        if not presence.may_hold(key_hash(key)):
            self._count_miss()
            return None
        return _ASK_FILE

    def _get_from_file(self, key: str, now: float) -> tuple[CachedEntry, str] | None:
        unsure = self._unsure
        if unsure and key in unsure:  # the file may hold an entry older than the newest write
            if self._behind is not None:
                self._behind.start()  # whose next tick deletes it: no write in the request
            else:
                self.try_delete(key)
            self._count_miss()
            return None
        if not self.breaker.allow():
            self._metrics.bypass.inc()
            return None
        try:
            connection = self._connection()
            row = connection.execute(
                "SELECT value, expires, id FROM entries WHERE hash = ?", (key_hash(key),)).fetchone()
        except Exception as error:  # noqa: BLE001 - a disk fault never fails a request
            self._fault(error, self._metrics.error)
            return None
        self.breaker.success()
        presence = self._presence
        if presence is not None:
            presence.looked_up(row is not None)
        if row is None or row[1] <= now:
            self._count_miss()
            return None
        entry, _outcome = self.codec.decode(key, row[0])
        if entry is None:
            self._metrics.corrupt.inc()
            self.delete(key)
            return None
        # Refresh recency for LRU: queued, or in a transaction of its own (a disk that refuses
        # writes can still serve reads).
        behind = self._behind
        if behind is not None:
            behind.touch(row[2], now)
        else:
            with contextlib.suppress(sqlite3.Error):
                connection.execute("UPDATE entries SET used = ? WHERE id = ?", (now, row[2]))
        self._metrics.hit.inc()
        return entry, self.name

    def set(self, key: str, entry: CachedEntry) -> None:
        self.try_set(key, entry)

    def try_set(self, key: str, entry: CachedEntry) -> bool:
        """Store ``entry`` within the byte bound (evicting least recently used rows): queued for
        the writer thread (True), or written here when the queue is full or writes are not in
        the background (False if it could not be)."""
        expires = self._queue(key, entry)
        return expires is True or (expires is not None and self._set_now(key, entry, expires))

    def _queue(self, key: str, entry: CachedEntry) -> float | bool | None:
        """True: queued; None: not to be stored; else when it expires, for the caller to write."""
        expires = kept_until(entry, retain_stale_seconds=self.retain_stale_seconds)
        # Only a look: whoever writes asks the breaker (and so makes its half-open trial).
        if expires <= self.clock() or self.breaker.is_open:
            return None
        behind = self._behind
        if behind is not None and behind.put(key, entry, expires, queued_size(entry)):
            return True
        return expires

    def _set_now(self, key: str, entry: CachedEntry, expires: float) -> bool:
        if not self.breaker.allow():
            return False
        with self._exclusive(key):
            pending = Pending(key, entry, expires, 0)
            writes, drops = self._encode([pending], self.clock())
            if not writes:  # over max_entry_bytes: the key's older row goes
                self._delete_now([key])
                return False
            touches = self._behind.take_touches() if self._behind is not None else {}
            try:
                self._write(writes, drops, touches, self.clock())
            except Exception as error:  # noqa: BLE001 - a disk fault never fails a request
                self._fault(error, self._metrics.store_error)
                return False
        self.breaker.success()
        self._metrics.stored.inc()
        self._unsure.discard(key)
        return True

    def _exclusive(self, key: str | None) -> contextlib.AbstractContextManager[list[Pending]]:
        """The writer held off, and what was queued for ``key`` (every key: None) dropped."""
        behind = self._behind
        return behind.exclusive(key) if behind is not None else contextlib.nullcontext([])

    def _encode(self, batch: list[Pending], now: float
                ) -> tuple[list[tuple[int, bytes, int, float]], list[int]]:
        """The rows to write for ``batch``, and the hashes of keys whose older row must go (an
        entry past ``max_entry_bytes`` or its usable life is stored nowhere)."""
        # By hash: two keys of a batch sharing one (the file holds one row a hash) write the latter.
        writes: dict[int, tuple[int, bytes, int, float]] = {}
        drops: list[int] = []
        for pending in batch:
            row_hash = key_hash(pending.key)
            if pending.expires <= now:
                drops.append(row_hash)
                continue
            value = self.codec.encode(pending.key, pending.entry)
            size = len(value) + ROW_OVERHEAD_BYTES
            if size > self.max_entry_bytes:
                self._metrics.too_large.inc()
                drops.append(row_hash)
                continue
            writes[row_hash] = (row_hash, value, size, pending.expires)
        return list(writes.values()), drops

    def _write_batch(self, batch: list[Pending], touches: dict[int, float]) -> None:
        """The writer thread's batch: one transaction for all of it. When it fails, whatever
        the file still holds for its keys is deleted, or hidden until it can be."""
        now = self.clock()
        writes, drops = self._encode(batch, now)
        if not self.breaker.allow():
            self._metrics.store_error.inc(len(batch))
            self._hide([pending.key for pending in batch])
            return
        try:
            self._write(writes, drops, touches, now)
        except Exception as error:  # noqa: BLE001 - a disk fault never fails a request
            self._fault(error, self._metrics.store_error)
            self._hide([pending.key for pending in batch])
            return
        self.breaker.success()
        if writes:
            self._metrics.stored.inc(len(writes))
        if self._unsure:
            for pending in batch:
                self._unsure.discard(pending.key)

    def _tick(self) -> None:
        """The writer thread's tick: delete the rows failed writes left hidden (a lookup of a
        hidden key is a miss until then, and never writes), then refresh the filter."""
        if self._unsure:
            self._delete_now(list(self._unsure))
        self._refresh_presence()

    def _refresh_presence(self) -> None:
        """Show the filter the rows added to the file since its last look (by any process), or
        build it anew from the file when it has none or is worn."""
        presence = self._presence
        total = None
        try:
            connection = self._connection()
            if presence is None or presence.pid != pid() or presence.worn:
                rows = connection.execute("SELECT id, hash FROM entries").fetchall()
                total = self._total(connection)
                # Rows of at least 1 KiB fill the bound: sized for that many, or twice today's.
                presence = Presence(max(self.max_bytes // 1024, 2 * len(rows), 1024))
            else:
                rows = connection.execute("SELECT id, hash FROM entries WHERE id > ?",
                                          (presence.last_id,)).fetchall()
        except Exception:  # noqa: BLE001 - a disk fault never fails a request
            self._presence = None  # lookups ask the file, which counts the fault
            return
        if total is not None:  # the whole file was read: what it holds, before any write of ours
            self._metrics.bytes.set(total)
            self._metrics.entries.set(len(rows))
        for row_id, row_hash in rows:
            presence.add(row_hash)
            presence.last_id = max(presence.last_id, row_id)
        presence.fresh_until = time.monotonic() + TRUSTED_SECONDS
        self._presence = presence

    def _hide(self, keys: list[str]) -> None:
        if not self._delete_now(keys):
            for key in keys:
                self._unsure.add(key)

    def _write(self, writes: list[tuple[int, bytes, int, float]], drops: list[int],
               touches: dict[int, float], now: float) -> None:
        """One write transaction: recency refreshes, rows dropped, rows (hash, value, size,
        expires) written in place of their keys' older ones, evicting to stay in the bound."""
        connection = self._connection()
        sweep = self._writes_since_sweep >= SWEEP_EVERY_WRITES and bool(writes)
        evicted = 0
        with _write_transaction(connection):
            if touches:
                connection.executemany("UPDATE entries SET used = ? WHERE id = ?",
                                       [(used, row_id) for row_id, used in touches.items()])
            total = self._total(connection)
            # Rows of keys dropped, and the older rows of the keys written.
            total -= self._drop_hashes(connection, [*drops, *(row_hash for row_hash, *_row in writes)])
            if sweep:
                # Expired rows go in batches now and then (eviction frees room whenever the
                # bound needs it): a query and a delete fewer on most writes of a miss.
                total -= self._drop(connection, "SELECT id, size FROM entries WHERE expires <= ? "
                                                "LIMIT 256", (now,))
            row_id = None
            if writes:
                incoming = sum(size for _hash, _value, size, _expires in writes)
                if total + incoming > self.max_bytes:
                    # Least recently used first, only as many as the batch needs: one query for
                    # the batch (a full tier, the usual state of a busy one, evicts on every write).
                    freed, count = self._evict(connection, total + incoming - self.max_bytes, None)
                    total -= freed
                    evicted += count
                connection.executemany(
                    "INSERT INTO entries (hash, value, size, expires, used) VALUES (?, ?, ?, ?, ?)",
                    [(row_hash, value, size, expires, now) for row_hash, value, size, expires in writes])
                row_id = connection.execute("SELECT last_insert_rowid()").fetchone()[0]
                total += incoming
                if total > self.max_bytes:  # a batch larger than the bound: its oldest go too
                    freed, count = self._evict(connection, total - self.max_bytes, row_id)
                    total -= freed
                    evicted += count
            pages = None
            if row_id is not None:
                freed, count, pages = self._fit_database(connection, row_id)
                total -= freed
                evicted += count
            connection.execute("UPDATE meta SET value = ? WHERE name = 'total_bytes'", (total,))
        if evicted:
            self._metrics.evicted.inc(evicted)
        if pages is not None:
            try:
                self._shrink_files(connection, *pages, checkpoint=sweep)
            except sqlite3.OperationalError:
                pass  # another worker holds the lock: the next write shrinks them
        presence = self._presence
        if presence is not None:
            for row_hash, *_row in writes:
                presence.add(row_hash)
        self._metrics.bytes.set(total)
        self._writes_since_sweep = 0 if sweep else self._writes_since_sweep + len(writes)
        self._writes_since_count += len(writes)
        if self._writes_since_count >= ENTRY_GAUGE_EVERY_WRITES:  # COUNT(*) scans: not every write
            self._writes_since_count = 0
            self._metrics.entries.set(
                connection.execute("SELECT COUNT(*) FROM entries").fetchone()[0])

    def _evict(self, connection: sqlite3.Connection, needed: int, keep: int | None) -> tuple[int, int]:
        """Delete least recently used rows (never row ``keep``) whose sizes add up to ``needed``
        bytes; (bytes freed by their sizes, rows deleted)."""
        victims: list[tuple[int]] = []
        freed = 0
        for victim, victim_size in connection.execute("SELECT id, size FROM entries ORDER BY used"):
            if victim == keep:
                continue
            victims.append((victim,))
            freed += victim_size
            if freed >= needed:
                break
        if victims:
            connection.executemany("DELETE FROM entries WHERE id = ?", victims)
        return freed, len(victims)

    def _fit_database(self, connection: sqlite3.Connection, keep: int | None
                      ) -> tuple[int, int, tuple[int, int]]:
        """Evict until the pages in use fit the database's share of the bound: rows cost more
        on disk than their sizes say (page slack, overflow pages, index pages). (Bytes freed by
        row sizes, rows deleted, (pages in the file, pages in use).)"""
        page_size = self._local.page_size
        freed = evicted = 0
        while True:
            pages, in_use = page_counts(connection)
            excess = in_use * page_size - self.database_bytes
            if excess <= 0:
                return freed, evicted, (pages, in_use)
            more, count = self._evict(connection, excess, keep)
            if not count:
                return freed, evicted, (pages, in_use)  # the new row alone: within max_entry_bytes
            freed += more
            evicted += count

    def _shrink_files(self, connection: sqlite3.Connection, pages: int, in_use: int, *,
                      checkpoint: bool) -> None:
        """Hand free pages past the database's share back to the file system, and now and then
        cut a log that grew past its share back (a checkpoint waits for busy readers)."""
        limit = max(self.database_bytes // self._local.page_size, in_use)
        if pages > limit:
            connection.execute(f"PRAGMA incremental_vacuum({pages - limit})")
        if not checkpoint:
            return
        try:
            wal = os.path.getsize(f"{self.path}-wal")
        except OSError:
            return
        if wal > 2 * self.wal_bytes:
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    @staticmethod
    def _total(connection: sqlite3.Connection) -> int:
        return int(connection.execute(
            "SELECT value FROM meta WHERE name = 'total_bytes'").fetchone()[0])

    @classmethod
    def _drop_hashes(cls, connection: sqlite3.Connection, hashes: list[int]) -> int:
        """Delete the rows of ``hashes``, a few queries for any number; bytes freed by their sizes."""
        freed = 0
        for start in range(0, len(hashes), _HASHES_PER_QUERY):
            chunk = hashes[start:start + _HASHES_PER_QUERY]
            freed += cls._drop(connection, "SELECT id, size FROM entries WHERE hash IN "
                                           f"({', '.join('?' * len(chunk))})", tuple(chunk))
        return freed

    @staticmethod
    def _drop(connection: sqlite3.Connection, query: str, args: tuple[object, ...]) -> int:
        rows = connection.execute(query, args).fetchall()
        if rows:
            connection.executemany("DELETE FROM entries WHERE id = ?", [(row_id,) for row_id, _ in rows])
        return sum(size for _row_id, size in rows)

    def delete(self, key: str) -> None:
        self.try_delete(key)

    def try_delete(self, key: str) -> bool:
        """Delete ``key``'s entry now, and any write of it still queued (False if the file could
        not be written)."""
        with self._exclusive(key):
            return self._delete_now([key])

    def _delete_now(self, keys: list[str]) -> bool:
        if not self.breaker.allow():
            return False
        try:
            connection = self._connection()
            with _write_transaction(connection):
                freed = self._drop_hashes(connection, [key_hash(key) for key in keys])
                if freed:
                    connection.execute(
                        "UPDATE meta SET value = value - ? WHERE name = 'total_bytes'", (freed,))
        except Exception as error:  # noqa: BLE001 - a disk fault never fails a request
            self._fault(error, self._metrics.store_error)
            return False
        self.breaker.success()
        if self._unsure:
            for key in keys:
                self._unsure.discard(key)
        return True

    def clear(self) -> bool:
        """Drop every entry (the fleet's invalidation state they were checked against was
        lost); False if the file could not be written."""
        with self._exclusive(None) as dropped:
            try:
                connection = self._connection()
                with _write_transaction(connection):
                    connection.execute("DELETE FROM entries")
                    connection.execute("UPDATE meta SET value = 0 WHERE name = 'total_bytes'")
            except Exception as error:  # noqa: BLE001 - a disk fault never fails a request
                self._fault(error, self._metrics.store_error)
                for pending in dropped:  # their older rows stay: never served in their place
                    self._unsure.add(pending.key)
                return False
            self._unsure.clear()
        return True

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Wait until the writes this process queued are on disk (or failed): for a test, or
        before another process must find them; False on timeout."""
        return self._behind.flush(timeout) if self._behind is not None else True

    # ----------------------------------------------------------------- async face
    async def aget(self, key: str) -> tuple[CachedEntry, str] | None:
        """:meth:`get`: answered on the event loop when the file need not be read (most misses),
        else in a worker thread."""
        now = self.clock()
        known = self._known(key, now)
        return await asyncio.to_thread(self._get_from_file, key, now) if known is _ASK_FILE else known

    async def aset(self, key: str, entry: CachedEntry) -> None:
        await self.atry_set(key, entry)

    async def atry_set(self, key: str, entry: CachedEntry) -> bool:
        """:meth:`try_set`: queued on the event loop itself (no thread hop), written in a worker
        thread only when it must be written now."""
        expires = self._queue(key, entry)
        if expires is True or expires is None:
            return expires is True
        return await asyncio.to_thread(self._set_now, key, entry, expires)

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

    @property
    def file_bytes(self) -> int:
        """What the tier's files take on disk: database, write-ahead log and its index."""
        total = 0
        for suffix in ("", "-wal", "-shm"):
            try:
                total += os.path.getsize(f"{self.path}{suffix}")
            except OSError:
                pass
        return total

    def __len__(self) -> int:
        try:
            return int(self._connection().execute("SELECT COUNT(*) FROM entries").fetchone()[0])
        except sqlite3.Error:
            return 0

    def close(self) -> None:
        if self._behind is not None:
            self._behind.close()
        # Every thread's connection (the writer's, request threads'); a thread that asks the
        # tier again opens a new one, closed when the tier is collected.
        self._generation += 1
        self._local.connection = None
        self._owned.close_all()
