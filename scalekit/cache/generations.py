"""Tag generations in one process: invalidation is O(number of tags), never O(entries).

Every invalidation advances a sequence number and sets each of its tags' generation to it. An
entry records ``(tag, generation)`` pairs when its origin call started; it is current while each
of its tags still has that generation. The fleet-wide version (Redis + pub/sub) is
:class:`scalekit.cache.fleet.FleetGenerations`; both satisfy ``store.Generations``.

>>> generations = LocalGenerations()
>>> since = generations.sequence()
>>> stamp = generations.stamp(["product:42"], since)
>>> generations.is_current(stamp)
True
>>> generations.invalidate(["product:42"])
>>> generations.is_current(stamp), generations.stamp(["product:42"], since)
(False, None)
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from .store import TagStamp

__all__ = ["LocalGenerations"]


class LocalGenerations:
    """In-process generations: a dict of tag -> generation and a sequence counter.

    Reads (``is_current``, ``stamp``) take no lock: each reads a dict that is only ever mutated
    by single assignments, which are atomic under the GIL, and a generation only moves forward,
    so a reader sees either the old or the new value. Writers serialise on a lock.
    """

    def __init__(self) -> None:
        self._sequence = 0
        self._generations: dict[str, int] = {}
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
    def invalidate(self, tags: Iterable[str]) -> None:
        """Make every entry stamped with any of ``tags`` not current, in O(len(tags))."""
        tag_list = [tag for tag in tags if tag]
        if not tag_list:
            return
        with self._lock:
            self._sequence += 1
            for tag in tag_list:
                self._generations[tag] = self._sequence

    def apply(self, sequence: int, tags: Iterable[str]) -> bool:
        """Adopt generation ``sequence`` for ``tags`` (from another process); generations only
        move forward. Returns True if anything changed."""
        changed = False
        with self._lock:
            for tag in tags:
                if self._generations.get(tag, 0) < sequence:
                    self._generations[tag] = sequence
                    changed = True
            if sequence > self._sequence:
                self._sequence = sequence
        return changed

    def advance_to(self, sequence: int) -> None:
        """Raise the sequence number to at least ``sequence`` (after a resync)."""
        with self._lock:
            if sequence > self._sequence:
                self._sequence = sequence

    def snapshot(self) -> dict[str, int]:
        """A copy of every tag's generation (for persistence and resync)."""
        with self._lock:
            return dict(self._generations)

    # ----------------------------------------------------------------- async twins
    async def asequence(self) -> int:
        return self._sequence

    async def astamp(self, tags: Iterable[str], since: int) -> TagStamp | None:
        return self.stamp(tags, since)

    async def ainvalidate(self, tags: Iterable[str]) -> None:
        self.invalidate(tags)

    def close(self) -> None:
        """Nothing to release; present so every Generations can be closed alike."""
