"""Group commit for a writer's invalidations: the ones issued while a call to Redis is in flight
ride together in the next call (one script run, one log entry carrying all their tags).

Every instance of the fleet pays for each log entry (a wake-up, a read, an acknowledgement), so
under load a writer should append fewer, larger entries. Nobody waits on purpose: a call made
while Redis is idle goes at once; only calls that would have queued behind it are merged. Each
caller still gets its own answer (the batch's sequence and epoch, or its error), and applies and
reports its own tags.

:class:`ThreadBatches` serves the sync face (request threads), :class:`LoopBatches` the asyncio
face (one per event loop). Both keep the same rule: at most one call in flight; the callers that
arrive meanwhile form the next batch, sent by the first of them as soon as the call in flight
returns.

>>> batches = ThreadBatches()
>>> batches.submit(["a"], lambda tags: (7, "epoch", tags))
(7, 'epoch', ['a'])
>>> batches.calls
1
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Generic, TypeVar

__all__ = ["BatchFailed", "LoopBatches", "ThreadBatches"]

T = TypeVar("T")


class BatchFailed(Exception):
    """The call that carried this caller's tags, made by another caller, failed (the original
    error is the ``__cause__``; the caller that made the call got it as it was raised)."""


class _Batch(Generic[T]):
    def __init__(self) -> None:
        self.tags: set[str] = set()
        self.result: T | None = None
        self.error: BaseException | None = None
        self.done = threading.Event()


class ThreadBatches:
    """Group commit across threads (see the module)."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._busy = False
        self._next: _Batch[Any] | None = None  # forming: joined until its sender takes it
        self._turn: _Batch[Any] | None = None  # formed: its sender may go
        self.calls = 0  # calls made (tests and the bench count them)

    def submit(self, tags: Iterable[str], send: Callable[[list[str]], T]) -> T:
        """``send(tags)`` at once if nothing is in flight, else ride in the next batch."""
        with self._condition:
            if not self._busy:
                self._busy = True
                self.calls += 1
                batch: _Batch[T] | None = None
            else:
                leads = self._next is None
                if self._next is None:
                    self._next = _Batch()
                batch = self._next
                batch.tags.update(tags)
        if batch is None:
            try:
                return send(sorted(set(tags)))
            finally:
                self._release()
        if leads:
            return self._lead(batch, send)
        batch.done.wait()
        if batch.error is not None:
            raise BatchFailed(str(batch.error)) from batch.error
        return batch.result  # type: ignore[return-value]

    def _lead(self, batch: _Batch[T], send: Callable[[list[str]], T]) -> T:
        with self._condition:
            while self._turn is not batch:
                self._condition.wait()
            self._turn = None
            self._next = None  # closed: later callers form another batch
            self.calls += 1
            tags = sorted(batch.tags)
        try:
            batch.result = send(tags)
            return batch.result
        except BaseException as error:
            batch.error = error
            raise
        finally:
            batch.done.set()
            self._release()

    def _release(self) -> None:
        with self._condition:
            if self._next is not None:
                self._turn = self._next  # handed over: nobody arriving now may overtake it
            else:
                self._busy = False
            self._condition.notify_all()


class LoopBatches:
    """Group commit on one event loop (see the module); no locks: one thread runs it. A batch
    is sent by a task of its own, so a caller that is cancelled strands nobody."""

    def __init__(self) -> None:
        self._busy = False
        self._next: tuple[_Batch[Any], asyncio.Event, asyncio.Future[Any]] | None = None
        self._senders: set[asyncio.Task[None]] = set()
        self.calls = 0

    async def submit(self, tags: Iterable[str], send: Callable[[list[str]], Awaitable[T]]) -> T:
        """``await send(tags)`` at once if nothing is in flight, else ride in the next batch."""
        if not self._busy:
            self._busy = True
            self.calls += 1
            try:
                return await send(sorted(set(tags)))
            finally:
                self._release()
        if self._next is None:
            batch: _Batch[T] = _Batch()
            turn, done = asyncio.Event(), asyncio.get_running_loop().create_future()
            self._next = (batch, turn, done)
            task = asyncio.create_task(self._send_in_turn(batch, turn, done, send))
            self._senders.add(task)
            task.add_done_callback(self._senders.discard)
        batch, _, done = self._next
        batch.tags.update(tags)
        return await asyncio.shield(done)

    async def _send_in_turn(self, batch: _Batch[T], turn: asyncio.Event, done: asyncio.Future[T],
                            send: Callable[[list[str]], Awaitable[T]]) -> None:
        await turn.wait()
        self._next = None
        self.calls += 1
        try:
            done.set_result(await send(sorted(batch.tags)))
        except BaseException as error:  # every waiter hears it, the sender task ends quietly
            failure = BatchFailed(str(error))
            failure.__cause__ = error
            done.set_exception(failure)
            done.exception()  # retrieved: the waiters may all have been cancelled
            if isinstance(error, asyncio.CancelledError):
                raise
        finally:
            self._release()

    def _release(self) -> None:
        if self._next is not None:
            self._next[1].set()  # handed over, as ThreadBatches does
        else:
            self._busy = False
