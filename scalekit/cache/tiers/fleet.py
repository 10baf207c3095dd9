"""Fleet-wide tag generations: Redis keeps the invalidation log, each instance follows it.

``invalidate(tags)`` runs one script on Redis (next sequence number, every tag set to it, one
log entry), applies it here, then waits up to ``ack_timeout_seconds`` until every other live
instance has acknowledged applying it, and says so in its
:class:`~scalekit.cache.invalidation.InvalidationResult`. When Redis cannot be reached it is
applied here (and on this host) under a local number, queued, and replayed by the listener as
soon as Redis answers; the result says ``reach="process"``, ``queued=True``.

Every instance runs one listener thread (:mod:`.fleetlisten`; serving WSGI and ASGI alike: it only
updates a dict) that drives a :class:`~.fleetlog.Follower`: join the state, replay the queue, then poll the log
(acknowledging what it applied, then reading the entries after its position, blocking up to
``heartbeat_seconds``; renewing its lease about once per heartbeat). A second small thread turns ``trusted`` off
when the last answered poll is older than ``max_staleness_seconds``: from then on
``is_current`` is False for every entry, until the listener has caught up — whether Redis is
down, stopped (SIGSTOP) or silently unreachable.

The protocol is written down in docs/design/invalidation.md.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from ...forks import pid
from ...metrics import instruments
from ..generations import (
    LocalGenerations,
    fleet_generation,
    fleet_sequence,
    restart_in_forked_children,
)
from ..invalidation import InvalidationResult
from ..store import TagStamp
from .fleetbatch import LoopBatches, ThreadBatches
from .fleetlisten import FleetListener
from .fleetlog import Follower
from .fleetredis import AckReport, FleetKeys, FleetScripts, InThread, Plan, Recorded, arun, run
from .redis import REDIS_ERRORS, RedisConnections, was_loop_late

__all__ = ["FleetGenerations"]

log = logging.getLogger("scalekit.cache")



def instance_name() -> str:
    """How this process appears in acknowledgements: host, pid and a random suffix."""
    return f"{socket.gethostname()}:{pid()}:{uuid.uuid4().hex[:6]}"


class FleetGenerations:
    """Generations shared by the fleet through Redis; reads are local dict lookups."""

    spans_processes = True

    def __init__(
        self,
        local: LocalGenerations,
        connections: RedisConnections,
        *,
        channel: str = "invalidations",
        max_staleness_seconds: float = 3.0,
        heartbeat_seconds: float = 0.5,
        ack_timeout_seconds: float = 0.05,
        monotonic: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.local = local
        self.connections = connections
        self.keys = FleetKeys.of(connections.prefix, channel)
        self.max_staleness_seconds = max_staleness_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self.ack_timeout_seconds = ack_timeout_seconds
        self.monotonic = monotonic
        self.wall_clock = wall_clock
        self.name = instance_name()
        self._lost_track_hooks: list[Callable[[], None]] = []
        # The lease lasts max_staleness_seconds; renewed at least four times within it.
        self.follower = Follower(local, max_staleness_seconds=max_staleness_seconds,
                                 renew_seconds=min(heartbeat_seconds, max_staleness_seconds / 4),
                                 on_lost_track=self._lost_track)
        # Read on every hit; turned on by the listener, off by the watchdog (see the module).
        self.trusted = False
        self._is_current_here = local.is_current
        self._listener: threading.Thread | None = None
        self._listener_pid = 0
        self._stop = threading.Event()
        self._scripts: dict[int, Any] = {}
        self._thread_batches = ThreadBatches()
        self._loop_batches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopBatches] = (
            weakref.WeakKeyDictionary())
        self.connected = threading.Event()
        self.remote = instruments.CACHE_INVALIDATIONS.labels("remote")
        self.delay = instruments.CACHE_INVALIDATION_PROPAGATION
        self._pending_gauge = instruments.CACHE_INVALIDATIONS_PENDING
        self._warned_pending = False
        self._reported_pending = 0
        self._pending_lock = threading.Lock()
        self.report_pending()
        restart_in_forked_children(self, "_forked")

    # ----------------------------------------------------------------- reads (hit path)
    def sequence(self) -> int:
        if self._listener_pid != pid():
            self.start()
        return self.local.sequence()

    def stamp(self, tags: Iterable[str], since: int) -> TagStamp | None:
        return self.local.stamp(tags, since)

    def is_current(self, stamp: TagStamp) -> bool:
        """Local comparisons; False for every entry while the log has not been heard recently."""
        return self.trusted and self._is_current_here(stamp)

    @property
    def is_trusted(self) -> bool:
        """Whether the log has been heard within ``max_staleness_seconds``."""
        return self.follower.is_trusted(self.monotonic())

    def review_trust(self) -> bool:
        """Recompute ``trusted`` from the clock now (the watchdog does this on its own)."""
        self.trusted = self.is_trusted
        return self.trusted

    # ----------------------------------------------------------------- writes
    def invalidate(self, tags: Iterable[str]) -> InvalidationResult:
        """Invalidate ``tags`` here at once and, through Redis, in the whole fleet."""
        return run(self._invalidation(tags, on_loop=False))

    async def ainvalidate(self, tags: Iterable[str]) -> InvalidationResult:
        """:meth:`invalidate` from an event loop: Redis through the asyncio client, the
        fallback's file writes in a thread."""
        return await arun(self._invalidation(tags, on_loop=True))

    def _invalidation(self, tags: Iterable[str], *, on_loop: bool) -> Plan[InvalidationResult]:
        tag_list = sorted({tag for tag in tags if tag})
        if not tag_list:
            return InvalidationResult(tags=(), reach="fleet", acknowledged=True)
        self._take_part()
        recorded = yield from self._recorded(tag_list, on_loop=on_loop)
        if recorded is not None:
            self.local.apply(fleet_generation(recorded.sequence), tag_list)
            scripts = self._scripts_for(self.connections.async_client() if on_loop
                                        else self.connections.sync())
            report = yield from self._acknowledgements(scripts, recorded)
            return self._fleet_result(tag_list, recorded.sequence, report)
        offline: InvalidationResult = yield InThread(self._invalidate_offline, tag_list)
        return offline

    def _recorded(self, tags: list[str], *, on_loop: bool) -> Plan[Recorded | None]:
        """What Redis recorded for ``tags``, or None if it was not asked (see
        :meth:`_may_call_redis`) or could not record them (the breaker heard why from the call
        that failed: :meth:`_send`)."""
        if not self._may_call_redis():
            return None
        try:
            recorded: Recorded = yield self._batched(tags, on_loop=on_loop)
        except Exception:  # noqa: BLE001 - see REDIS_ERRORS; _send logs the unexpected ones
            return None
        return recorded

    def _batched(self, tags: list[str], *, on_loop: bool) -> Callable[[], Any]:
        """The call recording ``tags`` in Redis, merged with the invalidations of this process
        that would otherwise wait behind the one in flight (``fleetbatch``): every instance
        pays for each log entry, so under load a writer appends fewer, larger ones."""
        if not on_loop:
            return functools.partial(self._thread_batches.submit, tags,
                                     lambda batch: run(self._send(batch, on_loop=False)))
        loop = asyncio.get_running_loop()
        batches = self._loop_batches.get(loop)
        if batches is None:
            batches = self._loop_batches[loop] = LoopBatches()
        return functools.partial(batches.submit, tags,
                                 lambda batch: arun(self._send(batch, on_loop=True)))

    def _send(self, tags: list[str], *, on_loop: bool) -> Plan[Recorded]:
        """One INVALIDATE of ``tags`` (a batch); a failure is told to the breaker here, once per
        call, however many callers the batch carried."""
        started = time.monotonic()
        try:
            scripts = self._scripts_for(self.connections.async_client() if on_loop
                                        else self.connections.sync())
            recorded = yield from scripts.invalidate(
                tags, origin=self.name, sent_at=self.wall_clock(),
                floor=fleet_sequence(self.local.sequence()), epoch_candidate=uuid.uuid4().hex)
        except Exception as error:
            # Only an asyncio call's time can include the event loop's own delay.
            self._failed(error, time.monotonic() - started if on_loop else None)
            raise
        self.connections.breaker.success()
        return recorded

    def _take_part(self) -> None:
        """A runtime that invalidates follows the log from then on, even one that has not
        served yet: otherwise what it queues while Redis is away would never be replayed."""
        if self._listener_pid == 0:
            self.start()

    def _may_call_redis(self) -> bool:
        """Whether an invalidation should try Redis: the breaker allows it, or the listener has
        just heard Redis (a breaker opened by slow GETs must not queue the writes for a whole
        cool-down when Redis answers; invalidations are few, and worth a timeout)."""
        return self.connections.breaker.allow() or (self.connected.is_set() and self.trusted)

    def _failed(self, error: BaseException, elapsed_seconds: float | None = None) -> None:
        if not isinstance(error, REDIS_ERRORS):
            log.error("unexpected error invalidating through Redis", exc_info=error)
        if elapsed_seconds is not None and was_loop_late(error, elapsed_seconds,
                                                         self.connections.config):
            return  # the event loop was busy; Redis may be fine
        self.connections.breaker.failure(error)

    def _acknowledgements(self, scripts: FleetScripts, recorded: Recorded) -> Plan[AckReport]:
        try:
            return (yield from scripts.wait_acked(recorded.sequence, instance=self.name, epoch=recorded.epoch,
                                                  timeout_seconds=self.ack_timeout_seconds,
                                                  counted=recorded.unacked))
        except Exception as error:  # noqa: BLE001 - see REDIS_ERRORS
            self._failed(error)
            return AckReport(missing=("(Redis did not answer)",))

    def _fleet_result(self, tags: list[str], sequence: int, report: AckReport) -> InvalidationResult:
        if report.lost:
            # Redis lost its state between the write and the check: the fleet may never hear
            # it from there. Replay it like an invalidation Redis never had.
            self.follower.queue(tags)
            self.report_pending()
            return InvalidationResult(tags=tuple(tags), reach="process", queued=True,
                                      detail="Redis lost its invalidation state meanwhile")
        detail = ""
        complete = not report.missing
        age = report.recovered_age_seconds
        if age is not None and age < self.max_staleness_seconds:
            complete = False
            detail = (f"Redis's invalidation state was recreated {age:.1f} s ago; instances that "
                      "followed the lost one may not have rejoined yet")
        return InvalidationResult(tags=tuple(tags), reach="fleet", acknowledged=complete,
                                  unacknowledged=report.missing, detail=detail, sequence=sequence)

    def _invalidate_offline(self, tag_list: list[str]) -> InvalidationResult:
        # Redis unreachable: effective here (and on this host) now, replayed to the fleet by
        # the listener as soon as Redis answers (also after a restart: the host file keeps it).
        here = self.local.invalidate(tag_list)
        self.follower.queue(tag_list)
        self.report_pending()
        return InvalidationResult(
            tags=tuple(tag_list), reach="host" if here.reach == "host" else "process",
            queued=True, acknowledged=False, unacknowledged=here.unacknowledged,
            detail="Redis unreachable: queued for the fleet")

    def report_pending(self) -> None:
        with self._pending_lock:  # request threads and the listener both report
            pending = self.follower.pending
            # By difference: each runtime of the process adds its own share to the one gauge.
            self._pending_gauge.inc(pending - self._reported_pending)
            self._reported_pending = pending
            warn = bool(pending) != self._warned_pending
            self._warned_pending = bool(pending)
        if warn and pending:
            log.warning("invalidations of %d tag(s) could not reach Redis; applied on this host "
                        "and queued for the fleet until Redis answers", pending)
        elif warn:
            log.warning("queued invalidations reached the fleet")

    # ----------------------------------------------------------------- clients and scripts
    def _scripts_for(self, client: Any) -> FleetScripts:
        """The scripts registered on ``client`` (the connections' sync or asyncio client; a new
        one after a fork or a reconnect)."""
        scripts = self._scripts.get(id(client))
        if scripts is None or scripts.client is not client:
            scripts = FleetScripts(client, self.keys)
            self._scripts = {**self._scripts, id(client): scripts}
        return scripts

    # ----------------------------------------------------------------- lost track
    def add_lost_track_hook(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` (drop what the local tiers hold) when Redis lost the state this
        instance followed: invalidations it had not applied yet are gone with it."""
        self._lost_track_hooks.append(hook)

    def _lost_track(self) -> None:
        log.warning("Redis lost the invalidation state this instance followed; dropping the "
                    "entries held locally")
        for hook in self._lost_track_hooks:
            try:
                hook()
            except Exception:  # one failing tier must not keep the others
                log.exception("dropping local entries after Redis lost its state failed")

    # ----------------------------------------------------------------- listener
    def trust_if_followed(self) -> None:
        """Trust local entries again once the follower has caught up with the log."""
        if self.follower.is_trusted(self.monotonic()):
            self.trusted = True

    def start(self) -> None:
        """Start (or restart after a fork) the listener and the watchdog; returns at once."""
        if self._listener_pid == pid():
            return
        self._listener_pid = pid()
        self.name = instance_name()
        self.trusted = False
        self.follower.trusted_until = float("-inf")
        self._stop = threading.Event()
        self._listener = threading.Thread(target=FleetListener(self).run, args=(self._stop,),
                                          name="scalekit-invalidations", daemon=True)
        self._listener.start()
        threading.Thread(target=self._watch_trust, args=(self._stop,),
                         name="scalekit-invalidations-trust", daemon=True).start()

    def _forked(self) -> None:
        """In a forked child: the parent's trust and threads are not this process's. Trust
        nothing until this process's own listener has joined."""
        # A call the parent had in flight never returns here: its batch would wait forever. Nor
        # is a lock another thread held at the fork ever released here.
        self.local.renew_locks_after_fork()
        self._pending_lock = threading.Lock()
        self._thread_batches = ThreadBatches()
        self._loop_batches = weakref.WeakKeyDictionary()
        if self._listener_pid not in (0, pid()):
            self.connected.clear()
            self.start()

    def wait_connected(self, timeout_seconds: float) -> bool:
        """Block until the listener has joined and heard the log once (tests, start-up)."""
        self.start()
        return self.connected.wait(timeout_seconds)

    def _watch_trust(self, stop: threading.Event) -> None:
        while not stop.is_set():
            remaining = self.follower.trusted_until - self.monotonic()
            if remaining <= 0:
                self.trusted = False
            stop.wait(min(max(remaining, 0.001), self.heartbeat_seconds))

    def close(self) -> None:
        """Stop the listener and leave the members (the connections' owner closes clients)."""
        self._stop.set()
        listener = self._listener
        if listener is not None and listener is not threading.current_thread():
            listener.join(timeout=2.0)
        epoch = self.follower.epoch
        if self._listener_pid == pid() and self.connected.is_set() and epoch is not None:
            try:
                run(FleetScripts(self.connections.sync(), self.keys).leave(self.name, epoch=epoch))
            except Exception as error:  # noqa: BLE001 - best effort: the lease expires anyway
                log.debug("could not leave the fleet's members (%s); the lease expires", error)
        self._listener_pid = 0
        self.trusted = False
        self.connected.clear()
        with self._pending_lock:
            self._pending_gauge.dec(self._reported_pending)  # a closed runtime replays nothing
            self._reported_pending = 0
        self.local.close()
