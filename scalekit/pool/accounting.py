"""Cheap primitives for the per-request checkout path: connection slots and histogram handles.

Every request that uses a database takes a slot and observes two histograms; these do it in a
few C calls instead of the pure-Python ``threading.Semaphore`` and prometheus_client's public
``observe`` (which re-checks observability and scans the buckets in Python on every call).

>>> slots = ConnectionSlots(1)
>>> slots.try_take(), slots.try_take()
(True, False)
>>> slots.give(); slots.try_take()
True
"""

from __future__ import annotations

import functools
import queue
from bisect import bisect_left
from collections.abc import Callable
from typing import Any

__all__ = ["ConnectionSlots", "histogram_observer"]


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


def histogram_observer(child: Any) -> Callable[[float], None]:
    """A function that records one observation in ``child`` (a labelled histogram).

    Like ``scalekit.metrics._handles`` does for requests: the observation goes straight to the
    sum's and the bucket's value objects (each one locked addition, file-backed in
    multiprocess mode). prometheus_client stores histogram buckets per bucket, not cumulated,
    so the bucket is the first whose upper bound is >= the value. Should a prometheus_client
    version lay its children out differently, the child's public ``observe`` is returned.
    """
    total = getattr(child, "_sum", None)
    buckets = tuple(getattr(child, "_buckets", ()))
    bounds = tuple(getattr(child, "_upper_bounds", ()))
    if not (buckets and len(buckets) == len(bounds) and bounds[-1] == float("inf")
            and all(callable(getattr(part, "inc", None)) for part in (total, *buckets))):
        return child.observe  # type: ignore[no-any-return]
    add_to_total = total.inc  # type: ignore[union-attr]
    increments = tuple(bucket.inc for bucket in buckets)

    def observe(value: float) -> None:
        add_to_total(value)
        increments[bisect_left(bounds, value)](1)

    return observe
