"""L3's writer thread: a request queues its writes, one thread applies them in batches.

What must hold as when the request wrote the file itself: the process reads its own writes at
once, nothing overtakes a delete or a clear, a write that fails never lets an older entry be
served, the queue is bounded, and another process finds a write once it is flushed.
"""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Self

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from scalekit.cache.codec import Codec
from scalekit.cache.entry import CachedEntry
from scalekit.cache.tiers import writebehind
from scalekit.cache.tiers.disk import DB_NAME, DiskTier, key_hash
from scalekit.cache.tiers.memory import MemoryTier
from scalekit.cache.tiers.presence import REFRESH_SECONDS, TRUSTED_SECONDS, Presence
from scalekit.cache.tiers.tiered import TieredStore
from scalekit.cache.tiers.writebehind import Pending

from .conftest import FakeClock

_bodies = itertools.count()


def make_entry(clock: FakeClock, size: int = 100, lifetime: float = 60.0) -> CachedEntry:
    """An entry told apart from every other by its body."""
    body = f"{next(_bodies):08d}".encode().ljust(size, b".")
    return CachedEntry(status=200, headers=(("content-type", "text/plain"),), body=body,
                       request_time=clock.now, response_time=clock.now,
                       corrected_initial_age_seconds=0.0, freshness_lifetime_seconds=lifetime)


def reader(directory: Path, clock: FakeClock) -> DiskTier:
    """Another process's view of the file (its own connection, nothing queued)."""
    return DiskTier(directory, codec=Codec(), clock=clock, retain_stale_seconds=0, background_writes=False)


class WriteLock:
    """Another process holding SQLite's write lock (a worker stalled in a transaction)."""

    def __init__(self, directory: Path) -> None:
        self.connection = sqlite3.connect(directory / DB_NAME, isolation_level=None, check_same_thread=False)

    def __enter__(self) -> Self:
        self.connection.execute("BEGIN IMMEDIATE")
        return self

    def __exit__(self, *exc: object) -> None:
        self.connection.execute("ROLLBACK")

    def close(self) -> None:
        self.connection.close()


@pytest.fixture()
def tier(tmp_path: Path, clock: FakeClock) -> Iterator[DiskTier]:
    tier = DiskTier(tmp_path, codec=Codec(), clock=clock, retain_stale_seconds=0,
                    busy_timeout_seconds=0.02)
    assert len(tier) == 0  # the file is laid out before a test takes its write lock
    yield tier
    tier.close()


def test_a_write_is_queued_read_back_at_once_and_on_disk_after_a_flush(
        tier: DiskTier, tmp_path: Path, clock: FakeClock) -> None:
    entry = make_entry(clock)
    with closing(WriteLock(tmp_path)) as lock, lock:  # the writer cannot write yet
        assert tier.try_set("k", entry) is True
        found = tier.get("k")
        assert found is not None and found[0] is entry
        assert reader(tmp_path, clock).get("k") is None  # not on disk yet
    assert tier.flush()
    # The writer's batch failed while the lock was held: hidden, or written since, never older.
    other = reader(tmp_path, clock).get("k")
    assert other is None or other[0].body == entry.body
    tier.set("k", newer := make_entry(clock))
    assert tier.flush()
    assert reader(tmp_path, clock).get("k")[0].body == newer.body  # type: ignore[index]


def test_a_queued_write_reaches_the_file_by_itself(tier: DiskTier, tmp_path: Path, clock: FakeClock) -> None:
    entry = make_entry(clock)
    tier.set("k", entry)
    other = reader(tmp_path, clock)
    # Gathered with whatever else comes for up to GATHER_SECONDS, then written: no flush needed.
    assert wait_until(lambda: other.get("k") is not None, seconds=writebehind.GATHER_SECONDS + 2.0)
    assert other.get("k")[0].body == entry.body  # type: ignore[index]
    other.close()


def test_a_delete_is_never_overtaken_by_an_earlier_write(tier: DiskTier, tmp_path: Path,
                                                         clock: FakeClock) -> None:
    for round_ in range(50):
        key = f"k{round_}"
        tier.set(key, make_entry(clock))
        assert tier.try_delete(key)
        assert tier.get(key) is None
    assert tier.flush()
    other = reader(tmp_path, clock)
    assert all(other.get(f"k{round_}") is None for round_ in range(50))


