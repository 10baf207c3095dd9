"""Every SQLite connection the disk tier and the host's generations file open, in any thread, is
closed when they close: none is left for the garbage collector (Python 3.13 reports each such
one as ``ResourceWarning: unclosed database``, an error in a suite run with warnings as errors).

Observed from outside: SQLite deletes a write-ahead-log file's ``-wal`` and ``-shm`` companions
when the last connection to it closes, so they are gone only if every connection was closed.
"""

from __future__ import annotations

import gc
import os
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from scalekit.cache.codec import Codec
from scalekit.cache.entry import CachedEntry
from scalekit.cache.hostgenerations import HostGenerations
from scalekit.cache.sqlite_connections import OwnedConnections
from scalekit.cache.tiers.disk import DiskTier
from scalekit.cache.tiers.sqlite_file import open_database
from scalekit.cdn.purge.localqueue import LocalPurgeQueue


def entry(body: bytes) -> CachedEntry:
    now = time.time()
    return CachedEntry(status=200, headers=(("content-type", "text/plain"),), body=body,
                       request_time=now, response_time=now, corrected_initial_age_seconds=0.0,
                       freshness_lifetime_seconds=300.0)


def log_files(path: Path) -> list[str]:
    return [suffix for suffix in ("-wal", "-shm") if os.path.exists(f"{path}{suffix}")]


def test_closing_the_disk_tier_closes_every_threads_connection(tmp_path: Path) -> None:
    tier = DiskTier(tmp_path, codec=Codec(compress_min_bytes=0), background_writes=False)
    with ThreadPoolExecutor(max_workers=3) as pool:  # its threads outlive their work
        barrier = threading.Barrier(3)

        def use(index: int) -> bool:
            barrier.wait()  # one call per thread: three threads, three connections
            tier.set(f"k{index}", entry(b"x" * 100))
            return tier.get(f"k{index}") is not None

        assert all(pool.map(use, range(3)))
        assert log_files(tier.path)  # the log is open while the connections are
        tier.close()  # from this thread, while the pool's threads still live
        assert log_files(tier.path) == []
    with sqlite3.connect(tier.path) as check:  # the file itself is intact
        assert check.execute("SELECT COUNT(*) FROM entries").fetchone()[0] == 3
    check.close()


def test_a_closed_connection_is_a_fault_not_a_corrupt_file(tmp_path: Path) -> None:
    """A thread asking the tier after close() gets a new connection or a miss; the file is
    never taken for corrupt (and moved aside) because a connection was closed under it."""
    tier = DiskTier(tmp_path, codec=Codec(compress_min_bytes=0), background_writes=False)
    tier.set("k", entry(b"kept"))
    tier.close()
    found = tier.get("k")
    assert found is not None and found[0].body == b"kept"
    assert not list(tmp_path.glob("*.corrupt"))
    tier.close()


def test_the_generations_file_closes_its_and_its_watchers_connections(tmp_path: Path) -> None:
    path = tmp_path / "generations.sqlite3"
    generations = HostGenerations(path, poll_interval_seconds=0.01)
    generations.start()
    generations.invalidate(["a"])
    time.sleep(0.05)  # the watcher has read the file
    assert log_files(path)
    generations.close()
    assert log_files(path) == []


def test_connections_of_ended_threads_are_closed_at_the_next_opening_shared_ones_kept(tmp_path: Path) -> None:
    owned = OwnedConnections()
    opened: list[sqlite3.Connection] = []

    def open_one() -> None:
        opened.append(owned.add(sqlite3.connect(tmp_path / "f.db", check_same_thread=False),
                                this_thread_only=True))
        opened.append(owned.add(sqlite3.connect(tmp_path / "f.db", check_same_thread=False)))

    thread = threading.Thread(target=open_one)
    thread.start()
    thread.join()
    owned.add(sqlite3.connect(tmp_path / "f.db"))
    with pytest.raises(sqlite3.ProgrammingError):
        opened[0].execute("SELECT 1")  # its thread ended: closed
    assert opened[1].execute("SELECT 1").fetchone() == (1,)  # shared: still open
    owned.close_all()


def test_a_collected_owner_still_closes_its_connections(tmp_path: Path) -> None:
    owned = OwnedConnections()
    connection = owned.add(sqlite3.connect(tmp_path / "f.db"))
    del owned
    with pytest.raises(sqlite3.ProgrammingError):
        connection.execute("SELECT 1")


def test_the_generations_files_shared_connection_outlives_the_thread_that_opened_it(tmp_path: Path) -> None:
    """Opened by a thread that then ends (a request thread, a worker of asyncio.to_thread), it is
    the process's connection to the file: the watcher opening its own later must not close it."""
    made: list[HostGenerations] = []

    def serve() -> None:
        generations = HostGenerations(tmp_path / "g.sqlite3", poll_interval_seconds=0.2)
        generations.start()  # the watcher opens its connection at its first tick, 0.2 s on
        generations.invalidate(["a"])
        made.append(generations)

    opener = threading.Thread(target=serve)
    opener.start()
    opener.join()
    generations = made[0]
    time.sleep(0.5)  # the watcher has ticked (and opened its connection)
    result = generations.invalidate(["b"])
    assert result.reach == "host", result.detail
    generations.close()


def open_descriptors(path: Path) -> int:
    """This process's file descriptors open on ``path``."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}") == str(path)
        except OSError:
            pass  # closed since it was listed (the listing's own descriptor)
    return count


def open_the_disk_tiers_file(path: Path) -> None:
    open_database(path, wal_bytes=1 << 20, busy_timeout_seconds=1.0)


def queue_a_purge(path: Path) -> None:
    LocalPurgeQueue(path).enqueue({"edge": ["a"]}, source="test", now=0.0, due=0.0)


def persist_an_invalidation(path: Path) -> None:
    generations = HostGenerations(path)  # logs that the file is unreadable, and goes on
    generations.invalidate(["a"])  # logs that it could not persist it, applied in this process
    assert open_descriptors(path) == 0  # checked while the object lives
    generations.close()


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors in /proc")
@pytest.mark.parametrize("opener", [open_the_disk_tiers_file, queue_a_purge, persist_an_invalidation])
def test_a_connection_whose_set_up_fails_is_closed_at_once(tmp_path: Path, opener: object) -> None:
    """A file that is not a database fails the set-up statements after the connection opened:
    that connection is closed then, not left, with its file descriptor, to the collector (the
    error's traceback, kept by a caller, a breaker or a log record, would hold it open)."""
    path = tmp_path / "cache.sqlite3"
    path.write_bytes(b"this is not an SQLite database " * 200)
    gc.disable()  # a collection by chance would close a leaked connection and hide it
    try:
        try:
            opener(path)  # type: ignore[operator]
        except sqlite3.DatabaseError:
            assert open_descriptors(path) == 0  # the error, and its frames, still alive here
        assert open_descriptors(path) == 0
    finally:
        gc.enable()
