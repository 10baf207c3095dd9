"""Which rows L3's file may hold, known in memory: most misses skip the SQLite lookup.

Every request that L1 cannot answer asked L3, and a lookup that finds nothing (most of them:
a URL seen for the first time, an endpoint that is never stored) cost an SQLite query, 15 µs
warm and 80-120 µs after a millisecond of the app's own work had cooled the CPU's caches
(``bench/cache_miss.py``'s disk pass). :class:`Presence` is a Bloom filter over the rows' hashes:
a key it has never seen is a miss at once; a key it may have seen is looked up as before.

It is only ever wrong in the safe direction for the rows it was shown: a false "maybe" costs
the query the lookup made anyway. Rows another process wrote reach it when the tier's writer
thread reads the rows added since its last look (every ``REFRESH_SECONDS``; ids only grow), so
for that long such a row is a miss here: one more origin call, never a wrong answer. Deleted
and evicted rows stay set until the filter is rebuilt from the file, once the rows shown to it
since its last rebuild reach its capacity or its "maybe"s are mostly wrong.

>>> presence = Presence(capacity=1000)
>>> presence.add(1234567890123)
>>> presence.may_hold(1234567890123), presence.may_hold(-42)
(True, False)
"""

from __future__ import annotations

from ...forks import pid

__all__ = ["REFRESH_SECONDS", "TRUSTED_SECONDS", "Presence"]

REFRESH_SECONDS = 0.2
TRUSTED_SECONDS = 3 * REFRESH_SECONDS
_BITS_PER_ROW = 8  # three probes: about 3 % of absent keys pass ("maybe") at capacity
_MIN_BITS, _MAX_BITS = 1 << 13, 1 << 25  # 1 KiB to 4 MiB of memory per process


class Presence:
    """A Bloom filter of signed 64-bit row hashes, sized for ``capacity`` rows."""

    __slots__ = ("_bits", "_mask", "added", "capacity", "fresh_until", "last_id", "maybe", "pid", "wrong")

    def __init__(self, capacity: int, *, last_id: int = 0) -> None:
        bits = _MIN_BITS
        while bits < capacity * _BITS_PER_ROW and bits < _MAX_BITS:
            bits <<= 1
        self._bits = bytearray(bits // 8)
        self._mask = bits - 1
        self.capacity = capacity
        self.last_id = last_id  # the largest row id shown to it from the file
        # Trusted until then (monotonic): a few refreshes after the last. A writer thread that
        # ended (idle) refreshes it no more, and a lookup then asks the file and starts one.
        self.fresh_until = 0.0
        self.pid = pid()  # a forked child loads its own: nobody refreshes the parent's there
        self.added = 0
        self.maybe = 0  # lookups it let through, and how many found nothing: when to rebuild
        self.wrong = 0

    def add(self, row_hash: int) -> None:
        """Set ``row_hash``'s bits. One thread at a time (two could each undo the other's bit in
        a shared byte): the tier adds under its writer's lock."""
        bits, mask = self._bits, self._mask
        first, step = row_hash & mask, (row_hash >> 32) | 1
        for probe in (first, (first + step) & mask, (first + 2 * step) & mask):
            bits[probe >> 3] |= 1 << (probe & 7)
        self.added += 1

    def may_hold(self, row_hash: int) -> bool:
        bits, mask = self._bits, self._mask
        first, step = row_hash & mask, (row_hash >> 32) | 1
        second, third = (first + step) & mask, (first + 2 * step) & mask
        return bool(bits[first >> 3] >> (first & 7) & 1 and bits[second >> 3] >> (second & 7) & 1
                    and bits[third >> 3] >> (third & 7) & 1)

    def looked_up(self, found: bool) -> None:
        """Count a lookup it let through (``found``: the file held the row)."""
        self.maybe += 1
        if not found:
            self.wrong += 1

    @property
    def worn(self) -> bool:
        """Whether to rebuild it: full, or most of its "maybe"s wrong (rows deleted since)."""
        return self.added >= self.capacity or (self.maybe >= 1024 and self.wrong * 2 >= self.maybe)
