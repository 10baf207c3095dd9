"""In-process bookkeeping of the cache layer: coalesced misses, background refreshes, and
recent URI invalidations. No HTTP decisions here; the shells consult these around I/O.

- :class:`ThreadFlights` / :class:`AsyncFlights`: N concurrent misses on one key make one
  origin call per process; the first caller leads, the others wait on its event.
- :class:`RefreshRegistry`: a stale-while-revalidate refresh runs once per key at a time.
- :class:`RecentInvalidations`: a response whose origin call overlapped an unsafe-method
  invalidation of its URI is not stored (the tag generations do the same for tags).

>>> flights = ThreadFlights()
>>> flight, wait_on = flights.join("k"); wait_on is None       # the leader
True
>>> _, event = flights.join("k")                                 # a waiter
>>> flights.finish("k", flight); event.is_set()
True
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

__all__ = ["AsyncFlights", "RecentInvalidations", "RefreshRegistry", "ThreadFlights"]


class Flight:
    """One origin call in flight; the event is created only when someone waits for it
    (most misses are never waited on, and creating an Event costs more than the lookup)."""

    __slots__ = ("event",)

    def __init__(self) -> None:
        self.event: Any = None


class ThreadFlights:
    """Origin calls in flight under WSGI, by key: one leader, the rest wait on an Event."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flights: dict[str, Flight] = {}

    def join(self, key: str) -> tuple[Flight, threading.Event | None]:
        """The flight for ``key`` and, for a waiter, the event to wait on (None: the caller
        leads and must call :meth:`finish`)."""
        with self._lock:
            flight = self._flights.get(key)
            if flight is None:
                flight = self._flights[key] = Flight()
                return flight, None
            if flight.event is None:
                flight.event = threading.Event()
            return flight, flight.event

    def finish(self, key: str, flight: Flight) -> None:
        """End the flight (idempotent): waiters wake and look the key up again."""
        with self._lock:
            if self._flights.get(key) is flight:
                del self._flights[key]
            event = flight.event
        if event is not None:
            event.set()

    def __len__(self) -> int:
        return len(self._flights)


class AsyncFlights:
    """The asyncio twin of :class:`ThreadFlights` (one event loop; no lock needed)."""

    def __init__(self) -> None:
        self._flights: dict[str, Flight] = {}

    def join(self, key: str) -> tuple[Flight, asyncio.Event | None]:
        flight = self._flights.get(key)
        if flight is None:
            flight = self._flights[key] = Flight()
            return flight, None
        if flight.event is None:
            flight.event = asyncio.Event()
        return flight, flight.event

    def finish(self, key: str, flight: Flight) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]
        if flight.event is not None:
            flight.event.set()

    def __len__(self) -> int:
        return len(self._flights)


class RefreshRegistry:
    """Keys whose background refresh is running; at most ``limit`` at once (bounded work)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._running: set[str] = set()

    def try_start(self, key: str) -> bool:
        """True if the caller should refresh ``key`` now (then it must call :meth:`done`)."""
        with self._lock:
            if key in self._running or len(self._running) >= self.limit:
                return False
            self._running.add(key)
            return True

    def done(self, key: str) -> None:
        with self._lock:
            self._running.discard(key)

    def __len__(self) -> int:
        return len(self._running)


class RecentInvalidations:
    """Sequence numbers of the last unsafe-method invalidation of recent keys (bounded).

    A key pushed out of the bounded map raises ``floor``: every key not in the map counts as
    invalidated at ``floor``, which errs towards not storing, never towards storing stale.
    """

    def __init__(self, capacity: int = 4096) -> None:
        self.capacity = capacity
        self._lock = threading.Lock()
        self._sequence = 0
        self._floor = 0
        self._keys: OrderedDict[str, int] = OrderedDict()

    def mark(self) -> int:
        """Read before calling the origin; pass to :meth:`allows` when storing."""
        return self._sequence

    def invalidate(self, keys: Iterable[str]) -> None:
        with self._lock:
            self._sequence += 1
            for key in keys:
                self._keys[key] = self._sequence
                self._keys.move_to_end(key)
            while len(self._keys) > self.capacity:
                _, sequence = self._keys.popitem(last=False)
                self._floor = max(self._floor, sequence)

    def allows(self, key: str, since: int) -> bool:
        """Whether ``key`` was not invalidated after ``since`` was marked."""
        if self._sequence <= since:
            return True  # nothing happened since: the common case, no lock
        with self._lock:
            last = self._keys.get(key)
            return (self._floor if last is None else last) <= since
