"""L3's writes, handed to one thread of the process, in order, readable before they land.

A stored miss used to write L3 in the request: encode, compress, and one SQLite write
transaction of several statements, about 0.2 ms on a quiet machine and often far more under load
(``bench/cache_miss.py``'s disk pass). An L3 hit paid a write transaction too, to refresh the
row's recency. Both are bookkeeping the response does not wait for, so the request only queues
them here and a writer thread applies them in batches: one transaction for every write queued
meanwhile, recency refreshes folded in.

What a request may rely on, exactly as when it wrote the file itself:

- **Its own process reads its writes.** A queued entry is what a lookup of its key answers
  until the writer has stored it (:meth:`WriteBehind.pending`); a newer write of the key
  replaces the queued one.
- **Nothing overtakes a delete.** A delete, a write made in the request because the queue is
  full, and a clear hold :meth:`WriteBehind.exclusive`: they wait for the batch being written,
  drop what is queued for their key (or everything), and run before the writer's next batch.
- **No idle thread.** The writer starts with the first write and ends after ``IDLE_SECONDS``
  with nothing to do.
- **Bounded.** At most ``max_items`` entries and ``max_bytes`` of bodies wait; past that the
  request writes itself (:meth:`put` says so), as it always did.
- **A write that fails is never an older entry served.** ``apply`` (the tier's) handles its own
  faults: it hides whatever the file may still hold for the keys of a batch it could not write.

Entries still queued when the process dies are lost: a cache write, never an answer. In a
forked child the parent's queue and thread are forgotten (the parent writes its own).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import NamedTuple

from ...forks import pid
from ..entry import CachedEntry

__all__ = ["Pending", "WriteBehind"]

log = logging.getLogger("scalekit.cache")

# Recency refreshes alone wake the writer this often (a hit's refresh may wait that long:
# least-recently-used order at a second's grain is plenty), or once this many are queued.
TOUCH_INTERVAL_SECONDS = 1.0
MAX_TOUCHES = 4096
# A batch is written once its first entry has waited this long, or once it holds this many:
# one transaction (and its fixed statements) for many entries, and this process reads them back
# meanwhile; another process finds them that much later.
GATHER_SECONDS = 0.05
GATHER_ITEMS = 64
# A writer with nothing to do for this long ends (a tier nobody uses any more keeps no thread);
# the next write, or lookup that needs it, starts another.
IDLE_SECONDS = 5.0


class Pending(NamedTuple):
    """An entry queued for ``key``, usable until ``expires`` (wall-clock seconds)."""

    key: str
    entry: CachedEntry
    expires: float
    size: int


Apply = Callable[[list[Pending], dict[int, float]], None]


class WriteBehind:
    """The queue of one tier's writes and the thread that applies them (started on first use)."""

    def __init__(self, apply: Apply, *, max_items: int = 1024, max_bytes: int = 8 * 1024 * 1024,
                 tick: Callable[[], None] | None = None, tick_seconds: float = 1.0,
                 name: str = "scalekit-l3-writer") -> None:
        self._apply = apply
        # Called by the writer as it starts and then every ``tick_seconds``, holding off callers
        # of exclusive() as a batch does (L3 reads the rows other processes added).
        self._tick = tick
        self.tick_seconds = tick_seconds
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.name = name
        self._reset()

    def _reset(self) -> None:
        self._pid = pid()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        # Held while a batch is written, and by whoever must not be overtaken by one.
        self._exclusive = threading.Lock()
        self._queued: dict[str, Pending] = {}
        self._queued_bytes = 0
        self._touches: dict[int, float] = {}
        self._busy = False  # a batch taken from the queue is being written
        self._flushing = 0  # callers of flush() waiting: write at once
        self._waiting = False  # the writer waits for work
        self._tick_due = 0.0  # monotonic; the first tick runs as the writer starts
        self._used = time.monotonic()  # the last put, touch or start: the writer ends when idle
        self._gathering_since = 0.0  # monotonic: when the queue last went from empty to not
        self._thread: threading.Thread | None = None
        self._closed = False

    def _forked(self) -> None:
        # The parent's lock may have been held by one of its threads at the fork: in the child
        # nobody would ever release it, so every part of the state is made anew.
        if self._pid != pid():
            self._reset()

    # ----------------------------------------------------------------- request side
    def put(self, key: str, entry: CachedEntry, expires: float, size: int) -> bool:
        """Queue ``entry`` for ``key``; False when the queue is full or closed (the caller then
        writes it itself, under :meth:`exclusive`)."""
        self._forked()
        with self._lock:
            if self._closed:
                return False
            previous = self._queued.pop(key, None)
            queued_bytes = self._queued_bytes - (previous.size if previous else 0)
            if len(self._queued) >= self.max_items or queued_bytes + size > self.max_bytes:
                if previous is not None:  # keep the older queued write rather than lose both
                    self._queued[key] = previous
                return False
            if not self._queued:
                self._gathering_since = time.monotonic()
                wake = True  # the writer waits for work, not for this batch to fill
            else:
                wake = len(self._queued) + 1 >= GATHER_ITEMS
            self._queued[key] = Pending(key, entry, expires, size)
            self._queued_bytes = queued_bytes + size
            self._used = time.monotonic()
            if self._thread is None:
                self._start()
            elif wake and self._waiting:
                self._changed.notify()
        return True

    def start(self) -> None:
        """Start the writer if it is not running (its first tick runs at once)."""
        self._forked()
        with self._lock:
            self._used = time.monotonic()
            if self._thread is None and not self._closed:
                self._start()

    def pending(self, key: str) -> Pending | None:
        """The write queued for ``key`` and not yet applied, if any."""
        if self._pid != pid() or not self._queued:  # read without the lock: a dict get
            return None
        return self._queued.get(key)

    def touch(self, row_id: int, now: float) -> None:
        """Queue a recency refresh of row ``row_id``; it may wait up to a second."""
        self._forked()
        with self._lock:
            if self._closed:
                return
            self._touches[row_id] = now
            self._used = time.monotonic()
            if self._thread is None:
                self._start()
            elif len(self._touches) >= MAX_TOUCHES and self._waiting:
                self._changed.notify()

    @contextlib.contextmanager
    def exclusive(self, key: str | None) -> Iterator[list[Pending]]:
        """Wait for the batch being written, drop what is queued for ``key`` (everything when
        None), and hold the writer off until the block ends; yields the writes dropped (if
        the block fails, the file may hold older entries for their keys)."""
        self._forked()
        with self._exclusive:
            with self._lock:
                if key is None:
                    dropped = list(self._queued.values())
                    self._queued.clear()
                    self._queued_bytes = 0
                    self._touches.clear()
                else:
                    one = self._queued.pop(key, None)
                    dropped = [] if one is None else [one]
                    self._queued_bytes -= one.size if one is not None else 0
            yield dropped

    def take_touches(self) -> dict[int, float]:
        """The recency refreshes queued so far, for a caller writing under :meth:`exclusive`
        to apply in its own transaction."""
        with self._lock:
            touches, self._touches = self._touches, {}
        return touches

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Wait until everything queued so far is written (or failed); False on timeout."""
        self._forked()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            self._flushing += 1
            try:
                while self._queued or self._touches or self._busy:
                    if self._thread is None:
                        return not (self._queued or self._touches)
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return False
                    self._changed.notify_all()
                    self._changed.wait(remaining)
            finally:
                self._flushing -= 1
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued (for up to ``timeout``), then stop the thread; later writes are
        made by their callers."""
        self._forked()
        self.flush(timeout)
        with self._lock:
            self._closed = True
            self._changed.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def __len__(self) -> int:
        return len(self._queued)

    # ----------------------------------------------------------------- writer side
    def _start(self) -> None:
        """Start the writer (the lock is held; it clears ``_thread`` as it ends)."""
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def _wait_for_work(self) -> str | None:
        """Wait until a batch ("batch") or the tick ("tick") is due (the lock is held); None
        once closed with nothing left."""
        touches_due: float | None = None
        while True:
            now = time.monotonic()
            if self._tick is not None and now >= self._tick_due and not self._closed:
                return "tick"  # first: a writer that always has a batch still ticks
            gathered_at = None
            if self._queued:
                gathered_at = self._gathering_since + GATHER_SECONDS
                if (now >= gathered_at or len(self._queued) >= GATHER_ITEMS or self._flushing
                        or self._closed):
                    return "batch"
            elif self._touches:
                if self._closed or self._flushing or len(self._touches) >= MAX_TOUCHES:
                    return "batch"
                if touches_due is None:
                    touches_due = now + TOUCH_INTERVAL_SECONDS
                if now >= touches_due:
                    return "batch"
            else:
                idle_until = self._used + IDLE_SECONDS
                if self._closed or now >= idle_until:
                    # Ended under the lock: a put from now on starts a new writer.
                    self._thread = None
                    return None
            deadlines = [due for due in (gathered_at, touches_due if self._touches else None,
                                         None if self._queued or self._touches else idle_until,
                                         self._tick_due if self._tick is not None else None)
                         if due is not None]
            self._wait(min(deadlines) - now)

    def _wait(self, timeout: float | None) -> None:
        self._waiting = True  # a put wakes the writer only then: most puts find it busy
        try:
            self._changed.wait(timeout)
        finally:
            self._waiting = False

    def _run(self) -> None:
        try:
            self._write_until_closed()
        finally:
            with self._lock:
                if self._thread is threading.current_thread():  # ended by an error
                    self._thread = None
                self._changed.notify_all()

    def _write_until_closed(self) -> None:
        while True:
            with self._lock:
                work = self._wait_for_work()
            if work is None:
                return
            if work == "tick":
                assert self._tick is not None
                self._tick_due = time.monotonic() + self.tick_seconds
                # Under the same lock as a batch: a caller writing under exclusive() must not
                # land between what the tick reads and what it replaces.
                with self._exclusive:
                    try:
                        self._tick()
                    except Exception:
                        log.exception("the disk tier's writer could not refresh what it knows")
                continue
            with self._exclusive:  # taken only now: a delete must not wait for an idle writer
                with self._lock:
                    batch = list(self._queued.values())
                    touches, self._touches = self._touches, {}
                    if not batch and not touches:
                        self._changed.notify_all()  # an exclusive holder dropped them: flushed
                        continue
                    self._busy = True
                try:
                    self._apply(batch, touches)
                except Exception:
                    log.exception("the disk tier's writer could not write a batch")
                finally:
                    with self._lock:
                        for written in batch:
                            # A write queued for the key meanwhile stays for the next batch.
                            if self._queued.get(written.key) is written:
                                del self._queued[written.key]
                                self._queued_bytes -= written.size
                        self._busy = False
                        self._changed.notify_all()
