"""In-process bookkeeping of the cache layer: coalesced misses, background refreshes, and
recent URI invalidations. No HTTP decisions here; the shells consult these around I/O.

- :class:`ThreadFlights` / :class:`AsyncFlights`: N concurrent misses on one key make one
  origin call per process; the first caller leads, the others wait on its event. The leader
  ends its flight as soon as its response's headers are decided (a :class:`Lead`), not when
  the body has been sent: once the answer is stored, or at once, marked ``alone``, when it will
  not be (waiters then go to the origin themselves without looking the key up).
- :class:`PassMarks`: keys whose last answer was not storable ("hit-for-miss"), remembered for
  a short, bounded time in bounded memory: requests for them go to the origin without waiting.
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
from collections.abc import Callable, Iterable
from typing import Any, Protocol

__all__ = ["AsyncFlights", "Lead", "PassMarks", "RecentInvalidations", "RefreshRegistry",
           "ThreadFlights"]


class Flight:
    """One origin call in flight; the event is created only when someone waits for it
    (most misses are never waited on, and creating an Event costs more than the lookup).
    ``alone``: the leader's answer will not be stored; waiters go to the origin themselves."""

    __slots__ = ("alone", "event")

    def __init__(self) -> None:
        self.event: Any = None
        self.alone = False


class Flights(Protocol):
    def finish(self, key: str, flight: Flight) -> None: ...


class Lead:
    """A leader's hold on its key: this process's flight and, with fleet coalescing, the lease.

    :meth:`finish` is called as soon as the answer's fate is known and again when the request
    is over; only the first call does anything.
    """

    __slots__ = ("finished", "flight", "flights", "key", "lease")

    def __init__(self, flights: Flights, key: str, flight: Flight) -> None:
        self.flights = flights
        self.key = key
        self.flight = flight
        self.lease: Any = None  # the fleet lease, set by the shell once acquired
        self.finished = False

    def finish(self, *, alone: bool = False) -> Any:
        """Wake the waiters (``alone``: to go to the origin themselves) and return the fleet
        lease for the caller to release (None if there is none, or it was returned already)."""
        if self.finished:
            # The waiters woke at the first call and read ``alone`` then; a late lease (set
            # after that call) is still handed back.
            lease, self.lease = self.lease, None
            return lease
        self.finished = True
        if alone:
            self.flight.alone = True
        self.flights.finish(self.key, self.flight)
        lease, self.lease = self.lease, None
        return lease


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


class PassMarks:
    """Keys whose last origin answer could not be stored, each for ``ttl_seconds`` (the
    hit-for-miss of Varnish): a miss on a marked key goes to the origin without waiting for
    another request's answer, which would not be shared anyway. Storing an answer for the key
    removes its mark.

    Bounded in bytes (keys are mostly client-chosen URLs): the oldest marks go first, and a key
    longer than a sixteenth of ``max_bytes`` is never marked. A plain dict rather than a
    cachetools TTLCache: the check runs on every coalescable miss and is a lock-free lookup
    here, where the TTLCache needs a lock and a Python-level timer call (about 2 µs a miss).

    >>> marks = PassMarks(ttl_seconds=30.0, max_bytes=4096, clock=lambda: 0.0)
    >>> marks.add("GET http://example.com/live"); "GET http://example.com/live" in marks
    True
    """

    def __init__(self, *, ttl_seconds: float, max_bytes: int, clock: Callable[[], float]) -> None:
        self.ttl_seconds = ttl_seconds
        self.max_bytes = max_bytes
        self.max_key_bytes = max_bytes // 16
        self.size_bytes = 0
        self._clock = clock
        self._lock = threading.Lock()
        self._until: dict[str, float] = {}  # key -> end of its mark, oldest mark first

    def add(self, key: str) -> None:
        if self.ttl_seconds <= 0 or len(key) > self.max_key_bytes:
            return
        until = self._clock() + self.ttl_seconds
        with self._lock:
            marks = self._until
            if marks.pop(key, None) is None:
                self.size_bytes += len(key) + _MARK_OVERHEAD_BYTES
            marks[key] = until  # now the newest
            while self.size_bytes > self.max_bytes:
                oldest = next(iter(marks))
                del marks[oldest]
                self.size_bytes -= len(oldest) + _MARK_OVERHEAD_BYTES

    def discard(self, key: str) -> None:
        if key in self._until:
            with self._lock:
                if self._until.pop(key, None) is not None:
                    self.size_bytes -= len(key) + _MARK_OVERHEAD_BYTES

    def __contains__(self, key: object) -> bool:
        until = self._until.get(key)  # type: ignore[call-overload]  # any key: False
        return until is not None and self._clock() < until


# The dict slot, the float and the string object's header around the key's text.
_MARK_OVERHEAD_BYTES = 64


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
        self.sequence = 0
        self._floor = 0
        self._keys: OrderedDict[str, int] = OrderedDict()

    def mark(self) -> int:
        """Read before calling the origin; pass to :meth:`allows` when storing."""
        return self.sequence

    def invalidate(self, keys: Iterable[str]) -> None:
        with self._lock:
            self.sequence += 1
            for key in keys:
                self._keys[key] = self.sequence
                self._keys.move_to_end(key)
            while len(self._keys) > self.capacity:
                _, sequence = self._keys.popitem(last=False)
                self._floor = max(self._floor, sequence)

    def allows(self, key: str, since: int) -> bool:
        """Whether ``key`` was not invalidated after ``since`` was marked."""
        if self.sequence <= since:
            return True  # nothing happened since: the common case, no lock
        with self._lock:
            last = self._keys.get(key)
            return (self._floor if last is None else last) <= since
