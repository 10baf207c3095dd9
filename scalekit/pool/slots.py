"""The connection slots of a database: a counting semaphore in a few C calls.

Every request that uses a database takes a slot and gives it back; this does it with one call
each instead of the pure-Python ``threading.Semaphore``.

>>> slots = ConnectionSlots(1)
>>> slots.try_take(), slots.try_take()
(True, False)
>>> slots.give(); slots.try_take()
True
"""

from __future__ import annotations

import functools
import queue
from collections.abc import Callable

__all__ = ["ConnectionSlots"]


class ConnectionSlots:
    """A counting semaphore of ``count`` slots, made of a queue of tokens.

    ``queue.SimpleQueue`` is implemented in C: taking a free slot and giving it back are one
    call each, with no Python-level Condition as ``threading.Semaphore`` has, and a blocked
    ``take`` waits without holding the GIL, like the semaphore. Neither hands slots out in
    strict arrival order.
    """

    __slots__ = ("_tokens", "give")

    def __init__(self, count: int) -> None:
        self._tokens: queue.SimpleQueue[None] = queue.SimpleQueue()
        for _ in range(count):
            self._tokens.put(None)
        # give(): free a slot. A partial (C) rather than a method: one call fewer on every return.
        self.give: Callable[[], None] = functools.partial(self._tokens.put, None)

    def try_take(self) -> bool:
        """Take a slot if one is free right now."""
        try:
            self._tokens.get_nowait()
        except queue.Empty:
            return False
        return True

    def take(self, timeout_seconds: float) -> bool:
        """Take a slot, waiting up to ``timeout_seconds`` for one; False on timeout."""
        try:
            self._tokens.get(timeout=timeout_seconds)
        except queue.Empty:
            return False
        return True

    def free(self) -> int:
        """Slots free right now (for tests and diagnostics)."""
        return self._tokens.qsize()