def test_a_failed_batch_hides_the_older_entry_until_the_writer_deletes_it(tier: DiskTier, tmp_path: Path,
                                                                   clock: FakeClock) -> None:
    old = make_entry(clock)
    tier.set("k", old)
    assert tier.flush()
    with closing(WriteLock(tmp_path)) as lock, lock:
        tier.set("k", make_entry(clock))
        assert tier.flush()  # the batch failed (busy), and so did its delete
        statements = queries_of(tier)
        assert tier.get("k") is None  # never the older entry the file still holds
        assert statements == []  # nor a write (or a wait for the lock) in the request
        assert reader(tmp_path, clock).get("k")[0].body == old.body  # type: ignore[index]
    # The writer's next tick deletes it, off the request.
    assert wait_until(lambda: reader(tmp_path, clock).get("k") is None)
    assert tier.get("k") is None
    # The writer forgets the key just after its delete commits (another thread: not at once).
    assert wait_until(lambda: not tier._unsure)


def test_a_full_queue_writes_in_the_caller_in_order(tmp_path: Path, clock: FakeClock) -> None:
    tier = DiskTier(tmp_path, codec=Codec(), clock=clock, retain_stale_seconds=0, max_bytes=1_000_000)
    assert tier._behind is not None
    try:
        gate, inside = threading.Event(), threading.Event()
        original = tier._write_batch

        def held(batch: list[Pending], touches: dict[int, float]) -> None:
            inside.set()
            gate.wait(10)
            original(batch, touches)

        tier._behind._apply = held
        # The second is larger than the queue holds (a sixteenth of the bound): its caller writes it.
        first, second = make_entry(clock), make_entry(clock, size=70_000)
        assert tier.try_set("a", first)  # queued; the writer waits at the gate
        assert inside.wait(5)
        writing = threading.Thread(target=lambda: tier.set("a", second))
        writing.start()
        writing.join(0.2)
        assert writing.is_alive()  # it waits for the batch being written, not past it
        gate.set()
        writing.join(10)
        assert tier.flush()
        assert reader(tmp_path, clock).get("a")[0].body == second.body  # type: ignore[index]
    finally:
        tier.close()


def test_a_hit_refreshes_recency_in_the_next_batch(tier: DiskTier, tmp_path: Path, clock: FakeClock) -> None:
    tier.set("k", make_entry(clock))
    assert tier.flush()
    clock.advance(5.0)
    assert tier.get("k") is not None
    assert tier.flush()
    with closing(sqlite3.connect(tmp_path / DB_NAME)) as connection:
        used = connection.execute("SELECT used FROM entries").fetchone()[0]
    assert used == clock.now


def test_the_async_face_queues_on_the_loop(tier: DiskTier, tmp_path: Path, clock: FakeClock) -> None:
    entry = make_entry(clock)

    async def scenario() -> None:
        loop_thread = threading.get_ident()
        seen: list[int] = []
        original = tier._set_now
        tier._set_now = lambda *args: seen.append(threading.get_ident()) or original(*args)  # type: ignore[method-assign]
        assert await tier.atry_set("k", entry)
        assert seen == []  # queued: no write in a worker thread, none on the loop
        assert (await tier.aget("k"))[0] is entry  # type: ignore[index]
        assert loop_thread == threading.get_ident()

    asyncio.run(scenario())
    assert tier.flush()
    assert reader(tmp_path, clock).get("k")[0].body == entry.body  # type: ignore[index]


def test_close_writes_what_is_queued(tmp_path: Path, clock: FakeClock) -> None:
    tier = DiskTier(tmp_path, codec=Codec(), clock=clock, retain_stale_seconds=0)
    entries = {f"k{index}": make_entry(clock) for index in range(20)}
    for key, entry in entries.items():
        tier.set(key, entry)
    tier.close()
    other = reader(tmp_path, clock)
    assert {key: other.get(key)[0].body for key in entries} == {  # type: ignore[index]
        key: entry.body for key, entry in entries.items()}


def _child_after_fork(tier: DiskTier, clock: FakeClock, results: multiprocessing.Queue) -> None:
    # The parent's writer held its locks at the fork: the child must neither see the parent's
    # queue nor wait for a thread that does not exist in it.
    done = threading.Event()

    def work() -> None:
        results.put(("pending", tier.get("parent") is None))
        results.put(("delete", tier.try_delete("child")))
        tier.set("child", make_entry(clock))
        results.put(("flushed", tier.flush(5)))
        done.set()

    threading.Thread(target=work, daemon=True).start()
    results.put(("finished", done.wait(10)))


