"""Tag generations in one process: invalidation is O(number of tags), never O(entries).

Every invalidation advances a sequence number and sets each of its tags' generation to it. An
entry records ``(tag, generation)`` pairs when its origin call started; it is current while each
of its tags still has that generation. The fleet-wide version (Redis) is
:class:`scalekit.cache.tiers.fleet.FleetGenerations`; all satisfy ``store.Generations``.
:class:`~.hostgenerations.HostGenerations` persists them in a file shared by the
processes of one host.

Numbering: the fleet's sequence number ``n`` is generation ``n << FLEET_SHIFT``
(:func:`fleet_generation`); an invalidation applied here only (no Redis, or Redis unreachable)
takes the next number above everything known here, which stays below the fleet's next one. So a
local invalidation never takes a number the fleet will later give another invalidation: one
applied later is never mistaken for one already applied.

>>> generations = LocalGenerations()
>>> since = generations.sequence()
>>> stamp = generations.stamp(["product:42"], since)
>>> generations.is_current(stamp)
True
>>> generations.invalidate(["product:42"]).reach
'process'
>>> generations.is_current(stamp), generations.stamp(["product:42"], since)
(False, None)
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Iterable

from .invalidation import InvalidationResult
from .store import TagStamp

__all__ = ["FLEET_SHIFT", "LocalGenerations", "fleet_generation", "fleet_sequence"]

# Generation = fleet sequence << FLEET_SHIFT; the low bits number local-only invalidations made
# between two fleet ones (2**32 of them before they would reach the next fleet number).
FLEET_SHIFT = 32


def fleet_generation(sequence: int) -> int:
    """The generation of the fleet's invalidation number ``sequence``.

    >>> fleet_generation(3) > fleet_generation(2) + 1_000_000
    True
    """
    return sequence << FLEET_SHIFT


def fleet_sequence(generation: int) -> int:
    """The fleet sequence number a generation is at or above."""
    return generation >> FLEET_SHIFT


def restart_in_forked_children(owner: object, method: str) -> None:
    """Call ``owner.<method>()`` in every process forked from this one while ``owner`` lives.

    Why: a worker forked after its parent started the threads that keep generations current
    (a watcher, a listener) has none of them, and may serve only hits for a long time (its
    start-up already ran in the parent) without ever asking for them. Only a weak reference is
    kept, so the owner can be collected.
    """
    reference = weakref.ref(owner)

    def after_in_child() -> None:
        alive = reference()
        if alive is not None:
            getattr(alive, method)()

    os.register_at_fork(after_in_child=after_in_child)


class LocalGenerations:
    """In-process generations: a dict of tag -> generation and a sequence counter.

    Reads (``is_current``, ``stamp``) take no lock: each reads a dict that is only ever mutated
    by single assignments, which are atomic under the GIL, and a generation only moves forward,
    so a reader sees either the old or the new value. Writers serialise on a lock.
    """

    # Whether other processes follow these generations (entries then carry their URI's tag).
    spans_processes = False

    def __init__(self) -> None:
        self._sequence = 0
        self._generations: dict[str, int] = {}
        self._lock = threading.Lock()
        self._fleet_epoch: str | None = None

    def renew_locks_after_fork(self) -> None:
        """In a forked child: a lock another thread of the parent held at the fork would stay
        held here, where that thread does not exist."""
        self._lock = threading.Lock()

    # ----------------------------------------------------------------- reads (hit path)
    def sequence(self) -> int:
        """The sequence number of the latest invalidation this instance knows of."""
        return self._sequence

    def stamp(self, tags: Iterable[str], since: int) -> TagStamp | None:
        """Current generations of ``tags``, or None if any moved after ``since``."""
        generations = self._generations
        out = []
        for tag in tags:
            generation = generations.get(tag, 0)
            if generation > since:
                return None
            out.append((tag, generation))
        return tuple(out)

    def is_current(self, stamp: TagStamp) -> bool:
        """Whether no tag of ``stamp`` was invalidated since it was taken (dict lookups only)."""
        generations = self._generations
        for tag, generation in stamp:
            if generations.get(tag, 0) != generation:
                return False
        return True

    def generation(self, tag: str) -> int:
        return self._generations.get(tag, 0)

    # ----------------------------------------------------------------- writes
    def invalidate(self, tags: Iterable[str]) -> InvalidationResult:
        """Make every entry stamped with any of ``tags`` not current, in O(len(tags)).

        Only this process knows: other processes keep their own generations."""
        tag_list = self.apply_here(tags)
        return InvalidationResult(tags=tuple(tag_list), reach="process",
                                  detail="generations live in this process only")

    def apply_here(self, tags: Iterable[str]) -> list[str]:
        """Invalidate ``tags`` in this process under the next local number; the tags."""
        tag_list = [tag for tag in tags if tag]
        if tag_list:
            with self._lock:
                self._sequence += 1
                for tag in tag_list:
                    self._generations[tag] = self._sequence
        return tag_list

    def apply(self, sequence: int, tags: Iterable[str]) -> bool:
        """Adopt generation ``sequence`` for ``tags`` (from another process); generations only
        move forward. Returns True if anything changed."""
        changed = False
        with self._lock:
            for tag in tags:
                if self._generations.get(tag, 0) < sequence:
                    self._generations[tag] = sequence
                    changed = True
            self._sequence = max(self._sequence, sequence)
        return changed

    def advance_to(self, sequence: int) -> None:
        """Raise the sequence number to at least ``sequence`` (after a resync)."""
        with self._lock:
            self._sequence = max(self._sequence, sequence)

    def snapshot(self) -> dict[str, int]:
        """A copy of every tag's generation (for persistence and resync)."""
        with self._lock:
            return dict(self._generations)

    # ----------------------------------------------------------------- fleet bookkeeping
    def fleet_epoch(self) -> str | None:
        """The identity of the Redis state these generations last followed (None: never)."""
        return self._fleet_epoch

    def record_fleet_epoch(self, epoch: str) -> None:
        self._fleet_epoch = epoch

    def remember_unpublished(self, tags: Iterable[str]) -> None:
        """Tags invalidated while the fleet could not be told (kept only in memory here)."""

    def forget_unpublished(self, tags: Iterable[str]) -> None:
        """The fleet has been told of ``tags``."""

    def unpublished(self) -> set[str]:
        """Tags invalidated while the fleet could not be told, that outlived a restart."""
        return set()

    # ----------------------------------------------------------------- async twins
    async def ainvalidate(self, tags: Iterable[str]) -> InvalidationResult:
        return self.invalidate(tags)

    def close(self) -> None:
        """Nothing to release; present so every Generations can be closed alike."""
