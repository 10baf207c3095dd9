"""How an instance follows the fleet's invalidation log, without I/O (see docs/design/invalidation.md).

Redis holds, under one hash tag: the *state* (the fleet's sequence number, every tag's latest
sequence, and an *epoch*: a random name given when the state was created, so its loss is
noticed), the *log* (a stream: one entry per invalidation, id = its sequence number, with the
sequence before it) and the *members* (live instances, each with a lease and the last
sequence it has applied: the acknowledgements).

A :class:`Follower` is one instance's side of that protocol. Its driver (a thread in the app,
asyncio tasks in the bench, the test itself in the property test) asks it for the next step,
performs it against Redis and reports the answer:

- :class:`Resync`: join the state (create it if lost, raise its sequence to at least ours so
  numbers never repeat), register with nothing acknowledged, then read every tag's sequence.
  Needed at start, when the epoch changed, and when the log shows a gap (entries trimmed away).
- :class:`Replay`: publish invalidations made here while Redis could not be told.
- :class:`Poll`: acknowledge what was applied, then read the log after the last entry applied
  (blocking up to the heartbeat); renew the lease too when ``renew_seconds`` passed since the
  last renewal (a poll that renews costs Redis a script; the others three plain commands).

Trust: when a poll or resync sent at monotonic time ``t`` has been answered and applied, every
invalidation Redis had accepted before ``t`` has been applied here, so local entries may be
served until ``t + max_staleness_seconds`` — but never past the lease's own end (the last
renewal sent + ``max_staleness_seconds``): once Redis lets the lease lapse, writers stop
waiting for this instance, so it must have stopped trusting itself by then. Redis dates a lease
in whole milliseconds of its own clock, rounded down, so trust ends
:data:`LEASE_CLOCK_MARGIN_SECONDS` sooner still (:attr:`Follower.trust_seconds`). Past that the
instance serves nothing it holds.

>>> from scalekit.cache.generations import LocalGenerations
>>> follower = Follower(LocalGenerations(), max_staleness_seconds=3.0)
>>> type(follower.next_step()).__name__
'Resync'
>>> follower.resynced(sent_at=10.0, epoch="e1", sequence=4, remote={"a": 2})
>>> follower.next_step()
Poll(epoch='e1', after=4, renew=True)
>>> follower.polled(sent_at=11.0, entries=[LogEntry(5, 4, ("a",))], complete=True)
[LogEntry(sequence=5, previous=4, tags=('a',), sent_at=None, origin='')]
>>> follower.position, follower.trusted_until == 11.0 + follower.trust_seconds
(5, True)
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..generations import LocalGenerations, fleet_generation, fleet_sequence

__all__ = ["LEASE_CLOCK_MARGIN_SECONDS", "Follower", "LogEntry", "Poll", "Replay", "Resync", "Step", "parse_entry"]

REPLAY_BATCH = 1000
# A renewal sent at t makes Redis date the lease's end from its clock's millisecond, rounded
# down (up to 1 ms before t + the lease once a loopback round trip is under 1 ms), and a clock
# may run a little fast or slow against another's: trust ends this much before the lease can.
LEASE_CLOCK_MARGIN_SECONDS = 0.002


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One invalidation in the log: its sequence number, the one before it, its tags."""

    sequence: int
    previous: int
    tags: tuple[str, ...]
    sent_at: float | None = None  # the writer's wall clock (for the propagation histogram)
    origin: str = ""


@dataclass(frozen=True, slots=True)
class Resync:
    """Join the state: raise its sequence to ``floor``, register, then read every tag."""

    floor: int
    epoch_candidate: str
    recovering: bool  # this instance followed an earlier state (acks may be incomplete a while)


@dataclass(frozen=True, slots=True)
class Replay:
    """Publish ``tags`` (invalidated here while Redis could not be told) as a new entry."""

    tags: tuple[str, ...]
    floor: int


@dataclass(frozen=True, slots=True)
class Poll:
    """Acknowledge ``after``, read the log entries after ``after``; ``renew`` the lease too."""

    epoch: str
    after: int
    renew: bool = True


Step = Resync | Replay | Poll


def parse_entry(entry_id: bytes | str, fields: Mapping[Any, Any]) -> LogEntry | None:
    """A log entry from a stream reply, or None if it is malformed (then a resync follows)."""
    try:
        text_id = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
        values = {(k.decode() if isinstance(k, bytes) else k): v for k, v in fields.items()}
        tags = json.loads(values["g"])
        if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
            return None
        sent = values.get("t") or b""
        origin = values.get("o") or b""
        return LogEntry(sequence=int(text_id.split("-", 1)[0]), previous=int(values["p"]),
                        tags=tuple(tags), sent_at=float(sent) if sent else None,
                        origin=origin.decode() if isinstance(origin, bytes) else str(origin))
    except (KeyError, ValueError, TypeError, UnicodeDecodeError):
        return None


