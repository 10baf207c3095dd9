"""Queued purges and the queues that hold them: the shared shape of the Redis and local queues.

A purge is queued as one :class:`Job` per target: the target's name, the items to purge
(``t:<tag>`` and ``u:<url>``), where it came from, and two wall-clock times: when it was
queued (for the lag metric and giving up) and when it may be sent (``due_at``: after the
settle time, so every instance has dropped its own copy first and purges of the same items
made meanwhile are merged into it).

Both queues keep, per target, a set of *waiting items*: items of jobs that no consumer has
started to send yet. Queuing an item that is waiting adds nothing (the job already queued will
send it, later than now), and a consumer takes a job's items out of that set *before* it sends
them, so a purge queued while a send is under way is queued afresh and sent after it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["Job", "JobSource", "TargetStatus", "tag_items", "url_items"]


@dataclass(frozen=True, slots=True)
class Job:
    """One queued purge of ``items`` at ``target`` (``id`` is the queue's own)."""

    target: str
    id: str
    items: tuple[str, ...]
    source: str
    enqueued_at: float
    due_at: float

    @property
    def tags(self) -> list[str]:
        return [item[2:] for item in self.items if item.startswith("t:")]

    @property
    def urls(self) -> list[str]:
        return [item[2:] for item in self.items if item.startswith("u:")]


@dataclass(frozen=True, slots=True)
class TargetStatus:
    """What one queue holds for one target (``scalekit purge status``)."""

    queue: str
    target: str
    length: int = 0
    pending: int = 0
    consumers: int = 0
    oldest_age_seconds: float | None = None
    last_failure: dict[str, object] = field(default_factory=dict)


class JobSource(Protocol):
    """The consumer's side of one queue, for one target."""

    name: str

    def take(self, *, block_seconds: float, count: int) -> list[Job]:
        """New jobs for this consumer (blocking up to ``block_seconds`` where it can)."""
        ...

    def reclaim(self, *, count: int) -> list[Job]:
        """Jobs whose consumer went silent for ``reclaim_after_seconds``, now this one's."""
        ...

    def release(self, jobs: Sequence[Job]) -> None:
        """Take ``jobs``' items out of the waiting set: their send is about to start."""
        ...

    def touch(self, jobs: Sequence[Job]) -> None:
        """Say this consumer still holds ``jobs`` (so nobody reclaims them)."""
        ...

    def done(self, jobs: Sequence[Job]) -> None:
        """Remove ``jobs`` from the queue: sent, rejected for good, or given up."""
        ...

    def record_failure(self, reason: str | None, *, now: float) -> None:
        """Remember the target's last failure (None: it just succeeded)."""
        ...

    def close(self) -> None: ...


def tag_items(tags: Iterable[str]) -> list[str]:
    """Queue items for ``tags`` (deduplicated, empty ones dropped, order kept)."""
    return list(dict.fromkeys(f"t:{tag}" for tag in tags if tag))


def url_items(urls: Iterable[str]) -> list[str]:
    """Queue items for ``urls`` (deduplicated, order kept)."""
    return list(dict.fromkeys(f"u:{url}" for url in urls if url))
