"""The consumer of one target: takes queued purges, waits until they are due, sends them in
batches, retries failures with backoff and jitter, and gives up on nothing it could still do.

One :class:`TargetWorker` per target runs in every app process (a daemon thread), so a slow
or failing vendor never delays another target's purges. Each step:

1. take jobs over from consumers that went silent (every ``reclaim_after_seconds / 2``);
2. take new jobs (blocking on Redis until the next held job is due, at most a second);
3. renew the jobs held for a later retry, so nobody takes them over meanwhile;
4. send every job that is due: release its waiting items, build the vendor's calls for the
   union of their items, send them one by one. A job is done when every call carrying its
   items was accepted (or rejected for good: dropped and counted); otherwise it is held for
   another attempt after ``backoff_seconds`` (or after the wait a 429 asked for, during
   which no call goes to that target at all).

Only the jobs' items and the vendor's status line and error text are logged, never a header.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from ...metrics import instruments
from .calls import Accepted, Call, Outcome, Rejected, Reply, Retry, judge
from .config import PurgeConfig, PurgeTargetConfig
from .jobs import Job, JobSource
from .transport import TRANSPORT_ERRORS
from .vendors import Vendor

__all__ = ["TargetWorker", "backoff_seconds"]

log = logging.getLogger("scalekit.cdn")

TAKE_COUNT = 100
MAX_BLOCK_SECONDS = 1.0
LOCAL_POLL_SECONDS = 0.1

Send = Callable[[Call, float], Reply]
T = TypeVar("T")


def backoff_seconds(attempts: int, *, minimum: float, maximum: float,
                    uniform: Callable[[float, float], float] = random.uniform) -> float:
    """The wait before attempt ``attempts + 1``: doubling from ``minimum``, capped at
    ``maximum``, with jitter (half to all of it) so consumers do not retry in step.

    >>> backoff_seconds(3, minimum=1.0, maximum=60.0, uniform=lambda low, high: high)
    4.0
    """
    ceiling = min(maximum, minimum * 2.0 ** max(0, attempts - 1))
    return uniform(ceiling / 2.0, ceiling)


class _Failed:
    """What :meth:`TargetWorker._guarded` returns when the queue failed or is left alone."""


FAILED = _Failed()


@dataclass(slots=True)
class _Held:
    job: Job
    source: JobSource
    next_try: float
    touched: float
    attempts: int = 0
    released: bool = False


@dataclass(slots=True)
class _Round:
    """What one round of calls came to."""

    failed: set[str]
    rejected: set[str]
    reason: str | None = None
    wait_seconds: float | None = None
    slow: bool = False


class TargetWorker:
    """Sends one target's queued purges from this process."""

    def __init__(self, name: str, target: PurgeTargetConfig, config: PurgeConfig, *,
                 vendor: Callable[[], Vendor], sources: Callable[[], list[JobSource]],
                 send: Send, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.target = target
        self.config = config
        self._vendor_factory = vendor
        self._sources_factory = sources
        self._send = send
        self.clock = clock
        self.monotonic = monotonic
        self.held: dict[tuple[str, str], _Held] = {}
        self.gate_until = 0.0  # no call before this wall time (a 429's wait)
        self._next_reclaim = 0.0
        self._down_until: dict[str, float] = {}  # a failing queue is left alone until then
        self._down_pause: dict[str, float] = {}
        self.idle = threading.Event()  # set while nothing is held (tests, shutdown)
        self._calls = {outcome: instruments.EDGE_PURGE_CALLS.labels(name, outcome)
                       for outcome in ("sent", "failed", "rate_limited", "rejected")}
        self._secrets = tuple(secret for secret in target.secrets() if secret)
        self._lag = instruments.EDGE_PURGE_LAG.labels(name)
        self._oldest = instruments.EDGE_PURGE_OLDEST.labels(name)

    # ----------------------------------------------------------------- the loop
    def run(self, stop: threading.Event) -> None:
        """Work until ``stop`` is set; any fault is logged and retried after a pause."""
        pause = 0.05
        while not stop.is_set():
            sources: list[JobSource] = []
            try:
                sources = self._sources_factory()
                vendor = self._vendor_factory()
                while not stop.is_set():
                    self.step(sources, vendor, stop)
                    pause = 0.05
            except Exception as error:  # noqa: BLE001 - the worker outlives any fault
                log.warning("edge purge worker for %r: %s: %s; retrying", self.name,
                            type(error).__name__, error)
                self.held.clear()  # their queue keeps them; taken again (or reclaimed) later
            finally:
                for source in sources:
                    source.close()
            stop.wait(pause)
            pause = min(pause * 2, 5.0)

    def step(self, sources: Sequence[JobSource], vendor: Vendor, stop: threading.Event) -> None:
        """One turn of the loop (see the module docstring)."""
        if self.monotonic() >= self._next_reclaim:
            for source in sources:
                self._hold(source, self._guarded(source, source.reclaim, count=TAKE_COUNT))
            self._next_reclaim = self.monotonic() + self.config.reclaim_after_seconds / 2
        self._take(sources, stop)
        self._touch(sources)
        now = self.clock()
        due = [held for held in self.held.values() if held.next_try <= now]
        if due:
            self._send_due(due, vendor, stop)
        self._report()

    def _guarded(self, source: JobSource, action: Callable[..., T], **arguments: Any) -> T | _Failed:
        """``action(**arguments)``, or :data:`FAILED` while ``source`` is failing (Redis down):
        one queue going away never stops the other's purges. Logged once per outage."""
        if self.monotonic() < self._down_until.get(source.name, 0.0):
            return FAILED
        try:
            result = action(**arguments)
        except Exception as error:  # noqa: BLE001 - Redis or SQLite faults: that queue only
            pause = min(max(0.1, 2 * self._down_pause.get(source.name, 0.0)), 5.0)
            if source.name not in self._down_pause:
                log.warning("edge purge target %r: the %s queue failed (%s: %s); retrying",
                            self.name, source.name, type(error).__name__, error)
            self._down_pause[source.name] = pause
            self._down_until[source.name] = self.monotonic() + pause
            return FAILED
        if self._down_pause.pop(source.name, None) is not None:
            log.warning("edge purge target %r: the %s queue answers again", self.name, source.name)
        return result

    def _take(self, sources: Sequence[JobSource], stop: threading.Event) -> None:
        wait = MAX_BLOCK_SECONDS
        if self.held:
            wait = max(0.0, min(min(held.next_try for held in self.held.values()) - self.clock(),
                                MAX_BLOCK_SECONDS))
        blocking = [source for source in sources if source.name == "redis"
                    and self.monotonic() >= self._down_until.get(source.name, 0.0)]
        polled = [source for source in sources if source not in blocking]
        if polled:
            wait = min(wait, LOCAL_POLL_SECONDS)
        for source in blocking:
            self._hold(source, self._guarded(source, source.take, block_seconds=wait,
                                             count=TAKE_COUNT))
            wait = 0.0
        if wait > 0:
            stop.wait(wait)
        for source in polled:
            self._hold(source, self._guarded(source, source.take, block_seconds=0.0,
                                             count=TAKE_COUNT))

    def _hold(self, source: JobSource, jobs: Sequence[Job] | _Failed) -> None:
        for job in () if isinstance(jobs, _Failed) else jobs:
            key = (source.name, job.id)
            if key not in self.held:
                self.held[key] = _Held(job=job, source=source, next_try=job.due_at,
                                       touched=self.monotonic())
        if self.held:
            self.idle.clear()
        else:
            self.idle.set()

    def _touch(self, sources: Sequence[JobSource]) -> None:
        limit = self.monotonic() - self.config.reclaim_after_seconds / 3
        for source in sources:
            stale = [held for held in self.held.values() if held.source is source and held.touched < limit]
            touched = self._guarded(source, source.touch, jobs=[held.job for held in stale]) if stale else FAILED
            if not isinstance(touched, _Failed):
                for held in stale:
                    held.touched = self.monotonic()

    # ----------------------------------------------------------------- sending
    def _send_due(self, due: list[_Held], vendor: Vendor, stop: threading.Event) -> None:
        now = self.clock()
        expired = [held for held in due if now - held.job.enqueued_at > self.config.give_up_after_seconds]
        if expired:
            log.error("edge purge target %r: dropping %d purge(s) unsent after %.0f s (items: %s)",
                      self.name, len(expired), self.config.give_up_after_seconds,
                      _shown_items(item for held in expired for item in held.job.items))
            instruments.EDGE_PURGE_DROPPED.labels(self.name, "expired").inc(len(expired))
            self._finish(expired)
            due = [held for held in due if held not in expired]
        if not due:
            return
        if now < self.gate_until:
            for held in due:
                held.next_try = self.gate_until
            return
        due = self._release(due)
        if due:
            outcome = self._send_round(due, vendor, stop)
            self._settle(due, outcome)

    def _release(self, due: list[_Held]) -> list[_Held]:
        """Release the waiting items of ``due`` before sending; those whose queue cannot be
        told now wait (a purge queued meanwhile could otherwise be merged into this send)."""
        by_source: dict[int, list[_Held]] = {}
        for held in due:
            if not held.released:
                by_source.setdefault(id(held.source), []).append(held)
        for group in by_source.values():
            source = group[0].source
            if isinstance(self._guarded(source, source.release, jobs=[held.job for held in group]), _Failed):
                for held in group:
                    held.next_try = self.clock() + self.config.retry_min_seconds
                continue
            for held in group:
                held.released = True
        return [held for held in due if held.released]

    def _send_round(self, due: list[_Held], vendor: Vendor, stop: threading.Event) -> _Round:
        tags = list(dict.fromkeys(tag for held in due for tag in held.job.tags))
        urls = list(dict.fromkeys(url for held in due for url in held.job.urls)) if self.target.url_purges else []
        every_item = {item for held in due for item in held.job.items}
        result = _Round(failed=set(), rejected=set())
        try:
            calls = (vendor.tag_calls(tags) if tags else []) + (vendor.url_calls(urls) if urls else [])
        except OSError as error:  # a Varnish name that resolves to nothing right now
            result.failed, result.reason = every_item, f"{type(error).__name__}: {error}"
            return result
        for index, call in enumerate(calls):
            if stop.is_set():
                result.failed.update(item for rest in calls[index:] for item in rest.items)
                break
            outcome = self._call(call)
            if isinstance(outcome, Accepted):
                self._calls["sent"].inc()
                continue
            if isinstance(outcome, Rejected):
                self._calls["rejected"].inc()
                result.rejected.update(call.items)
                result.reason = outcome.reason
                log.error("edge purge target %r rejected a purge of %s (%s); dropped", self.name,
                          _shown_items(call.items), outcome.reason)
                continue
            result.failed.update(call.items)
            result.reason, result.slow = outcome.reason, result.slow or outcome.slow
            if outcome.after_seconds is not None:
                # The edge asked for a pause: nothing more goes to it until then.
                self._calls["rate_limited"].inc()
                result.wait_seconds = outcome.after_seconds
                self.gate_until = self.clock() + outcome.after_seconds
                result.failed.update(item for rest in calls[index + 1:] for item in rest.items)
                break
            self._calls["failed"].inc()
        return result

    def _call(self, call: Call) -> Outcome:
        try:
            reply = self._send(call, self.target.timeout_seconds)
        except TRANSPORT_ERRORS as error:
            return Retry(self._scrubbed(f"{type(error).__name__}: {error}"))
        outcome = judge(reply, now=self.clock())
        if isinstance(outcome, Accepted):
            return outcome
        # A vendor may echo the request (its headers included) in an error: never shown as is.
        if isinstance(outcome, Rejected):
            return Rejected(self._scrubbed(outcome.reason))
        return Retry(self._scrubbed(outcome.reason), outcome.after_seconds, outcome.slow)

    def _scrubbed(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _settle(self, due: list[_Held], outcome: _Round) -> None:
        now = self.clock()
        finished: list[_Held] = []
        again: list[_Held] = []
        for held in due:
            (again if outcome.failed.intersection(held.job.items) else finished).append(held)
        dropped = [held for held in finished if outcome.rejected.intersection(held.job.items)]
        if dropped:
            instruments.EDGE_PURGE_DROPPED.labels(self.name, "rejected").inc(len(dropped))
        for held in finished:
            if held not in dropped:
                self._lag.observe(max(0.0, now - held.job.enqueued_at))
        # Said before the jobs are finished: finishing the last one makes the worker idle, and
        # whoever waited for that reads the status next.
        failure = outcome.reason if (again or dropped) else None
        for source in {id(held.source): held.source for held in due}.values():
            self._guarded(source, source.record_failure, reason=failure, now=now)
        self._finish(finished)
        for held in again:
            held.attempts += 1
            wait = backoff_seconds(held.attempts, minimum=self.config.retry_min_seconds,
                                   maximum=self.config.retry_max_seconds)
            if outcome.slow:
                wait = self.config.retry_max_seconds
            if outcome.wait_seconds is not None:
                wait = max(wait, outcome.wait_seconds)
            held.next_try = now + wait
        if again:
            log.warning("edge purge target %r failed (%s); %d purge(s) retried in %.1f s or more",
                        self.name, outcome.reason, len(again), min(held.next_try for held in again) - now)

    def _finish(self, finished: list[_Held]) -> None:
        by_source: dict[int, list[_Held]] = {}
        for held in finished:
            by_source.setdefault(id(held.source), []).append(held)
        for group in by_source.values():
            # If the queue cannot be told now, the job stays pending there and is sent again
            # once reclaimed: a purge twice, never none.
            source = group[0].source
            self._guarded(source, source.done, jobs=[held.job for held in group])
            for held in group:
                self.held.pop((held.source.name, held.job.id), None)
        if not self.held:
            self.idle.set()

    def _report(self) -> None:
        now = self.clock()
        oldest = min((held.job.enqueued_at for held in self.held.values()), default=now)
        self._oldest.set(max(0.0, now - oldest))


def _shown_items(shown: Iterable[str]) -> str:
    items = list(shown)
    text = ", ".join(items[:10])
    return text + (f" and {len(items) - 10} more" if len(items) > 10 else "")
