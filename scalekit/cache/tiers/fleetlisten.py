"""The listener thread of :class:`~.fleet.FleetGenerations`: follows the invalidation log.

It drives the instance's :class:`~.fleetlog.Follower` against Redis: join the state, replay
the queue, then poll the log (acknowledging what it applied, then reading the entries after its
position, blocking up to ``heartbeat_seconds``; renewing its lease about once per heartbeat).
Any fault drops the connection and retries with a backoff; the watchdog in
:mod:`.fleet` turns trust off when no poll has been answered for ``max_staleness_seconds``.
"""

from __future__ import annotations

import logging
import threading
import uuid
from typing import TYPE_CHECKING

from .fleetlog import LogEntry, Poll, Replay, Resync, Step
from .fleetredis import FleetScripts, log_client, run
from .redis import REDIS_ERRORS

if TYPE_CHECKING:
    from .fleet import FleetGenerations

__all__ = ["FleetListener"]

log = logging.getLogger("scalekit.cache")


class FleetListener:
    """One listener thread's loop for ``fleet`` (:meth:`run` is the thread's target)."""

    def __init__(self, fleet: FleetGenerations) -> None:
        self.fleet = fleet

    def run(self, stop: threading.Event) -> None:
        """Follow the log until ``stop`` is set, reconnecting with a backoff after any fault."""
        fleet = self.fleet
        backoff = 0.05
        while not stop.is_set():
            client = None
            try:
                # The read blocks up to a heartbeat: allow it that, plus a round trip or two.
                client = fleet.connections.new_sync_client(
                    socket_timeout_seconds=fleet.heartbeat_seconds + max(0.25, fleet.heartbeat_seconds))
                scripts = FleetScripts(log_client(client, fleet.keys), fleet.keys)
                while not stop.is_set():
                    self._step(scripts, fleet.follower.next_step(fleet.monotonic()))
                    backoff = 0.05
            except Exception as error:  # the listener must outlive any fault, ours included
                if not isinstance(error, REDIS_ERRORS):
                    log.exception("invalidation listener failed; reconnecting")
                if fleet.connected.is_set():
                    log.warning("invalidation log lost (%s: %s); local entries are trusted for "
                                "%.1f s more", type(error).__name__, error,
                                max(0.0, fleet.follower.trusted_until - fleet.monotonic()))
                fleet.connected.clear()
            finally:
                if client is not None:
                    try:
                        client.close()
                    except REDIS_ERRORS:
                        pass
            stop.wait(backoff)
            backoff = min(backoff * 2, 1.0)

    def _step(self, scripts: FleetScripts, step: Step) -> None:
        fleet = self.fleet
        match step:
            case Resync():
                sent = fleet.monotonic()
                epoch, sequence, remote = run(scripts.resync(
                    floor=step.floor, epoch_candidate=step.epoch_candidate,
                    recovering=step.recovering, instance=fleet.name,
                    lease_seconds=fleet.max_staleness_seconds))
                fleet.follower.resynced(sent_at=sent, epoch=epoch, sequence=sequence, remote=remote)
                fleet.trust_if_followed()
            case Replay():
                counts = fleet.follower.outbox_counts(step.tags)
                recorded = run(scripts.invalidate(
                    list(step.tags), origin=fleet.name, sent_at=fleet.wall_clock(),
                    floor=step.floor, epoch_candidate=uuid.uuid4().hex))
                fleet.follower.published(step.tags, recorded.sequence, counts=counts)
                fleet.report_pending()
            case Poll():
                sent = fleet.monotonic()
                polled = run(scripts.poll(epoch=step.epoch, instance=fleet.name, after=step.after,
                                          lease_seconds=fleet.max_staleness_seconds,
                                          block_seconds=fleet.heartbeat_seconds, renew=step.renew))
                if polled.entries:  # answered at once: the round trip was Redis's alone
                    self._probe_answered(fleet.monotonic() - sent)
                if polled.head is None:
                    fleet.follower.epoch_changed()
                    return
                if polled.malformed:
                    log.warning("ignored a malformed entry in the invalidation log; resyncing")
                    fleet.follower.epoch_changed()
                self._observe(fleet.follower.polled(
                    sent_at=sent, entries=polled.entries, head=polled.head, renewed=step.renew,
                    complete=polled.complete and not polled.malformed))
                fleet.trust_if_followed()
                fleet.connected.set()

    def _probe_answered(self, seconds: float) -> None:
        """Redis answered the lease renewal within a request's socket timeout: it is usable, so
        the request path's breaker closes now instead of after its cool-down (a 0.3 s stall
        would otherwise queue every invalidation for the whole cool-down)."""
        fleet = self.fleet
        breaker = fleet.connections.breaker
        if breaker.is_open and seconds <= fleet.connections.config.socket_timeout_seconds:
            breaker.success()

    def _observe(self, entries: list[LogEntry]) -> None:
        fleet = self.fleet
        now = fleet.wall_clock()
        for entry in entries:
            if entry.origin != fleet.name and entry.tags:
                fleet.remote.inc()
                if entry.sent_at is not None:
                    fleet.delay.observe(max(0.0, now - entry.sent_at))
