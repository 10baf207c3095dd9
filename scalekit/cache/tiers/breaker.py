"""A circuit breaker for a remote or fallible tier: one fault skips the tier for a cool-down.

Closed: calls go through. A fault opens it: for ``cool_down_seconds`` every call is skipped
at once (no request pays a timeout again). Then it is half-open: one caller at a time tries;
success closes it, a fault opens it for another cool-down. The state is exported as
``scalekit_cache_circuit_open{tier}`` and a fault is logged once per opening, not per request.

>>> now = [0.0]
>>> breaker = CircuitBreaker("redis", cool_down_seconds=5.0, monotonic=lambda: now[0])
>>> breaker.allow(), breaker.failure(OSError("down")), breaker.allow()
(True, None, False)
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

from ... import instruments

__all__ = ["CircuitBreaker"]

log = logging.getLogger("scalekit.cache")


class CircuitBreaker:
    """Closed -> open (on a fault) -> half-open (after the cool-down) -> closed (on success)."""

    def __init__(
        self,
        tier: str,
        *,
        cool_down_seconds: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tier = tier
        self.cool_down_seconds = cool_down_seconds
        self._monotonic = monotonic
        self._open_until: float | None = None  # None: closed
        self._trial_running = False
        self._lock = threading.Lock()
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
        """The tier answered: close the breaker (if it was open)."""
        if self._open_until is None:
            return
        with self._lock:
            if self._open_until is not None:
                log.warning("cache tier %s is back; using it again", self.tier)
            self._open_until = None
            self._trial_running = False
            self._gauge.set(0)

    def failure(self, error: BaseException) -> None:
        """The tier failed: skip it for the cool-down. Logged once per opening."""
        with self._lock:
            was_closed = self._open_until is None
            self._open_until = self._monotonic() + self.cool_down_seconds
            self._trial_running = False
            self._gauge.set(1)
            if was_closed:
                self.openings += 1
        if was_closed:
            log.warning("cache tier %s failed (%s: %s); skipping it for %.1f s", self.tier,
                        type(error).__name__, error, self.cool_down_seconds)

    def reset(self) -> None:
        """Close the breaker at once (tests, or when the tier is known to be back)."""
        with self._lock:
            self._open_until = None
            self._trial_running = False
            self._gauge.set(0)
