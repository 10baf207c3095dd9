"""What an invalidation reached: the typed answer of ``scalekit.invalidate()`` and its kin.

``reach`` says where the invalidation is known to be recorded:

- ``"fleet"``: Redis has it, so every instance applies it (each live one within
  ``cache.invalidation.max_staleness_seconds`` at worst; an instance that cannot hear Redis for
  longer stops serving what it holds);
- ``"host"``: no Redis configured; the host's generations file has it, which every process of
  this host follows;
- ``"process"``: only this process applied it. ``queued`` says whether it is held for replay to
  the fleet once Redis answers again (it then needs nothing more from the caller).

``acknowledged`` is the read-your-writes promise: every live instance (or process of the host)
had applied it before the call returned. Those that had not within the wait are named in
``unacknowledged``; they fall under the staleness bound.

Callers that ignore the result keep working; a caller that needs the promise checks it:

>>> result = InvalidationResult(tags=("product:42",), reach="fleet", acknowledged=True)
>>> result.reached_fleet, result.acknowledged
(True, True)
>>> combine([result, InvalidationResult(tags=("product:42",), reach="process", queued=True)]).reach
'process'
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["REACHES", "URI_TAG_BUCKETS", "InvalidationResult", "Reach", "combine", "uri_tag"]

Reach = Literal["fleet", "host", "process"]
REACHES: tuple[Reach, ...] = ("process", "host", "fleet")  # narrowest first


@dataclass(frozen=True, slots=True)
class InvalidationResult:
    """How far one invalidation reached (see the module docstring)."""

    tags: tuple[str, ...]
    reach: Reach
    acknowledged: bool = False
    unacknowledged: tuple[str, ...] = ()
    queued: bool = False
    detail: str = ""
    sequence: int | None = field(default=None, compare=False)

    @property
    def reached_fleet(self) -> bool:
        """Whether every instance will apply it: Redis (or, without Redis, the host) has it,
        and nothing waits in a queue for Redis to answer."""
        return self.reach != "process" and not self.queued

    def describe(self) -> str:
        """One line for logs, the CLI and the purge endpoint."""
        where = {"fleet": "the fleet", "host": "every process of this host",
                 "process": "this process only"}[self.reach]
        if self.queued:
            where += "; queued for the fleet until Redis answers"
        text = f"invalidated {len(self.tags)} tag(s) in {where}"
        if self.reached_fleet:
            text += ("; every live instance applied it" if self.acknowledged else
                     "; not yet applied by " + (", ".join(self.unacknowledged) or "some instances"))
        return text + (f" ({self.detail})" if self.detail else "")


# URIs share this many tags (a hash of the cache key picks one), so the fleet's record of URI
# invalidations stays bounded however many URIs are written to; a write to one URI also
# invalidates the few others in its bucket (a miss there, never a stale hit).
URI_TAG_BUCKETS = 1 << 16


def uri_tag(key: str) -> str:
    """The tag every entry stored under primary cache key ``key`` carries, so that an unsafe
    method on its URI (RFC 9111 §4.4) invalidates it on every instance through the same log as
    tags. It has a space, which no header-given tag can have.

    >>> uri_tag("GET https://shop.example/p/1") == uri_tag("GET https://shop.example/p/1")
    True
    >>> uri_tag("GET https://shop.example/p/1").startswith("uri ")
    True
    """
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=4).digest()
    return f"uri {int.from_bytes(digest, 'big') % URI_TAG_BUCKETS:04x}"


def combine(results: Iterable[InvalidationResult]) -> InvalidationResult:
    """One result for several runtimes of a process: the narrowest reach, every instance named.

    With no result at all (no wrapped app has a cache here) nothing was invalidated anywhere:
    reach ``"process"``, not acknowledged.
    """
    items = list(results)
    if not items:
        return InvalidationResult(tags=(), reach="process", detail="no cache layer in this process")
    if len(items) == 1:
        return items[0]
    tags = tuple(dict.fromkeys(tag for item in items for tag in item.tags))
    reach = min((item.reach for item in items), key=REACHES.index)
    unacknowledged = tuple(dict.fromkeys(name for item in items for name in item.unacknowledged))
    details = "; ".join(dict.fromkeys(item.detail for item in items if item.detail))
    return InvalidationResult(tags=tags, reach=reach,
                              acknowledged=all(item.acknowledged for item in items),
                              unacknowledged=unacknowledged,
                              queued=any(item.queued for item in items), detail=details)