class Follower:
    """One instance's state in the protocol: epoch, position in the log, outbox, trust."""

    def __init__(self, local: LocalGenerations, *, max_staleness_seconds: float,
                 renew_seconds: float = 0.0,
                 on_lost_track: Callable[[], None] | None = None) -> None:
        self.local = local
        self.max_staleness_seconds = max_staleness_seconds
        # How often a poll renews the lease (0: every poll). Well below the lease's length
        # (max_staleness_seconds): trust stops at the lease's end (see the module).
        self.renew_seconds = renew_seconds
        self.renewed_at = float("-inf")  # when the last renewal that was answered was sent
        # How long after a renewal (and a catch-up) this instance may trust what it holds.
        self.trust_seconds = max_staleness_seconds - min(LEASE_CLOCK_MARGIN_SECONDS, max_staleness_seconds / 10)
        self.on_lost_track = on_lost_track
        self.epoch: str | None = None
        self.position = 0  # the last log sequence applied here, in order (what we acknowledge)
        self.trusted_until = float("-inf")
        self._must_resync = True
        # Tags invalidated here that Redis has not recorded; the count tells a re-invalidation
        # during a replay from the tag the replay carried.
        self._outbox: dict[str, int] = {tag: 1 for tag in local.unpublished()}
        self._outbox_lock = threading.Lock()

    # ----------------------------------------------------------------- steps
    def next_step(self, now: float | None = None) -> Step:
        """What to do next; ``now`` (monotonic) decides whether a poll renews the lease (None:
        it does)."""
        floor = fleet_sequence(self.local.sequence())
        if self._must_resync or self.epoch is None:
            known = self.epoch or self.local.fleet_epoch()
            return Resync(floor=floor, epoch_candidate=uuid.uuid4().hex,
                          recovering=known is not None or self.local.sequence() > 0)
        with self._outbox_lock:
            if self._outbox:
                return Replay(tags=tuple(sorted(self._outbox)[:REPLAY_BATCH]), floor=floor)
        renew = now is None or now >= self.renewed_at + self.renew_seconds
        return Poll(epoch=self.epoch, after=self.position, renew=renew)

    def resynced(self, *, sent_at: float, epoch: str, sequence: int,
                 remote: Mapping[str, int]) -> None:
        """Redis answered a :class:`Resync`: ``sequence`` after the raise, ``remote`` every
        tag's sequence (read after registering, so nothing accepted since is missed: it is in
        the log after ``sequence``)."""
        known = self.epoch or self.local.fleet_epoch()
        lost_track = known is not None and known != epoch
        if lost_track:
            # Redis lost the state we followed: what it held but we had not applied is gone.
            # Drop what we hold, and replay every tag we know that the new state numbers at or
            # below us: lost with the old state (an L2 entry that outlived it must still be
            # seen as invalidated), or invalidated after the loss under a number we used.
            if self.on_lost_track is not None:
                self.on_lost_track()
            self.queue(tag for tag, generation in self.local.snapshot().items()
                       if fleet_generation(remote.get(tag, 0)) <= generation)
        by_number: dict[int, list[str]] = {}
        for tag, number in remote.items():
            by_number.setdefault(number, []).append(tag)
        for number, tags in sorted(by_number.items()):
            self.local.apply(fleet_generation(number), tags)
        self.local.apply(fleet_generation(sequence), ())
        if known != epoch:
            self.local.record_fleet_epoch(epoch)
        self.epoch = epoch
        self.position = sequence
        self._must_resync = False
        self.renewed_at = max(self.renewed_at, sent_at)
        self.trusted_until = max(self.trusted_until, sent_at + self.trust_seconds)

    def polled(self, *, sent_at: float, entries: Sequence[LogEntry], complete: bool,
               head: int | None = None, renewed: bool = True) -> list[LogEntry]:
        """Redis answered a :class:`Poll` sent at ``sent_at``: apply ``entries`` in order; the
        ones applied. ``complete``: the reply held every entry after our position; ``head``:
        the state's sequence read just before the log (the entries must reach it: if they
        stop short, some were lost, e.g. the log was trimmed or evicted while we were behind);
        ``renewed``: the poll renewed the lease."""
        if renewed:
            self.renewed_at = max(self.renewed_at, sent_at)
        applied: list[LogEntry] = []
        for entry in entries:
            if entry.sequence <= self.position:
                continue  # a duplicate delivery
            if entry.previous != self.position:
                self._must_resync = True  # entries between were trimmed or lost
                return applied
            self.local.apply(fleet_generation(entry.sequence), entry.tags)
            self.position = entry.sequence
            applied.append(entry)
        if complete and head is not None and self.position < head:
            self._must_resync = True  # the log lost the entries up to the head
            return applied
        if complete:
            caught_up_at = min(sent_at, self.renewed_at)  # never past the lease's end
            self.trusted_until = max(self.trusted_until, caught_up_at + self.trust_seconds)
        return applied

    def epoch_changed(self) -> None:
        """The lease renewal found another epoch (Redis lost or replaced its state)."""
        self._must_resync = True

    # ----------------------------------------------------------------- outbox
    def queue(self, tags: Iterable[str]) -> None:
        """Hold ``tags`` for replay (they are applied here already)."""
        tag_list = list(tags)
        if not tag_list:
            return
        self.local.remember_unpublished(tag_list)
        with self._outbox_lock:
            for tag in tag_list:
                self._outbox[tag] = self._outbox.get(tag, 0) + 1

    def published(self, tags: Sequence[str], sequence: int, *, counts: Mapping[str, int]) -> None:
        """A :class:`Replay` of ``tags`` was recorded by Redis as ``sequence``; ``counts`` is
        :meth:`outbox_counts` taken when the replay was sent."""
        self.local.apply(fleet_generation(sequence), tags)
        done = []
        with self._outbox_lock:
            for tag in tags:
                if self._outbox.get(tag) == counts.get(tag):
                    del self._outbox[tag]
                    done.append(tag)
        self.local.forget_unpublished(done)

    def outbox_counts(self, tags: Iterable[str]) -> dict[str, int]:
        with self._outbox_lock:
            return {tag: self._outbox.get(tag, 0) for tag in tags}

    @property
    def pending(self) -> int:
        """How many tags wait to be told to the fleet."""
        return len(self._outbox)

    def is_trusted(self, now: float) -> bool:
        return now < self.trusted_until