def test_a_forked_child_starts_with_a_queue_and_writer_of_its_own(tmp_path: Path, clock: FakeClock) -> None:
    tier = DiskTier(tmp_path, codec=Codec(), clock=clock, retain_stale_seconds=0)
    assert tier._behind is not None
    gate, inside = threading.Event(), threading.Event()
    original = tier._write_batch

    parent = os.getpid()

    def held(batch: list[Pending], touches: dict[int, float]) -> None:
        if os.getpid() == parent:  # the child's writer writes at once
            inside.set()
            gate.wait(10)
        original(batch, touches)

    tier._behind._apply = held
    try:
        tier.set("parent", make_entry(clock))
        assert inside.wait(5)  # the parent's writer is mid-batch, holding its locks
        context = multiprocessing.get_context("fork")
        results: multiprocessing.Queue = context.Queue()
        child = context.Process(target=_child_after_fork, args=(tier, clock, results))
        child.start()
        child.join(20)
        gate.set()
        answers = dict(results.get(timeout=1) for _ in range(4))
        assert answers == {"pending": True, "delete": True, "flushed": True, "finished": True}
        assert child.exitcode == 0
        assert tier.flush()
        other = reader(tmp_path, clock)
        assert other.get("parent") is not None and other.get("child") is not None
    finally:
        gate.set()
        tier.close()


# ------------------------------------------------------------------ random interleavings

KEYS = ("a", "b", "c")


