"""The one module that reaches into prometheus_client's metric objects, for the hot paths.

prometheus_client's public ``inc``, ``set`` and ``observe`` re-check on every call that a child
is observable (and ``observe`` scans the buckets); the value objects behind a child (file-backed
in multiprocess mode) are one locked addition each. A plain cache hit's counters, the batches
of plain hits the metrics layer adds at once (a histogram has no public call for "n
observations in bucket i") and the cache tiers' counters use them through the handles below;
a request the metrics layer records itself uses the public API, where they would save about
0.5 us against a 15 us target. What they buy, per
call and per request, is printed by ``bench/overhead.py`` beside its targets; the README's
dependency table names them; ``tests/test_metrics.py`` fails if a prometheus_client release
lays its children out differently (the handles would then fall back to the public API, slower
but right). Read here: ``child._value`` (counters, gauges), a histogram child's ``_sum``,
``_buckets`` and ``_upper_bounds``; and each metric's ``collect`` is wrapped so that queued
events (:class:`Tally`, the cache's savings, the plain hits' ledger) are added before any read.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import weakref
from collections.abc import Callable
from typing import Any, Protocol, cast

from .flusher import FLUSHER, background_flush

__all__ = [
    "Handles",
    "Increment",
    "Settable",
    "Tally",
    "counter_handle",
    "fast_handles",
    "flush_before_collect",
    "gauge_handle",
    "gauge_increment",
    "histogram_handles",
    "incrementer",
]


class Increment(Protocol):
    def inc(self, amount: float, /) -> None: ...


def counter_handle(child: Any) -> Increment:
    """What a hot path calls ``inc(1)`` on to count with ``child`` (a labelled counter).

    prometheus_client's public ``inc`` re-checks that the child is observable on every call;
    its value object (the same in multiprocess mode, where it is file-backed) is one locked
    addition. Should a prometheus_client version lay children out differently, the child
    itself is returned, whose public ``inc(1)`` does the same.
    """
    value = getattr(child, "_value", None)
    return cast(Increment, value if callable(getattr(value, "inc", None)) else child)


class Settable(Protocol):
    def set(self, value: float, /) -> None: ...


def gauge_handle(child: Any) -> Settable:
    """What a hot path calls ``set(value)`` on to move ``child`` (a labelled gauge): its value
    object, one locked store (see :func:`counter_handle`), or the child itself."""
    value = getattr(child, "_value", None)
    return cast(Settable, value if callable(getattr(value, "set", None)) else child)


_TALLIES: dict[int, weakref.WeakSet[Any]] = {}  # Tally and Savings objects


class Tally:
    """Counts one event for several counters at the cost of one C call (``itertools.count``,
    atomic under the GIL), added to the counters just before the registry reads them.

    For the cache's plain hits, where two locked additions were a tenth of the request. The
    counters' ``collect`` flushes every tally feeding them first, so any scrape or
    ``get_sample_value`` sees every event. In multiprocess mode another process reads the
    counters' files, so the process's flusher thread (:mod:`.flusher`) also adds them every
    ``FLUSH_INTERVAL_SECONDS``.

    The registry holds a tally weakly (a closed tier's goes with it): its owner keeps the tally
    itself, not only ``tick``, or the events ticked after the tally is gone are never added.
    """

    def __init__(self, counters: tuple[Any, ...], increments: tuple[Callable[[int], None], ...]) -> None:
        self._increments = increments
        self._events = itertools.count()
        self.tick: Callable[[], object] = self._events.__next__
        self._reads = 0  # next() calls made by flush(), not events
        self._flushed = 0
        for counter in counters:
            flush_before_collect(counter, self)
        # The hot path's ticks call nothing else: the thread starts with the first flush that
        # finds events (the ledger's and the savings' first records start it sooner).
        self._arm = background_flush(self)

    def _taken(self) -> int:
        """The events since the last call, under the flusher's lock."""
        events = next(self._events) - self._reads
        self._reads += 1
        pending = events - self._flushed
        self._flushed = events
        return pending

    def flush(self) -> None:
        """Add the events counted since the last flush to every counter."""
        with FLUSHER.lock:
            pending = self._taken()
            if pending:
                for increment in self._increments:
                    increment(pending)
        if pending:
            self._arm()

    def drop_inherited(self) -> None:
        """Forget the parent's events (in a forked child: the parent counts them)."""
        self._taken()

    def __del__(self) -> None:
        # At interpreter exit the counters may already be gone: nothing left to count into.
        with contextlib.suppress(Exception):
            self.flush()


class _Flushable(Protocol):
    def flush(self) -> None: ...


Handles = tuple[Any, Any, Any, tuple[float, ...]]


def histogram_handles(counter: Any, histogram: Any) -> Handles:
    """The value objects behind a counter child and a histogram child.

    prometheus_client's public ``inc``/``observe`` re-check observability and scan the buckets
    on every call; these handles make a recorded request three locked additions, the same in
    multiprocess mode (file-backed values). Should a prometheus_client version lay its
    children out differently, ``(None, counter, histogram, ())`` selects the public API.
    """
    value = getattr(counter, "_value", None)
    total = getattr(histogram, "_sum", None)
    buckets = tuple(getattr(histogram, "_buckets", ()))
    bounds = tuple(getattr(histogram, "_upper_bounds", ()))
    parts = (value, total, *buckets)
    if buckets and len(buckets) == len(bounds) and all(hasattr(part, "inc") for part in parts):
        return value, total, buckets, bounds
    return None, counter, histogram, ()


def gauge_increment(gauge: Any) -> Increment:
    """What a hot path calls ``inc(amount)`` on to move ``gauge`` (unlabelled; up and down):
    its value object, or the gauge itself."""
    value = getattr(gauge, "_value", None)
    return cast(Increment, value if callable(getattr(value, "inc", None)) else gauge)

def incrementer(child: Any) -> Callable[[], None]:
    """A no-argument ``child.inc()`` (a labelled counter) for a hit path."""
    return functools.partial(counter_handle(child).inc, 1)


def fast_handles(counter: Any, histogram: Any, gauge: Any) -> bool:
    """Whether this prometheus_client lays out its children as the handles expect (a counter
    child, a histogram child and a gauge): False means every handle is the public API."""
    value = getattr(counter, "_value", None)
    return (callable(getattr(value, "inc", None)) and histogram_handles(counter, histogram)[0] is not None
            and callable(getattr(getattr(gauge, "_value", None), "set", None)))


def flush_before_collect(counter: Any, tally: _Flushable) -> None:
    """Have every collect of ``counter`` (a metric) call ``tally.flush()`` first, while
    ``tally`` lives: what a hot path queued is in every scrape."""
    tallies = _TALLIES.get(id(counter))
    if tallies is None:
        tallies = _TALLIES[id(counter)] = weakref.WeakSet()
        collect = counter.collect

        def collect_flushed() -> Any:
            for each in list(tallies):
                each.flush()
            return collect()

        counter.collect = collect_flushed  # the registry calls the instance's collect
    tallies.add(tally)
