"""The SQLite file under L3 (:mod:`.disk`): its layout, its pragmas, and reading its size.

One file per host, shared by every worker: set-up tolerates workers opening a new file at once,
and a file of an older layout is emptied and laid out anew (it is a cache: dropping its rows
costs misses, never answers).
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from pathlib import Path

from ..sqlite_connections import closed_on_failure

__all__ = ["BUSY_CODES", "DB_NAME", "MIN_DATABASE_BYTES", "PAGE_SIZE", "SCHEMA_VERSION",
           "SETUP_TIMEOUT_SECONDS", "key_hash", "open_database", "page_counts"]

SETUP_TIMEOUT_SECONDS = 5.0
_INCREMENTAL = 2  # PRAGMA auto_vacuum's answer for INCREMENTAL
BUSY_CODES = frozenset({5, 6})  # SQLITE_BUSY, SQLITE_LOCKED
DB_NAME = "l3.sqlite3"
SCHEMA_VERSION = 3  # 3: ids never reused (AUTOINCREMENT), so "rows added since id N" is exact
PAGE_SIZE = 8192
# The smallest database: SQLite's header and schema, the tables' and indexes' root pages.
MIN_DATABASE_BYTES = 128 * 1024

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY AUTOINCREMENT, hash INTEGER NOT NULL, value BLOB NOT NULL, size INTEGER NOT NULL,
    expires REAL NOT NULL, used REAL NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS entries_hash ON entries(hash);
CREATE INDEX IF NOT EXISTS entries_used ON entries(used);
CREATE INDEX IF NOT EXISTS entries_expires ON entries(expires);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('total_bytes', 0);
"""


def key_hash(key: str) -> int:
    """The row's key: a signed 64-bit hash of the cache key (an SQLite integer)."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def open_database(path: Path, *, wal_bytes: int, busy_timeout_seconds: float) -> tuple[sqlite3.Connection, int]:
    """A connection to the file at ``path`` (made if need be) and its page size; the log is
    checkpointed once it holds ``wal_bytes`` and cut back to that much."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Workers of one host start together: set-up may wait longer than a request would.
    connection = sqlite3.connect(path, timeout=SETUP_TIMEOUT_SECONDS, isolation_level=None,
                                 check_same_thread=False)
    with closed_on_failure(connection):
        # Both only take effect on a new file. 8 KiB pages hold three 2 KiB rows where 4 KiB
        # pages hold one, without 16 KiB pages' slack under 9 KiB rows (measured on both shapes).
        connection.execute(f"PRAGMA page_size={PAGE_SIZE}")
        # Setting it on a file that has it already still waits for the write lock (up to the
        # set-up timeout while another worker writes): a new connection, in a new thread, would
        # stall.
        if int(connection.execute("PRAGMA auto_vacuum").fetchone()[0]) != _INCREMENTAL:
            connection.execute("PRAGMA auto_vacuum=INCREMENTAL")
        _switch_to_wal(connection)
        connection.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: atomic, durable enough
        page_size = int(connection.execute("PRAGMA page_size").fetchone()[0])
        connection.execute(f"PRAGMA wal_autocheckpoint={max(wal_bytes // page_size, 1)}")
        connection.execute(f"PRAGMA journal_size_limit={wal_bytes}")
        connection.execute(f"PRAGMA busy_timeout={int(SETUP_TIMEOUT_SECONDS * 1000)}")
        _create_schema(connection)
        connection.execute(f"PRAGMA busy_timeout={int(busy_timeout_seconds * 1000)}")
    return connection, page_size


def page_counts(connection: sqlite3.Connection) -> tuple[int, int]:
    """(Pages in the database file, pages in use): both read from the file's header."""
    pages = int(connection.execute("PRAGMA page_count").fetchone()[0])
    return pages, pages - int(connection.execute("PRAGMA freelist_count").fetchone()[0])


def _create_schema(connection: sqlite3.Connection) -> None:
    """The tables, once per file; a file of an older layout is emptied and laid out anew (it
    is a cache: dropping its rows costs misses, never answers)."""
    if int(connection.execute("PRAGMA user_version").fetchone()[0]) == SCHEMA_VERSION:
        return
    connection.execute("BEGIN IMMEDIATE")
    try:
        if int(connection.execute("PRAGMA user_version").fetchone()[0]) != SCHEMA_VERSION:
            connection.execute("DROP TABLE IF EXISTS entries")
            connection.execute("DROP TABLE IF EXISTS meta")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    connection.execute(statement)
            connection.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise


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
