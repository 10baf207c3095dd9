"""A circuit breaker for a remote or fallible tier: sustained failure skips the tier a while.

Closed: calls go through. It opens after ``consecutive_failures`` failures in a row, or when
at least ``failure_rate`` of the calls of the current window (``window_seconds``, counted once
``min_calls`` calls were made in it) failed; both are judged on a failure, never on a success
(a tier that just answered is not turned off). Open: for ``cool_down_seconds`` every call is
skipped at once (no request pays a timeout again). Then it is half-open: one caller at a time
tries; success closes it (and forgets the failures), a fault opens it for another cool-down.
The state is exported as ``scalekit_cache_circuit_open{tier}`` and logged once per opening.

Why not open on the first fault: one slow reply under load (a GET over its 50 ms timeout) is
not an outage, and turning L2 off for seconds because of it turned hits into misses. The Redis
tier therefore uses three in a row or half of twenty; the disk tier, whose faults persist
(read-only, full), keeps the default of one.

>>> now = [0.0]
>>> breaker = CircuitBreaker("redis", cool_down_seconds=5.0, consecutive_failures=3,
...                          monotonic=lambda: now[0])
>>> breaker.failure(OSError("slow")); breaker.allow()
True
>>> breaker.failure(OSError("down")); breaker.failure(OSError("down")); breaker.allow()
False
>>> now[0] = 5.0; breaker.allow(), breaker.allow()
(True, False)
>>> breaker.success(); breaker.is_open
False
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from ...metrics import instruments

__all__ = ["CircuitBreaker"]

log = logging.getLogger("scalekit.cache")


class CircuitBreaker:
    """Closed -> open (sustained failure) -> half-open (after the cool-down) -> closed."""

    def __init__(
        self,
        tier: str,
        *,
        cool_down_seconds: float = 5.0,
        consecutive_failures: int = 1,
        failure_rate: float = 0.5,
        window_seconds: float = 10.0,
        min_calls: int = 20,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tier = tier
        self.cool_down_seconds = cool_down_seconds
        self.consecutive_failures = consecutive_failures
        self.failure_rate = failure_rate
        self.window_seconds = window_seconds
        self.min_calls = min_calls
        self._monotonic = monotonic
        self._open_until: float | None = None  # None: closed
        self._trial_running = False
        self._lock = threading.Lock()
        # Counted without the lock on success (an approximate count is enough for a rate).
        self._streak = 0
        self._calls = 0
        self._failures = 0
        self._window_started = monotonic()
        self._gauge = instruments.CACHE_CIRCUIT_OPEN.labels(tier)
        self._gauge.set(0)
        self.openings = 0

    @property
    def is_open(self) -> bool:
        return self._open_until is not None

    def allow(self) -> bool:
        """Whether a call may go to the tier now (the closed path is one attribute read)."""
        if self._open_until is None:
            return True
        with self._lock:
            if self._open_until is None:
                return True
            if self._trial_running or self._monotonic() < self._open_until:
                return False
            self._trial_running = True  # half-open: this caller tries, the others still skip
            return True

    def success(self) -> None:
        """The tier answered (closes the breaker if it was open)."""
        self._calls += 1
        if self._open_until is None and not self._streak:
            return
        with self._lock:
            self._streak = 0
            if self._open_until is not None:
                log.warning("cache tier %s is back; using it again", self.tier)
                self._open_until = None
                self._trial_running = False
                self._forget(self._monotonic())
                self._gauge.set(0)

    def failure(self, error: BaseException) -> None:
        """The tier failed: open the breaker if the failure is sustained. Logged once per opening."""
        with self._lock:
            now = self._monotonic()
            if now - self._window_started > self.window_seconds:
                self._forget(now)
            self._calls += 1
            self._failures += 1
            self._streak += 1
            was_closed = self._open_until is None
            if was_closed and not self._is_sustained():
                return
            self._open_until = now + self.cool_down_seconds
            self._trial_running = False
            self._gauge.set(1)
            if was_closed:
                self.openings += 1
        if was_closed:
            log.warning("cache tier %s failed (%s: %s); skipping it for %.1f s", self.tier,
                        type(error).__name__, error, self.cool_down_seconds)

    def _is_sustained(self) -> bool:
        if self._streak >= self.consecutive_failures:
            return True
        return self._calls >= self.min_calls and self._failures >= self.failure_rate * self._calls

    def _forget(self, now: float) -> None:
        self._window_started = now
        self._calls = self._failures = self._streak = 0

    def reset(self) -> None:
        """Close the breaker at once (tests, or when the tier is known to be back)."""
        with self._lock:
            self._open_until = None
            self._trial_running = False
            self._forget(self._monotonic())
            self._gauge.set(0)
