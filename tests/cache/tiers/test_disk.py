"""L3 specifics: byte bound with LRU eviction, corrupt rows and files, an unwritable disk, sharing."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from scalekit.cache.codec import Codec
from scalekit.cache.entry import CachedEntry
from scalekit.cache.tiers.disk import DB_NAME, DiskTier, key_hash

from .conftest import FakeClock


def make_entry(clock: FakeClock, body: bytes = b"hello") -> CachedEntry:
    return CachedEntry(status=200, headers=(("content-type", "text/plain"),), body=body,
                       request_time=clock.now, response_time=clock.now,
                       corrected_initial_age_seconds=0.0, freshness_lifetime_seconds=60.0)


def make_tier(path: Path, clock: FakeClock, **kwargs: object) -> DiskTier:
    kwargs.setdefault("max_bytes", 1_000_000)
    return DiskTier(path, codec=Codec(compress_min_bytes=0), clock=clock, retain_stale_seconds=0,
                    **kwargs)  # type: ignore[arg-type]


def test_byte_bound_evicts_least_recently_used(tmp_path: Path, clock: FakeClock) -> None:
    tier = make_tier(tmp_path, clock, max_bytes=10_000)
    for index in range(30):
        clock.advance(0.001)
        tier.set(f"k{index}", make_entry(clock, b"x" * 1000))
        if index == 25:
            clock.advance(0.001)
            assert tier.get("k20") is not None  # refresh k20's recency
        assert tier.current_bytes <= 10_000
    assert tier.get("k29") is not None
    assert tier.get("k20") is not None
    assert tier.get("k0") is None
    with closing(sqlite3.connect(tmp_path / DB_NAME)) as connection:
        rows = connection.execute("SELECT SUM(size) FROM entries").fetchone()[0]
    assert rows == tier.current_bytes


@pytest.mark.parametrize("background_writes", [True, False])
def test_entry_over_the_cap_is_not_stored_and_replaces_the_old_one(tmp_path: Path, clock: FakeClock,
                                                                   background_writes: bool) -> None:
    tier = make_tier(tmp_path, clock, max_entry_bytes=2_000, background_writes=background_writes)
    tier.set("k", make_entry(clock))
    assert tier.flush()
    # Its encoded size is known once encoded: in the writer thread, or here.
    assert tier.try_set("k", make_entry(clock, os.urandom(5_000))) is background_writes
    assert tier.flush()
    assert tier.get("k") is None
    assert len(tier) == 0


def test_corrupt_row_is_a_miss_and_is_removed(tmp_path: Path, clock: FakeClock) -> None:
    tier = make_tier(tmp_path, clock)
    tier.set("k", make_entry(clock))
    assert tier.flush()
    with closing(sqlite3.connect(tmp_path / DB_NAME)) as connection, connection:
        connection.execute("UPDATE entries SET value = substr(value, 1, 20) WHERE hash = ?", (key_hash("k"),))
    assert tier.get("k") is None
    assert len(tier) == 0 and tier.current_bytes == 0


def test_a_file_that_is_not_a_database_is_replaced(tmp_path: Path, clock: FakeClock) -> None:
    tier = make_tier(tmp_path, clock)
    tier.set("k", make_entry(clock))
    tier.close()
    for suffix in ("-wal", "-shm"):
        (tmp_path / (DB_NAME + suffix)).unlink(missing_ok=True)
    (tmp_path / DB_NAME).write_bytes(b"garbage" * 1000)  # truncated and overwritten
    reopened = make_tier(tmp_path, clock)
    assert reopened.get("k") is None  # a miss, never an exception
    clock.advance(10.0)  # the breaker's cool-down uses its own clock; reset it instead
    reopened.breaker.reset()
    reopened.set("k", make_entry(clock))
    assert reopened.get("k") is not None


def test_unwritable_disk_skips_writes_and_keeps_serving(tmp_path: Path, clock: FakeClock) -> None:
    # Writes made in the caller's thread, on the connection made read-only below (the writer
    # thread's faults: tests/cache/tiers/test_disk_writer.py).
    tier = make_tier(tmp_path, clock, background_writes=False)
    tier.set("old", make_entry(clock))
    tier._connection().execute("PRAGMA query_only = 1")  # every write now fails in SQLite
    assert tier.try_set("new", make_entry(clock)) is False
    assert tier.breaker.is_open
    tier.breaker.reset()
    assert tier.get("old") is not None


def _writer(path: str, start: int) -> None:
    clock = FakeClock()
    tier = DiskTier(path, max_bytes=20_000, codec=Codec(compress_min_bytes=0), clock=clock)
    for index in range(start, start + 60):
        tier.set(f"k{index}", make_entry(clock, b"y" * 500))
    tier.close()  # writes what is still queued


def test_processes_sharing_the_file_keep_the_bound(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_writer, args=(str(tmp_path), n * 1000)) for n in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    with closing(sqlite3.connect(tmp_path / DB_NAME)) as connection:
        total = connection.execute("SELECT SUM(size) FROM entries").fetchone()[0]
        accounted = connection.execute("SELECT value FROM meta WHERE name='total_bytes'").fetchone()[0]
    assert total == accounted <= 20_000
    assert total > 15_000


@pytest.mark.parametrize("entries", [1, 25])
def test_async_face_runs_in_a_thread(tmp_path: Path, clock: FakeClock, entries: int) -> None:
    import asyncio

    # Up to 25 writers queue for SQLite's write lock at once: a slow CI machine can keep one
    # waiting past the 0.2 s default, and a write that waits too long is skipped by design.
    # This test is about the async face, so each writer may wait as long as it needs.
    tier = make_tier(tmp_path, clock, busy_timeout_seconds=30.0)

    async def scenario() -> None:
        await asyncio.gather(*(tier.aset(f"k{i}", make_entry(clock)) for i in range(entries)))
        found = await asyncio.gather(*(tier.aget(f"k{i}") for i in range(entries)))
        assert all(item is not None for item in found)

    asyncio.run(scenario())


@pytest.fixture
def quick_directory(tmp_path: Path) -> Iterator[Path]:
    """A directory on tmpfs when there is one: the bound is about bytes, and a small bound
    checkpoints the log every few writes, which costs an fsync each on a real disk."""
    if not os.access("/dev/shm", os.W_OK):
        yield tmp_path
        return
    directory = Path(tempfile.mkdtemp(prefix="scalekit-l3-", dir="/dev/shm"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.parametrize("shape", ["2 KiB bodies", "3 KiB keys"])
def test_the_files_stay_within_the_bound(quick_directory: Path, clock: FakeClock, shape: str) -> None:
    max_bytes = 2 * 1024 * 1024
    tier = DiskTier(quick_directory, max_bytes=max_bytes, codec=Codec(), clock=clock)
    writes = 3 * max_bytes // 2048
    for index in range(writes):
        clock.advance(0.001)
        if shape == "2 KiB bodies":
            key, body = f"http://shop.test/p/{index}", os.urandom(2048)
        else:
            key, body = f"http://shop.test/p/{index}?q={os.urandom(1536).hex()}", b"ok"
        tier.set(key, make_entry(clock, body))
        assert tier.flush()
        assert tier.file_bytes <= max_bytes, f"{tier.file_bytes} bytes on disk after {index + 1} writes"
    assert len(tier) < writes  # it had to evict
    assert tier.file_bytes > max_bytes // 2  # and it used its room
    assert tier.get(key) is not None


def test_a_file_of_the_old_layout_is_laid_out_anew(tmp_path: Path, clock: FakeClock) -> None:
    with closing(sqlite3.connect(tmp_path / DB_NAME)) as connection, connection:
        connection.execute("CREATE TABLE entries (key TEXT PRIMARY KEY, value BLOB NOT NULL, "
                           "size INTEGER NOT NULL, expires REAL NOT NULL, used REAL NOT NULL)")
        connection.execute("INSERT INTO entries VALUES ('k', x'00', 1, 1e12, 0)")
    tier = make_tier(tmp_path, clock)
    assert tier.get("k") is None
    tier.set("k", make_entry(clock))
    assert tier.flush()
    assert tier.get("k") is not None and len(tier) == 1