class WriterMachine(RuleBasedStateMachine):
    """L3 with its writer thread behind a TieredStore (which masks what the tier reports it
    could not do), against the entries last stored; faults are another process holding the
    write lock, so the writer's batches and the callers' deletes fail while it is held."""

    behind_memory = False

    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(os.environ.get("TMPDIR", "/tmp")) / f"scalekit-writer-{os.getpid()}-{id(self)}"
        self.directory.mkdir(parents=True)
        self.clock = FakeClock()
        # A small bound: some writes find the queue full and are written by their caller.
        self.tier = DiskTier(self.directory, codec=Codec(), clock=self.clock, retain_stale_seconds=0,
                             max_bytes=64_000, busy_timeout_seconds=0.005)
        self.tier.flush()
        # Behind an L1 that keeps nothing, every lookup and store takes the store's direct way to
        # the one tier after L1 (the default tiers' miss path); alone, the store's plans.
        self.store = TieredStore([MemoryTier(max_bytes=50, clock=self.clock), self.tier]
                                 if self.behind_memory else [self.tier])
        self.lock = WriteLock(self.directory)
        self.locked = False
        self.last: dict[str, CachedEntry | None] = dict.fromkeys(KEYS)
        # Stored with no fault since: the tier must find it, and so must another process once flushed.
        self.intact: set[str] = set()
        self.readers: list[DiskTier] = []

    def teardown(self) -> None:
        if self.locked:
            self.lock.__exit__()
        self.lock.close()
        self.tier.close()
        for other in self.readers:
            other.close()
        for path in self.directory.iterdir():
            path.unlink()
        self.directory.rmdir()

    def alive(self, key: str) -> CachedEntry | None:
        entry = self.last[key]
        return entry if entry is not None and self.clock.now < entry.response_time + 60.0 else None

    @rule(key=st.sampled_from(KEYS), size=st.sampled_from([100, 3_000, 9_000]))
    def store_entry(self, key: str, size: int) -> None:
        self.last[key] = entry = make_entry(self.clock, size)
        self.store.set(key, entry)
        if self.locked:
            self.intact.discard(key)
        else:
            self.intact.add(key)

    @rule(key=st.sampled_from(KEYS))
    def delete(self, key: str) -> None:
        self.store.delete(key)
        self.last[key] = None
        self.intact.discard(key)

    @rule()
    def clear(self) -> None:
        if self.tier.clear():
            self.last = dict.fromkeys(KEYS)
        self.intact.clear()  # queued writes were dropped either way

    @rule(seconds=st.sampled_from([1.0, 30.0, 61.0]))
    def time_passes(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @precondition(lambda self: not self.locked)
    @rule()
    def another_process_takes_the_write_lock(self) -> None:
        self.lock.__enter__()
        self.locked = True
        self.intact.clear()  # what is still queued may fail now

    @precondition(lambda self: self.locked)
    @rule()
    def it_lets_go(self) -> None:
        self.lock.__exit__()
        self.locked = False

    @precondition(lambda self: not self.locked)
    @rule()
    def flush(self) -> None:
        assert self.tier.flush()
        other = reader(self.directory, self.clock)
        self.readers.append(other)
        for key in self.intact:
            expected = self.alive(key)
            found = other.get(key)
            if expected is None:
                assert found is None
            else:
                assert found is not None and found[0].body == expected.body, key

    @invariant()
    def every_lookup_is_the_last_entry_stored_or_nothing(self) -> None:
        for key in KEYS:
            found = self.store.get_past_memory(key) if self.behind_memory else self.store.get(key)
            expected = self.alive(key)
            if found is not None:
                assert expected is not None, f"{key}: served {found[0].body[:8]!r} after its delete"
                assert found[0].body == expected.body, f"{key}: an older entry was served"
            elif key in self.intact:
                assert expected is None, f"{key}: lost with no fault"


class WriterMachineBehindMemory(WriterMachine):
    behind_memory = True


@pytest.mark.parametrize("machine", [WriterMachine, WriterMachineBehindMemory])
def test_a_write_its_caller_could_not_make_never_lets_the_older_entry_out(machine: type[WriterMachine]) -> None:
    # The step sequence the machine must never let through, spelled out: an entry on disk, then
    # a write too large for the queue made while another process holds the write lock.
    state = machine()
    try:
        state.store_entry("a", 100)
        assert state.tier.flush()
        state.another_process_takes_the_write_lock()
        state.store_entry("a", 9_000)
        assert state.tier._behind is not None and state.tier._behind.pending("a") is None
        state.every_lookup_is_the_last_entry_stored_or_nothing()
    finally:
        state.teardown()


@pytest.mark.slow
@pytest.mark.parametrize("machine", [WriterMachine, WriterMachineBehindMemory])
def test_writes_deletes_clears_and_faults_in_any_order(machine: type[WriterMachine]) -> None:
    run_state_machine_as_test(machine, settings=settings(
        max_examples=30, stateful_step_count=25, deadline=None,
        suppress_health_check=[HealthCheck.too_slow]))


# ------------------------------------------------------------------ what the file holds, in memory

@given(st.sets(st.integers(min_value=-(2**63), max_value=2**63 - 1), max_size=300),
       st.integers(min_value=1, max_value=5000))
def test_presence_never_forgets_a_row_it_was_shown(hashes: set[int], capacity: int) -> None:
    presence = Presence(capacity)
    for row_hash in hashes:
        presence.add(row_hash)
    assert all(presence.may_hold(row_hash) for row_hash in hashes)


def test_presence_lets_few_absent_keys_through_at_capacity() -> None:
    presence = Presence(10_000)
    for index in range(10_000):
        presence.add(key_hash(f"http://shop.test/p/{index}"))
    passed = sum(presence.may_hold(key_hash(f"http://shop.test/q/{index}")) for index in range(10_000))
    assert passed < 600  # about 3 % by design; a broken filter lets most through
    assert presence.worn  # and it asks to be rebuilt


def queries_of(tier: DiskTier) -> list[str]:
    """The statements this thread's connection to the tier's file runs from now on."""
    statements: list[str] = []
    tier._connection().set_trace_callback(statements.append)
    return statements


def test_a_key_the_file_does_not_hold_is_a_miss_without_a_query(tier: DiskTier, clock: FakeClock) -> None:
    tier.set("stored", make_entry(clock))
    assert tier.flush()
    assert tier.get("absent") is None  # starts the writer, which loads what the file holds
    assert wait_until(lambda: tier._presence is not None)
    statements = queries_of(tier)
    assert all(tier.get(f"absent {index}") is None for index in range(200))
    assert len(statements) < 20  # the filter's few false "maybe"s
    assert tier.get("stored") is not None
    assert any(statement.startswith("SELECT value") for statement in statements)


def test_a_row_another_process_writes_is_found_within_the_refresh(tier: DiskTier, tmp_path: Path,
                                                                  clock: FakeClock) -> None:
    assert tier.get("k") is None
    assert wait_until(lambda: tier._presence is not None)
    other = reader(tmp_path, clock)
    written = make_entry(clock)
    assert other.try_set("k", written)
    assert wait_until(lambda: tier.get("k") is not None, seconds=REFRESH_SECONDS * 10)
    assert tier.get("k")[0].body == written.body  # type: ignore[index]
    other.close()


def test_rows_deleted_elsewhere_wear_the_filter_out_and_it_is_rebuilt(tier: DiskTier, tmp_path: Path,
                                                                      clock: FakeClock) -> None:
    keys = [f"k{index}" for index in range(1500)]
    for key in keys:
        tier.set(key, make_entry(clock))
    assert tier.flush()
    assert tier.get("absent") is None
    assert wait_until(lambda: tier._presence is not None)
    worn = tier._presence
    with closing(sqlite3.connect(tmp_path / DB_NAME)) as connection, connection:  # another process clears the file
        connection.execute("DELETE FROM entries")
    assert all(tier.get(key) is None for key in keys)  # every "maybe" wrong now
    assert wait_until(lambda: tier._presence is not worn)
    statements = queries_of(tier)
    assert all(tier.get(key) is None for key in keys)
    assert len(statements) < 150


def wait_until(condition: Callable[[], object], seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return bool(condition())


def test_an_idle_writer_ends_and_the_next_write_or_lookup_starts_another(
        tier: DiskTier, tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writebehind, "IDLE_SECONDS", 0.3)
    assert tier._behind is not None
    tier.set("a", make_entry(clock))
    assert tier.flush()
    assert wait_until(lambda: tier._behind._thread is None)  # type: ignore[union-attr]
    other = reader(tmp_path, clock)
    assert other.try_set("b", written := make_entry(clock))  # unseen: nobody refreshes the filter
    time.sleep(TRUSTED_SECONDS)
    found = tier.get("b")  # the filter is no longer trusted: the file is asked, a writer started
    assert found is not None and found[0].body == written.body
    assert tier._behind._thread is not None
    tier.set("c", make_entry(clock))
    assert tier.flush()
    assert other.get("c") is not None
    other.close()


def test_a_batch_past_the_bound_evicts_least_recently_used_rows_and_keeps_the_bound(
        tmp_path: Path, clock: FakeClock) -> None:
    tier = DiskTier(tmp_path, codec=Codec(compress_min_bytes=0), clock=clock, retain_stale_seconds=0,
                    max_bytes=20_000)
    for index in range(10):
        clock.advance(0.01)
        tier.set(f"old{index}", make_entry(clock, size=1000))
    assert tier.flush()
    clock.advance(0.01)
    assert tier.get("old0") is not None  # the oldest row, used since: kept before old1..old9
    assert tier.flush()
    statements, other = queries_of(tier), reader(tmp_path, clock)
    for batch in ((f"new{index}" for index in range(8)), (f"big{index}" for index in range(30))):
        clock.advance(0.01)
        written = list(batch)
        tier._write_batch([Pending(key, make_entry(clock, size=1000), clock.now + 60, 1000)
                           for key in written], {})
        assert tier.current_bytes <= 20_000
        assert other.get(written[-1]) is not None  # the newest always stays
        if written[0] == "new0":  # room made for 8 rows: the least recently used went, old0 stayed
            held = [key for key in (f"old{index}" for index in range(10)) if other.get(key)]
            assert 1 < len(held) < 10
            assert held == ["old0", *(f"old{index}" for index in range(11 - len(held), 10))]
            assert all(other.get(key) for key in written)
    # One eviction query a batch, not one a row.
    assert sum(statement.startswith("SELECT id, size FROM entries ORDER BY used") for statement in statements) <= 4
    with closing(sqlite3.connect(tmp_path / DB_NAME)) as connection:
        rows = connection.execute("SELECT SUM(size) FROM entries").fetchone()[0]
    assert rows == tier.current_bytes
    other.close()
    tier.close()


def test_two_keys_of_one_batch_sharing_a_row_hash_write_the_latter(
        tier: DiskTier, tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    from scalekit.cache.tiers import disk

    monkeypatch.setattr(disk, "key_hash", lambda key: 42)  # every key collides
    first, second = make_entry(clock), make_entry(clock)
    tier._write_batch([Pending("a", first, clock.now + 60, 100), Pending("b", second, clock.now + 60, 100)], {})
    other = reader(tmp_path, clock)
    assert len(other) == 1
    found = other.get("b")
    assert found is not None and found[0].body == second.body
    assert other.get("a") is None  # the codec checks the key: never b's entry under a
    other.close()
